"""A lean Modbus TCP client: the link of every bus spoken with the socket framer.

pymodbus spends 40-55 µs of CPU per request (a task, a lock, a timer and
several layers per transaction); a site of thousands of meters needs a tenth
of that. This client does only what the service asks of a Modbus TCP link:
read function codes 1-4, MBAP framing with transaction ids, one transaction
at a time per connection. The bus scheduler's grant sends a request from a
callback and its answer ends the turn, queueing the device's next read of
the tick (``read_many``, see ``susee.links``), so a device-tick costs one future
and one wake-up of the poller however many requests it takes; the timeout
is one loop timer per link, re-armed only when it fires before the request
in flight is due.

What a read gives is the same on every link (the RTU links of
``links.rtulink`` are this class with RTU framing), so the poller cannot
tell them apart:

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
  connection lost or closed while a request waited for its answer (failing at
  once holds the bus for no timeout, like a refused connect). The next read
  reconnects. A connection closed before a byte of the answer came (a gateway
  closing an idle connection as the request goes out) first gets the read
  sent once more on a fresh connection, within the read's first deadline.

A ``LinkError`` ends the device's tick: its later reads are not sent. Each
answer is stamped with the wall-clock time it arrived. The framing is
``links.mbap``'s; this class only moves bytes and keeps the timers.

Frames that do not belong to the request in flight (another transaction id,
or another unit when the request named one) are dropped and the request goes
on waiting for its own answer, as pymodbus does; a frame with transaction id
0 is its answer if it fits it exactly (see ``mbap.answer_to``). Bytes that
arrive while no request is in flight, or after the answer in the same
segment (before the next request went out), belong to nobody and are
dropped. A frame that is not Modbus
TCP (protocol id not 0, impossible length) desynchronises the stream: the
connection is dropped and the request fails with ``LinkError(timed_out=False)``.
An answer to the request whose PDU does not fit it (another function, a byte
count beyond the frame) is ``LinkError(timed_out=False)``; the connection stays.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from susee.links import Answer, Endpoint, LinkError, Read, check_reads, unsent_answers
from susee.links.bus import BusScheduler
from susee.links.mbap import (
    HEAD_BYTES,
    HEADER,
    HEADER_SIZE,
    LENGTH_MAX,
    LENGTH_MIN,
    READ_LENGTH,
    READ_REQUEST,
    MalformedAnswer,
    answer_to,
    not_modbus_tcp,
)
from susee.sample import fast_tuple

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


class _Reads:
    """A device's reads of a tick: each one a turn on the bus, the next queued when one is answered."""

    __slots__ = ("unit", "reads", "timeout_s", "connect_failures", "answers", "single", "retried")

    def __init__(self, unit: int, reads: Sequence[Read], timeout_s: float, connect_failures: int, single: bool) -> None:
        self.unit = unit
        self.reads = reads
        self.timeout_s = timeout_s
        self.connect_failures = connect_failures  # the link's count when the next read was queued
        self.answers: list[Answer] = []
        self.single = single  # read(): the waiter gets the outcome itself, not a list of answers
        self.retried = -1  # index of the read sent again after the peer closed the connection

    @property
    def next_read(self) -> Read:
        return self.reads[len(self.answers)]


