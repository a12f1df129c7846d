"""One link per bus, shared by the devices on it; bounded connects; the open-files limit.

A bus is what one connection reaches (see ``susee.links``). Devices on one
bus share its link, whose ``scheduler`` keeps one transaction at a time on
it, in a fair order, with the configured silence in between. Only read
function codes are ever sent. Modbus TCP with the socket framer, the common
case and the hot path of a large site, goes through the lean client of
``links.tcp``; RTU frames over TCP and serial lines through its RTU
variants (``links.rtulink``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from functools import partial

from susee.bus_key import BusKey
from susee.links import Endpoint, Link, SerialEndpoint
from susee.links.rtulink import RtuLink, SerialLink
from susee.links.tcp import MAX_CONNECTS_IN_FLIGHT, FastTcpLink
from susee.shown import first_few

log = logging.getLogger(__name__)

# Descriptors the process needs besides one per bus: database connections,
# the spool's files, logging, the interpreter's own.
SPARE_DESCRIPTORS = 64


class LinkPool:
    """Hands out one shared link per bus and closes them all at the end.

    Connection attempts of the pool's lean TCP links are bounded: at most
    ``max_connects`` are in flight at once, so a site of hundreds of gateways
    does not open them all in the same millisecond.
    """

    def __init__(self, max_connects: int = MAX_CONNECTS_IN_FLIGHT) -> None:
        self._links: dict[BusKey, Link] = {}
        self._connect_slots = asyncio.Semaphore(max_connects)
        self._connects_ahead: ConnectsAhead | None = None

    def link_for(self, endpoint: Endpoint | SerialEndpoint, inter_request_delay_s: float = 0.0) -> Link:
        """The link of ``endpoint``'s bus; its inter-request delay is the largest asked for."""
        link = self._links.get(endpoint.bus)
        if link is None:
            if isinstance(endpoint, SerialEndpoint):
                link = SerialLink(endpoint, inter_request_delay_s)
            elif endpoint.framer == "socket":
                link = FastTcpLink(endpoint, inter_request_delay_s, self._connect_slots)
            else:
                link = RtuLink(endpoint, inter_request_delay_s, self._connect_slots)
            self._links[endpoint.bus] = link
            return link
        if link.endpoint != endpoint:
            # Settings validation rejects this; a programming error if it happens.
            raise ValueError(f"bus {link.endpoint} is also asked for as {endpoint}")
        if inter_request_delay_s != link.scheduler.inter_request_delay_s:
            largest = max(inter_request_delay_s, link.scheduler.inter_request_delay_s)
            log.info(
                "bus %s: devices ask for inter_request_delay %g s and %g s; the bus keeps the largest",
                endpoint, link.scheduler.inter_request_delay_s, inter_request_delay_s,
            )
            link.scheduler.inter_request_delay_s = largest
        return link

    def open_all(self) -> None:
        """At start-up: make room for one descriptor per bus, start connecting the TCP links.

        The connects run in the background, ``max_connects`` at a time, so
        that the first tick finds its connections open; a read that comes
        while its link is still connecting waits for that attempt. When the
        last of them has ended, one line tells how many succeeded.
        """
        raise_open_files_limit(len(self._links))
        opening = []
        for link in self._links.values():
            if isinstance(link, FastTcpLink):
                attempt = link.open_ahead()
                if attempt is not None:
                    opening.append((link, attempt))
        if opening:
            self._connects_ahead = ConnectsAhead(opening)

    @property
    def links(self) -> Iterable[Link]:
        return self._links.values()

    def __len__(self) -> int:
        return len(self._links)

    def close(self) -> None:
        if self._connects_ahead is not None:
            self._connects_ahead.closed = True  # connects cancelled now are no news
        for link in self._links.values():
            link.close()
        self._links.clear()


class ConnectsAhead:
    """One line for the connects ``LinkPool.open_all`` started, once the last of them has ended.

    A site of 500 gateways would otherwise write 500 "connected" lines at
    start-up. The links log their own first connect at DEBUG only. Failures
    are named (the first few, see ``susee.shown``): nothing else tells of them above
    DEBUG until the data shows Code 1.
    """

    def __init__(self, opening: list[tuple[FastTcpLink, asyncio.Task]]) -> None:
        self.started_s = asyncio.get_running_loop().time()
        self.buses = self.waiting = len(opening)
        self.failures: list[str] = []  # "host:port (reason)", in the order they ended
        self.closed = False  # the pool closed before the last ended: say nothing
        for link, attempt in opening:
            attempt.add_done_callback(partial(self._ended, link))

    def _ended(self, link: FastTcpLink, attempt: asyncio.Task) -> None:
        if self.closed:
            return
        if attempt.cancelled():
            self.failures.append(f"{link.endpoint} (cancelled)")
        elif (exc := attempt.exception()) is not None:
            self.failures.append(f"{link.endpoint} ({_reason(link, exc)})")
        self.waiting -= 1
        if not self.waiting:
            self._log()

    def _log(self) -> None:
        elapsed_s = asyncio.get_running_loop().time() - self.started_s
        connected = self.buses - len(self.failures)
        if not self.failures:
            log.info(
                "connected to %d of %d bus(es) ahead of the first tick in %.1f s", connected, self.buses, elapsed_s,
            )
            return
        log.warning(
            "connected to %d of %d bus(es) ahead of the first tick in %.1f s; %d failed: %s",
            connected, self.buses, elapsed_s, len(self.failures), first_few(self.failures),
        )


def _reason(link: FastTcpLink, exc: BaseException) -> str:
    """Why a connect failed, without the endpoint its message repeats.

    asyncio words a refused connect "Connect call failed ('10.0.0.7', 502)";
    the errno's own text ("Connection refused") says it in fewer words.
    """
    cause = exc.__cause__
    if isinstance(cause, OSError) and cause.errno:
        return os.strerror(cause.errno)
    text = str(exc)
    return text.removeprefix(f"cannot connect to {link.endpoint}: ").removeprefix(f"{link.endpoint}: ")


def raise_open_files_limit(buses: int) -> None:
    """Raise the soft RLIMIT_NOFILE toward the hard limit so every bus gets its descriptor.

    Logs a warning when even the hard limit leaves too few: links beyond it
    fail with "Too many open files" (Code 1) until the limit is raised.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    needed = buses + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    else:
        log.info("open-files limit raised from %d to %d for %d buses", soft, target, buses)
        soft = target
    if soft < needed:
        log.warning(
            "open-files limit %d is below the %d descriptors that %d buses need (one each, plus %d): "
            "raise the hard limit (ulimit -n, systemd LimitNOFILE=)",
            soft, needed, buses, SPARE_DESCRIPTORS,
        )
