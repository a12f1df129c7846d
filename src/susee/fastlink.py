"""A lean Modbus TCP client: the link of every bus spoken with the socket framer.

pymodbus spends 40-55 µs of CPU per request (a task, a lock, a timer and
several layers per transaction); a site of thousands of meters needs a tenth
of that. This client does only what the service asks of a Modbus TCP link:
read function codes 1-4, MBAP framing with transaction ids, one transaction
at a time per connection. The bus scheduler's turn starts the request from a
callback and the answer (or the timeout) ends it, so a request costs one
future and one wake-up of the poller; the timeout is one loop timer per link,
re-armed only when it fires before the request in flight is due.

What a read gives is what the pymodbus link gives, so the poller cannot tell
them apart:

- registers (fc 3/4) as their wire bytes (big-endian words, never passed
  through a list of ints: the decoders read these bytes), or bits as 0/1
  ints (fc 1/2, at most ``count``); fewer than asked when the device sent
  fewer (the poller makes that Code 32);
- ``ExceptionResponse(code)`` for an exception response;
- ``LinkError(timed_out=True)`` when the request went out and no answer came
  in time. An answer arriving later carries the old transaction id and is
  dropped, never handed to the next request. After ``RECONNECT_AFTER_TIMEOUTS``
  timeouts in a row the connection is dropped and the next read reconnects,
  as pymodbus does: it clears a half-open connection a NAT or a rebooted
  gateway left behind;
- ``LinkError(timed_out=False)`` for a refused or failed connect, and for a
  connection lost or closed while a request waited for its answer (pymodbus
  lets such a request run into its timeout; failing at once holds the bus for
  no timeout, like a refused connect). The next read reconnects.

Frames that do not belong to the request in flight (another transaction id,
or another unit when the request named one) are dropped and the request goes
on waiting for its own answer, as pymodbus does. A frame that is not Modbus
TCP (protocol id not 0, impossible length) desynchronises the stream: the
connection is dropped and the request fails with ``LinkError(timed_out=False)``.
An answer to the request whose PDU does not fit it (another function, a byte
count beyond the frame) is ``LinkError(timed_out=False)``; the connection stays.
"""

from __future__ import annotations

import asyncio
import logging
import struct

from susee.buses import BusScheduler
from susee.modbus import READ_FUNCTIONS, Endpoint, ExceptionResponse, LinkError

log = logging.getLogger(__name__)

# Connection attempts in flight across a pool: enough to open 500 gateways in
# a few round trips, few enough that a start-up (or every link reconnecting
# after a network outage) is no SYN storm for the switches, the gateways or
# our own listen backlogs. Attempts beyond it wait for a slot, inside their
# connect timeout.
MAX_CONNECTS_IN_FLIGHT = 64
# Connects started ahead of the first tick give up after this long; a read
# that finds one still running waits for it at most its own timeout.
CONNECT_AHEAD_TIMEOUT_S = 5.0
# pymodbus (retries=0) drops the connection at the fifth timeout in a row.
RECONNECT_AFTER_TIMEOUTS = 5
# Loop timers may fire up to a millisecond early (uvloop counts in ms): a
# request this close to its deadline has timed out.
TIMER_SLACK_S = 0.001

MBAP = struct.Struct(">HHHBB")  # transaction, protocol (0), length, unit, function
READ_REQUEST = struct.Struct(">HHHBBHH")  # MBAP (length 6) + function, address, count
FRAME_MIN = MBAP.size  # header and function code: enough to know a frame's length
LENGTH_MIN, LENGTH_MAX = 2, 254  # MBAP length: unit + PDU of 1..253 bytes
HEAD_BYTES = 6  # the MBAP bytes before the ones counted by its length field
DATA_AT = 9  # offset of the first data byte in a read response (after the byte count)


