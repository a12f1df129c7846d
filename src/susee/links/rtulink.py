"""The RTU links: Modbus RTU frames over TCP, and on serial lines.

Everything but the framing is the lean Modbus TCP client's (``links.tcp``):
turns on the bus from the scheduler's grant, one timer per link, bounded
(re)connects, a read sent once more when its connection closes before a byte
of its answer came, the connection dropped after ``RECONNECT_AFTER_TIMEOUTS``
timeouts in a row. So the same fault ends the same way, and gives the same
Code, on every transport. The framing is ``links.rtu``'s: this class only
moves bytes and keeps the timers.

RTU has no transaction id: the answer of the read outstanding is the first
frame with a good CRC from its unit (a frame of another unit is dropped and
the read waits on). Bytes that come while no read is outstanding, bytes
before the answer that can begin none, and bytes after the answer belong to
nobody and are dropped; so is whatever is left when the next request goes
out. A good frame is taken as soon as its CRC is; a frame whose byte count
disagrees with its data waits for the line to be quiet (``QUIET_S``) and is
then judged as Modbus TCP judges it: fewer registers (Code 32) when the
byte count is below the data, a malformed answer (Code 1) when beyond.

``SerialLink`` is the same link on a serial port (``links.serialport``): the
port is opened where a TCP link connects, and reopened where it reconnects.
"""

from __future__ import annotations

import asyncio
import logging

from susee.links import Endpoint, LinkError, MalformedAnswer, SerialEndpoint
from susee.links.rtu import NeedMore, encode_read, parse
from susee.links.serialport import open_serial
from susee.links.tcp import FastTcpLink, _Connection

log = logging.getLogger(__name__)

# A frame whose byte count disagrees with its data is taken once no byte has
# come for this long. Modbus RTU's silence is 3.5 characters (4 ms at 9600
# baud), but the program does not see the wire: a USB serial adapter hands
# bytes over in chunks up to its latency timer (16 ms by default on FTDI),
# a TCP gateway forwards a frame in several segments. Only faulty frames wait
# for the quiet (a good frame is taken when its CRC is good), so waiting
# longer than the wire's silence costs a healthy bus nothing.
QUIET_S = 0.02
BITS_PER_CHARACTER = 11  # start, 8 data, parity (or a second stop bit), stop


class RtuLink(FastTcpLink):
    """Modbus RTU frames over TCP to one host and port (a serial server, a gateway in RTU mode)."""

    quiet_s = QUIET_S

    def __init__(
        self,
        endpoint: Endpoint | SerialEndpoint,
        inter_request_delay_s: float = 0.0,
        connect_slots: asyncio.Semaphore | None = None,
    ) -> None:
        super().__init__(endpoint, inter_request_delay_s, connect_slots)  # type: ignore[arg-type]
        self._quiet: asyncio.TimerHandle | None = None  # fires when the line has been quiet for quiet_s

    @staticmethod
    def _check_endpoint(endpoint: Endpoint | SerialEndpoint) -> None:
        if not isinstance(endpoint, Endpoint) or endpoint.framer != "rtu":
            raise ValueError(f"{endpoint}: an RTU link over TCP speaks the rtu framer only")

    def _send(self, conn: _Connection, deadline: float = 0.0) -> None:
        """Send the turn's read and arm the deadline for its answer (a resent read keeps its own)."""
        if self._buffer:
            log.debug("%s: dropped %d byte(s) left before the request", self.endpoint, len(self._buffer))
            self._buffer = b""
        self._cancel_quiet()
        turn = self._turn
        conn.transport.write(encode_read(turn.unit, *turn.next_read))
        self._sent = True
        self._arm_deadline(deadline)

    def _received(self, conn: _Connection, data: bytes) -> None:
        buffer = self._unanswered_bytes(conn, data)
        if buffer is not None:
            self._judge(buffer, quiet=False)

    def _judge(self, buffer: bytes, quiet: bool) -> None:
        """End the turn if ``buffer`` holds the read's answer; else keep what may still become it."""
        turn = self._turn
        parsed = parse(turn.next_read, turn.unit, buffer, quiet)
        if isinstance(parsed, NeedMore):
            if parsed.garbage:
                log.debug("%s: dropped %d byte(s) that begin no answer", self.endpoint, parsed.garbage)
            self._buffer = buffer[parsed.garbage :]
            if self._buffer and not quiet:
                self._arm_quiet()
            return
        self._cancel_quiet()
        self._buffer = b""
        if parsed.start or parsed.end < len(buffer):
            log.debug("%s: dropped %d byte(s) around the answer", self.endpoint, len(buffer) - parsed.end + parsed.start)
        outcome = parsed.outcome
        if isinstance(outcome, MalformedAnswer):
            outcome = LinkError(f"{self.endpoint}: {outcome}")
        self._timeouts_in_row = 0
        self._answered(outcome)

    def _arm_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
        self._quiet = self._loop.call_later(self.quiet_s, self._quiet_came)

    def _cancel_quiet(self) -> None:
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None

    def _quiet_came(self) -> None:
        self._quiet = None
        if self._sent and self._buffer:
            self._judge(self._buffer, quiet=True)

    def _drop_connection(self) -> None:
        self._cancel_quiet()
        super()._drop_connection()


class SerialLink(RtuLink):
    """Modbus RTU on a serial port; a port that cannot be opened fails the read (Code 1), not the service."""

    def __init__(self, endpoint: SerialEndpoint, inter_request_delay_s: float = 0.0) -> None:
        super().__init__(endpoint, inter_request_delay_s)
        # The wire's silence, where the adapter's latency does not hide it (below 1925 baud).
        self.quiet_s = max(QUIET_S, 3.5 * BITS_PER_CHARACTER / endpoint.baudrate)

    @staticmethod
    def _check_endpoint(endpoint: Endpoint | SerialEndpoint) -> None:
        if not isinstance(endpoint, SerialEndpoint):
            raise ValueError(f"{endpoint}: a serial link needs a serial port")

    async def _create_connection(self, conn: _Connection) -> None:
        open_serial(self.endpoint, conn, asyncio.get_running_loop())
