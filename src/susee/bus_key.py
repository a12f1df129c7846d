"""The one key that says which devices share a connection (a bus).

Devices with equal keys share one link, one turn-taking scheduler and one
worker process, and must agree on the bus's framing. Config validation
(``DeviceSettings.bus``), planning (``workers``) and the link pool
(``Endpoint.bus``) all take the key from here. It is readable on purpose:
it names the bus in error messages.

A module of its own, below both ``config`` and ``links``: the links must
not import the settings, and the settings must not import the links.
"""

from __future__ import annotations

BusKey = str


def tcp_bus(host: str, port: int) -> BusKey:
    """The bus of a TCP endpoint, whatever its framer: one connection per host and port."""
    return f"host:port {host}:{port}"


def serial_bus(port: str) -> BusKey:
    """The bus of a serial port: one RS485 line."""
    return f"serial port {port}"