class _Connection(asyncio.Protocol):
    """One TCP connection of a link; hands everything to the link, which ignores stale ones."""

    __slots__ = ("link", "transport")

    def __init__(self, link: FastTcpLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.link._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._lost(self, exc)


class FastTcpLink:
    """Modbus TCP (socket framer) to one host and port, shared by the devices behind it."""

    def __init__(
        self, endpoint: Endpoint, inter_request_delay_s: float = 0.0, connect_slots: asyncio.Semaphore | None = None
    ) -> None:
        if endpoint.framer != "socket":
            raise ValueError(f"{endpoint}: the lean client speaks the socket framer only")
        self.endpoint = endpoint
        self.bus = BusScheduler(str(endpoint), inter_request_delay_s)
        self._connect_slots = connect_slots  # shared by a pool's links; None: not bounded
        self._conn: _Connection | None = None
        self._buffer = b""
        self._tid = 0  # transaction id of the last request sent (1..65535)
        self._pending: asyncio.Future | None = None  # the request in flight
        self._pending_request: tuple = ()  # its (unit, function, address, count, timeout_s, failures)
        self._deadline = 0.0  # loop time by which it must be answered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._timeouts_in_row = 0
        # Failed connects so far: a request that finds this grown since it was
        # queued fails at once instead of waiting for another connect timeout.
        self._connect_failures = 0
        self._opening: asyncio.Task | None = None  # the connect attempt in flight
        self._connected_before = False  # a connect now is a reconnect: logged at INFO
        self._tasks: set[asyncio.Task] = set()  # reads waiting for a connect
        self._closed = False
        self._grant = self._start  # bound once: the bus calls it for every request

    def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> asyncio.Future[bytes | list[int]]:
        """Read ``count`` registers (or bits); await the result: registers' bytes, or bits as ints.

        Raises (from the await) LinkError or ExceptionResponse. The list may
        be shorter than ``count`` if the device sent less; the caller judges
        that. The request is queued on the bus when read() is called.
        """
        if function not in READ_FUNCTIONS:
            raise ValueError(f"function {function} is not a read")
        waiter = asyncio.get_running_loop().create_future()
        request = (unit, function, address, count, timeout_s, self._connect_failures)
        self.bus.submit(unit, waiter, self._grant, request)
        return waiter

    def open_ahead(self, timeout_s: float = CONNECT_AHEAD_TIMEOUT_S) -> asyncio.Task | None:
        """Start connecting in the background, unless connected or connecting; return the attempt started."""
        if self._conn is None and self._opening is None and not self._closed:
            return self._open(timeout_s)
        return None

    def close(self) -> None:
        """Close the connection; requests still queued or in flight fail with LinkError."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        for task in (*self._tasks, *([self._opening] if self._opening else [])):
            task.cancel()
        self._drop_connection()
        self._fail_pending(LinkError(f"{self.endpoint}: link closed"))

    # -- a turn on the bus: send, then wait for the answer or the deadline ------

    def _start(self, waiter: asyncio.Future, request: tuple) -> None:
        """The bus is this request's (a BusScheduler grant): send it, or connect first."""
        conn = self._conn
        if conn is not None and not conn.transport.is_closing():
            self._send(conn, waiter, request)
        elif self._closed:
            self._end_unsent(waiter, LinkError(f"{self.endpoint}: link closed"))
        elif request[5] != self._connect_failures:
            self._end_unsent(waiter, LinkError(f"cannot connect to {self.endpoint} (failed while this request waited)"))
        else:
            task = asyncio.get_running_loop().create_task(self._connect_and_send(waiter, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _send(self, conn: _Connection, waiter: asyncio.Future, request: tuple) -> None:
        unit, function, address, count, timeout_s, _ = request
        tid = self._tid = self._tid % 0xFFFF + 1
        conn.transport.write(READ_REQUEST.pack(tid, 0, 6, unit, function, address, count))
        self._pending = waiter
        self._pending_request = request
        loop = asyncio.get_running_loop()
        deadline = self._deadline = loop.time() + timeout_s
        if deadline < self._timer_at:  # no timer yet, or one that would fire too late
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(deadline, self._expire)
            self._timer_at = deadline

    def _expire(self) -> None:
        """The link's timer: time out the request in flight if it is due, else wait for it."""
        self._timer, self._timer_at = None, float("inf")
        waiter = self._pending
        if waiter is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() + TIMER_SLACK_S < self._deadline:  # armed for an earlier request
            self._timer = loop.call_at(self._deadline, self._expire)
            self._timer_at = self._deadline
            return
        timeout_s = self._pending_request[4]
        self._timeouts_in_row += 1
        if self._timeouts_in_row >= RECONNECT_AFTER_TIMEOUTS:
            log.info("%s: no answer to %d requests in a row, reconnecting", self.endpoint, self._timeouts_in_row)
            self._drop_connection()
        self._finish(LinkError(f"no answer within {timeout_s:g} s", timed_out=True))

    def _finish(self, outcome: bytes | list[int] | Exception) -> None:
        """End the turn of the request in flight with ``outcome``."""
        waiter = self._pending
        self._pending = None
        if not waiter.done():  # its reader may have been cancelled
            if isinstance(outcome, Exception):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        self.bus.release()

    def _fail_pending(self, error: LinkError) -> None:
        if self._pending is not None:
            self._finish(error)

    # -- the connection's callbacks ------------------------------------------------

    def _received(self, conn: _Connection, data: bytes) -> None:
        if conn is not self._conn:
            return  # a connection this link has dropped
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        pos = 0
        while size - pos >= FRAME_MIN:
            tid, protocol, length, unit, function = MBAP.unpack_from(buffer, pos)
            if protocol or not LENGTH_MIN <= length <= LENGTH_MAX:
                self._drop_connection()
                self._fail_pending(LinkError(f"{self.endpoint}: not Modbus TCP (protocol {protocol}, length {length})"))
                return
            end = pos + HEAD_BYTES + length
            if end > size:
                break
            request = self._pending_request
            if self._pending is not None and tid == self._tid and (unit == request[0] or not request[0]):
                self._finish(self._decode(buffer, pos, end, function, request))
            else:
                log.debug("%s: dropped a frame of transaction %d, unit %d (late or stray)", self.endpoint, tid, unit)
            pos = end
        self._buffer = buffer[pos:] if pos < size else b""

    def _decode(self, buffer: bytes, pos: int, end: int, function: int, request: tuple) -> bytes | list[int] | Exception:
        """The answer to ``request`` in ``buffer[pos:end]``: values or the exception to raise."""
        self._timeouts_in_row = 0
        asked = request[1]
        if end - pos >= DATA_AT:
            if function == asked:
                byte_count = buffer[pos + DATA_AT - 1]
                if byte_count <= end - pos - DATA_AT:
                    if asked >= 3:  # the registers' own bytes, whole words only
                        return buffer[pos + DATA_AT : pos + DATA_AT + (byte_count & ~1)]
                    # As pymodbus: every data byte of the frame, least significant bit first.
                    bits = [(byte >> i) & 1 for byte in buffer[pos + DATA_AT : end] for i in range(8)]
                    return bits[: request[3]]
            elif function == asked | 0x80:
                return ExceptionResponse(buffer[pos + DATA_AT - 1])
        return LinkError(f"{self.endpoint}: malformed answer (function {function}, {end - pos} bytes) to fc {asked}")

    def _lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._buffer = b""
        log.info("%s: connection lost%s", self.endpoint, f" ({exc})" if exc else "")
        self._fail_pending(LinkError(f"{self.endpoint}: connection lost"))

    def _drop_connection(self) -> None:
        conn, self._conn, self._buffer = self._conn, None, b""
        if conn is not None:
            conn.transport.abort()  # nothing of it, late answers included, reaches the link

    # -- connecting ------------------------------------------------------------------

    async def _connect_and_send(self, waiter: asyncio.Future, request: tuple) -> None:
        """Connect (or join the attempt in flight), then send: a turn that found no connection."""
        try:
            conn = await self._connection(request[4])
        except asyncio.CancelledError:  # the link is closing
            self._end_unsent(waiter, LinkError(f"{self.endpoint}: link closed"))
            raise
        except LinkError as exc:
            self._end_unsent(waiter, exc)
            return
        if conn.transport.is_closing():
            self._end_unsent(waiter, LinkError(f"{self.endpoint}: connection closed by the peer at once"))
        elif waiter.done():  # its reader was cancelled meanwhile
            self.bus.release()
        else:
            self._send(conn, waiter, request)

    def _end_unsent(self, waiter: asyncio.Future, error: LinkError) -> None:
        """End a turn whose request never went out."""
        if not waiter.done():
            waiter.set_exception(error)
        self.bus.release()

    async def _connection(self, timeout_s: float) -> _Connection:
        """An open connection within ``timeout_s``, joining a connect already in flight."""
        opening = self._opening or self._open(timeout_s)
        try:
            return await asyncio.wait_for(asyncio.shield(opening), timeout_s)
        except asyncio.TimeoutError:
            self._connect_failures += 1
            raise LinkError(f"cannot connect to {self.endpoint} within {timeout_s:g} s") from None

    def _open(self, timeout_s: float) -> asyncio.Task:
        opening = self._opening = asyncio.get_running_loop().create_task(self._connect(timeout_s))
        opening.add_done_callback(self._opened)
        return opening

    def _opened(self, opening: asyncio.Task) -> None:
        if self._opening is opening:
            self._opening = None
        if not opening.cancelled():
            opening.exception()  # whoever waited got it; a connect ahead has nobody to tell

    async def _connect(self, timeout_s: float) -> _Connection:
        conn = _Connection(self)
        try:
            await asyncio.wait_for(self._create_connection(conn), timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            if conn.transport is not None:  # connected just as the timeout struck
                conn.transport.abort()
            self._connect_failures += 1
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else exc.strerror or str(exc)
            raise LinkError(f"cannot connect to {self.endpoint}: {reason}") from exc
        if self._closed:  # closed while connecting
            conn.transport.abort()
            raise LinkError(f"{self.endpoint}: link closed")
        self._conn, self._buffer, self._timeouts_in_row = conn, b"", 0
        self._log_connected()
        return conn

    def _log_connected(self) -> None:
        """A first connect at the first attempt is DEBUG: at start-up the pool sums them up in one line.

        A reconnect, or a connect after failed attempts, is rare and tells
        that a bus came back: INFO.
        """
        if self._connected_before:
            log.info("reconnected to %s", self.endpoint)
        elif self._connect_failures:
            log.info("connected to %s after %d failed attempt(s)", self.endpoint, self._connect_failures)
        else:
            log.debug("connected to %s", self.endpoint)
        self._connected_before = True

    async def _create_connection(self, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.endpoint.host, self.endpoint.port
        if self._connect_slots is None:
            await loop.create_connection(lambda: conn, host, port)
            return
        async with self._connect_slots:
            await loop.create_connection(lambda: conn, host, port)
