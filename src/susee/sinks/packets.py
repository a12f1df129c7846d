"""aiomysql's packet layer: the one place that touches its private methods.

aiomysql speaks only the text protocol; the binary prepared statements of
``sinks.prepared`` are sent over the connection's own packet layer, two
methods that are not part of aiomysql's public API: ``_execute_command``
(send one command packet) and ``_read_packet`` (read one packet; an ERR
packet raises the driver's error). Both have been stable across the
supported versions; this module checks at import that they still exist, so a
changed aiomysql fails at start-up with a clear message, not mid-write.
"""

from __future__ import annotations

import aiomysql
from pymysql.protocol import MysqlPacket

SUPPORTED_VERSIONS = "aiomysql >= 0.2, < 0.4"  # the pin in pyproject.toml
PRIVATE_METHODS = ("_execute_command", "_read_packet")


class UnsupportedDriver(ImportError):
    """The installed aiomysql lacks the packet methods the binary protocol needs."""


def check_driver(connection_class: type = aiomysql.Connection) -> None:
    """Raise UnsupportedDriver unless ``connection_class`` has every private method used here."""
    missing = [name for name in PRIVATE_METHODS if not callable(getattr(connection_class, name, None))]
    if missing:
        raise UnsupportedDriver(
            f"susee needs {SUPPORTED_VERSIONS}: the installed aiomysql {getattr(aiomysql, '__version__', '?')} "
            f"has no {connection_class.__name__}.{', '.join(missing)} (used for binary prepared statements)"
        )


check_driver()


async def send_command(conn: aiomysql.Connection, command: int, payload: bytes) -> None:
    """Send one command packet (e.g. COM_STMT_EXECUTE with its payload)."""
    await conn._execute_command(command, payload)


async def read_packet(conn: aiomysql.Connection) -> MysqlPacket:
    """The next packet from the server; an ERR packet raises the driver's error."""
    return await conn._read_packet()