class FastTcpLink:
    """Modbus TCP (socket framer) to one host and port, shared by the devices behind it.

    The RTU links (``links.rtulink``) are subclasses that change the framing
    only: ``_check_endpoint``, ``_send`` and ``_received``; turns, timers,
    connects and retries stay this class's.
    """

    def __init__(
        self, endpoint: Endpoint, inter_request_delay_s: float = 0.0, connect_slots: asyncio.Semaphore | None = None
    ) -> None:
        self._check_endpoint(endpoint)
        self.endpoint = endpoint
        self.scheduler = BusScheduler(str(endpoint), inter_request_delay_s)
        self._connect_slots = connect_slots  # shared by a pool's links; None: not bounded
        self._loop: asyncio.AbstractEventLoop | None = None  # bound at the first read
        self._conn: _Connection | None = None
        self._buffer = b""
        self._tid = 0  # transaction id of the last request sent (1..65535)
        self._turn: _Reads | None = None  # the reads whose turn holds the bus
        self._waiter: asyncio.Future | None = None  # their waiter
        self._sent = False  # the turn's request is on the wire, waiting for its answer
        self._deadline = 0.0  # loop time by which it must be answered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._timeouts_in_row = 0
        # Failed connects so far: a request that finds this grown since it was
        # queued fails at once instead of waiting for another connect timeout.
        self._connect_failures = 0
        self._opening: asyncio.Task | None = None  # the connect attempt in flight
        self._connected_before = False  # a connect now is a reconnect: logged at INFO
        self._tasks: set[asyncio.Task] = set()  # turns waiting for a connect
        self._closed = False
        self._grant = self._start  # bound once: the bus calls it for every turn

    @staticmethod
    def _check_endpoint(endpoint: Endpoint) -> None:
        if endpoint.framer != "socket":
            raise ValueError(f"{endpoint}: the lean client speaks the socket framer only")

    def read_many(self, unit: int, reads: Sequence[Read], timeout_s: float) -> asyncio.Future[list[Answer]]:
        """One device's reads of a tick; await one Answer per read (see ``susee.links``).

        The first read is queued on the bus when read_many() is called.
        """
        return self._queue(unit, reads, timeout_s, single=False)

    def read(self, unit: int, function: int, address: int, count: int, timeout_s: float) -> asyncio.Future[bytes | list[int]]:
        """Read ``count`` registers (or bits); await the result: registers' bytes, or bits as ints.

        Raises (from the await) LinkError or ExceptionResponse. The result may
        be shorter than ``count`` if the device sent less; the caller judges
        that. The request is queued on the bus when read() is called.
        """
        return self._queue(unit, (Read(function, address, count),), timeout_s, single=True)

    def _queue(self, unit: int, reads: Sequence[Read], timeout_s: float, single: bool) -> asyncio.Future:
        check_reads(reads)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.scheduler.submit(unit, waiter, self._grant, _Reads(unit, reads, timeout_s, self._connect_failures, single))
        return waiter

    def open_ahead(self, timeout_s: float = CONNECT_AHEAD_TIMEOUT_S) -> asyncio.Task | None:
        """Start connecting in the background, unless connected or connecting; return the attempt started."""
        if self._conn is None and self._opening is None and not self._closed:
            return self._open(timeout_s)
        return None

    def close(self) -> None:
        """Close the connection; turns still queued or in flight fail with LinkError."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        for task in (*self._tasks, *([self._opening] if self._opening else [])):
            task.cancel()
        self._drop_connection()
        self._fail_turn(LinkError(f"{self.endpoint}: link closed"))

    # -- a turn on the bus: a read sent, then its answer or its deadline awaited -----

    def _start(self, waiter: asyncio.Future, turn: _Reads) -> None:
        """The bus is this read's (a BusScheduler grant): send it, or connect first."""
        self._turn, self._waiter = turn, waiter
        conn = self._conn
        if conn is not None and not conn.transport.is_closing():
            self._send(conn)
        elif self._closed:
            self._fail_turn(LinkError(f"{self.endpoint}: link closed"))
        elif turn.connect_failures != self._connect_failures:
            self._fail_turn(LinkError(f"cannot connect to {self.endpoint} (failed while this request waited)"))
        else:
            task = self._loop.create_task(self._connect_and_send(turn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _send(self, conn: _Connection, deadline: float = 0.0) -> None:
        """Send the turn's read and arm the deadline for its answer (a resent read keeps its own)."""
        turn = self._turn
        function, address, count = turn.next_read
        tid = self._tid = self._tid % 0xFFFF + 1
        # mbap.encode_read, without a Python call of its own: this runs for every request.
        conn.transport.write(READ_REQUEST.pack(tid, 0, READ_LENGTH, turn.unit, function, address, count))
        self._sent = True
        # _arm_deadline(deadline), inlined: this runs for every request.
        deadline = self._deadline = deadline or self._loop.time() + turn.timeout_s
        if deadline < self._timer_at:  # no timer yet, or one that would fire too late
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)
            self._timer_at = deadline

    def _arm_deadline(self, deadline: float = 0.0) -> None:
        """The turn's request went out: its answer is due by ``deadline`` (0: its timeout from now)."""
        deadline = self._deadline = deadline or self._loop.time() + self._turn.timeout_s
        if deadline < self._timer_at:  # no timer yet, or one that would fire too late
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._expire)
            self._timer_at = deadline

    def _expire(self) -> None:
        """The link's timer: time out the request on the wire if it is due, else wait for it."""
        self._timer, self._timer_at = None, float("inf")
        if not self._sent:
            return
        loop = self._loop
        if loop.time() + TIMER_SLACK_S < self._deadline:  # armed for an earlier request
            self._timer = loop.call_at(self._deadline, self._expire)
            self._timer_at = self._deadline
            return
        timeout_s = self._turn.timeout_s
        self._timeouts_in_row += 1
        if self._timeouts_in_row >= RECONNECT_AFTER_TIMEOUTS:
            log.info("%s: no answer to %d requests in a row, reconnecting", self.endpoint, self._timeouts_in_row)
            self._drop_connection()
        self._answered(LinkError(f"no answer within {timeout_s:g} s", timed_out=True))

    def _answered(self, outcome: bytes | list[int] | Exception) -> None:
        """The turn's read ended with ``outcome`` (answered, failed, or not sent): end the turn."""
        turn = self._turn
        answers = turn.answers
        received_s = time.time()
        answers.append(fast_tuple(Answer, (outcome, received_s)))  # every answer: built in C
        left = len(turn.reads) - len(answers)
        if left and isinstance(outcome, LinkError):
            answers += unsent_answers(outcome, received_s, left)
        self._end_turn()

    def _end_turn(self) -> None:
        """Queue the device's next read, or hand its answers to the waiter; then the bus to the next turn."""
        turn, waiter = self._turn, self._waiter
        self._turn = self._waiter = None
        self._sent = False
        if waiter.done():  # its reader was cancelled: nothing more to read or tell
            pass
        elif len(turn.answers) < len(turn.reads):
            # Queued before the release, so the bus does not go idle (and gather) in between.
            turn.connect_failures = self._connect_failures
            self.scheduler.submit(turn.unit, waiter, self._grant, turn)
        elif not turn.single:
            waiter.set_result(turn.answers)
        else:
            outcome = turn.answers[0][0]
            if isinstance(outcome, Exception):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        self.scheduler.release()

    def _fail_turn(self, error: LinkError) -> None:
        """End the turn holding the bus, if any, with ``error`` for its read and the device's later ones."""
        if self._turn is not None:
            self._answered(error)

    # -- the connection's callbacks ------------------------------------------------

    def _unanswered_bytes(self, conn: _Connection, data: bytes) -> bytes | None:
        """What may hold the outstanding request's answer: the bytes kept so far plus ``data``.

        None for bytes of a connection this link dropped, or bytes that came
        while no request was outstanding: they answer nobody, never the next request.
        """
        if conn is not self._conn:
            return None
        if not self._sent:
            log.debug("%s: dropped %d byte(s) that came while no request was outstanding", self.endpoint, len(data))
            self._buffer = b""
            return None
        return self._buffer + data if self._buffer else data

    def _received(self, conn: _Connection, data: bytes) -> None:
        buffer = self._unanswered_bytes(conn, data)
        if buffer is None:
            return
        size = len(buffer)
        pos = 0
        while size - pos >= HEADER_SIZE:
            tid, protocol, length, unit, function = HEADER.unpack_from(buffer, pos)
            if protocol or not LENGTH_MIN <= length <= LENGTH_MAX:  # mbap.not_modbus_tcp, inlined for every frame
                self._drop_connection()
                self._fail_turn(LinkError(f"{self.endpoint}: {not_modbus_tcp(protocol, length)}"))
                return
            end = pos + HEAD_BYTES + length
            if end > size:
                break
            outcome = None
            if self._sent:
                turn = self._turn
                try:  # the read's data, the exception it ended with, or None: not its answer
                    outcome = answer_to(turn.next_read, self._tid, turn.unit, buffer, pos, end, tid, unit, function)
                except MalformedAnswer as exc:
                    outcome = LinkError(f"{self.endpoint}: {exc}")
            if outcome is None:
                log.debug("%s: dropped a frame of transaction %d, unit %d (late or stray)", self.endpoint, tid, unit)
            else:
                self._timeouts_in_row = 0
                self._answered(outcome)
                if end < size:  # came with the answer, before any next request was sent: nobody's
                    log.debug("%s: dropped %d byte(s) that came after the answer", self.endpoint, size - end)
                self._buffer = b""
                return
            pos = end
        self._buffer = buffer[pos:] if pos < size else b""

    def _lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        nothing_heard = self._sent and not self._buffer  # not one byte of the answer came
        self._buffer = b""
        log.info("%s: connection lost%s", self.endpoint, f" ({exc})" if exc else "")
        turn = self._turn
        if nothing_heard and turn.retried != len(turn.answers) and not self._closed:
            # A gateway that closes idle connections may close one just as a request
            # goes out: send it again on a fresh connection, once, before its deadline
            # (a read may be repeated).
            turn.retried = len(turn.answers)
            self._sent = False
            task = self._loop.create_task(self._connect_and_send(turn, self._deadline))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._fail_turn(LinkError(f"{self.endpoint}: connection lost"))

    def _drop_connection(self) -> None:
        conn, self._conn, self._buffer = self._conn, None, b""
        if conn is not None:
            conn.transport.abort()  # nothing of it, late answers included, reaches the link

    # -- connecting ------------------------------------------------------------------

    async def _connect_and_send(self, turn: _Reads, deadline: float = 0.0) -> None:
        """Connect (or join the attempt in flight), then send: a turn that found no connection.

        ``deadline``: a read sent again after its connection closed keeps the
        loop time by which it had to be answered, connect included.
        """
        timeout_s = turn.timeout_s if not deadline else deadline - self._loop.time()
        if timeout_s <= 0:
            self._fail_turn(LinkError(f"{self.endpoint}: connection lost"))
            return
        try:
            conn = await self._connection(timeout_s)
        except asyncio.CancelledError:  # the link is closing (close() has failed the turn)
            raise
        except LinkError as exc:
            self._fail_turn(exc)
            return
        if self._turn is not turn:  # failed meanwhile
            return
        if conn.transport.is_closing():
            self._fail_turn(LinkError(f"{self.endpoint}: connection closed by the peer at once"))
        elif self._waiter.done():  # its reader was cancelled meanwhile
            self._end_turn()
        else:
            self._send(conn, deadline)

    async def _connection(self, timeout_s: float) -> _Connection:
        """An open connection within ``timeout_s``, joining a connect already in flight."""
        opening = self._opening or self._open(timeout_s)
        try:
            return await asyncio.wait_for(asyncio.shield(opening), timeout_s)
        except asyncio.TimeoutError:
            self._connect_failures += 1
            raise LinkError(f"cannot connect to {self.endpoint} within {timeout_s:g} s") from None

    def _open(self, timeout_s: float) -> asyncio.Task:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        opening = self._opening = self._loop.create_task(self._connect(timeout_s))
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
