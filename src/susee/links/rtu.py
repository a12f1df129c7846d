"""Modbus RTU framing as pure functions over bytes: no port, no socket, no timer.

An RTU frame is the unit, the PDU (function code and data) and a CRC-16 (low
byte first). It carries no length: a read response's length follows from its
byte count (unit, function, byte count, data, CRC: 5 + count bytes), an
exception response is 5 bytes, and on the wire a frame ends with a silence
(3.5 characters on a serial line). The RTU links (``links.rtulink``) frame
with these, for RTU over TCP and on serial lines.

- ``encode_read``: the request of a read (function 1-4), CRC included;
- ``parse``: what the bytes received since a read went out say to it:
  ``Reply`` (a frame with a good CRC answering it, or a malformed answer), or
  ``NeedMore`` (wait; the first ``garbage`` bytes can begin no answer).

What a reply gives is what Modbus TCP's ``mbap.answer_to`` gives for the same
frame, so the same fault makes the same Code on every transport: registers as
wire bytes (whole words, as many as the byte count says), bits as 0/1 ints,
``ExceptionResponse``, or ``MalformedAnswer`` (another function, a byte count
beyond the data). A frame of another unit is never the answer (unit 0 takes
any, as on Modbus TCP).

A byte count that disagrees with the data: pymodbus takes the frame's length
from the byte count, the CRC then fails and the frame is dropped (a timeout,
where Modbus TCP gives the fewer registers the byte count names). Here, once
the line is quiet (``parse(..., quiet=True)``), bytes that end in a good CRC
over the whole of them are that frame: its byte count is judged as Modbus
TCP judges it. A good frame never waits for the quiet.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from susee.links import ExceptionResponse, MalformedAnswer, Read, read_outcome

READ_REQUEST = struct.Struct(">BBHH")  # unit, function, address, count (then the CRC)
HEAD_BYTES = 3  # unit, function, byte count (or exception code): enough to know a frame's length
OVERHEAD = 5  # unit, function, byte count, CRC: a read response is this plus its byte count
EXCEPTION_BYTES = 5  # unit, function | 0x80, exception code, CRC


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


CRC_TABLE = _crc_table()  # a byte at a time: 8x fewer Python steps than bit by bit


def crc16(data: bytes, start: int = 0, end: int | None = None) -> int:
    """The Modbus CRC-16 of ``data[start:end]``; 0 over a frame that ends in its own good CRC."""
    crc = 0xFFFF
    table = CRC_TABLE
    for byte in data[start:end] if start or end is not None else data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def encode_read(unit: int, function: int, address: int, count: int) -> bytes:
    """The request of read ``function`` of ``count`` registers (or bits) at ``address``, with its CRC."""
    frame = READ_REQUEST.pack(unit, function, address, count)
    return frame + struct.pack("<H", crc16(frame))


class Reply(NamedTuple):
    """The frame ``buffer[start:end]`` answers the read: ``outcome`` is what it says to it."""

    outcome: bytes | list[int] | ExceptionResponse | MalformedAnswer
    start: int
    end: int


class NeedMore(NamedTuple):
    """No answer yet: at least ``missing`` more bytes; the first ``garbage`` bytes can begin none."""

    missing: int
    garbage: int


def parse(read: Read, unit: int, buffer: bytes, quiet: bool = False) -> Reply | NeedMore:
    """What ``buffer`` (the bytes received since ``read`` went out to ``unit``) says to it.

    The first frame with a good CRC that is a response of ``unit`` (any unit
    if 0) is the reply; bytes before it (noise, the tail of a late answer)
    are skipped. ``quiet``: the line has been silent since the last byte, so
    no byte of the frame is still coming; bytes that end in a good CRC over
    all of them from a response of the read's function are then its reply,
    whatever their byte count says (see the module's docstring).
    """
    size = len(buffer)
    first = -1  # offset of the first bytes that may still become the reply
    missing = HEAD_BYTES  # what a frame that has not begun needs to tell its length
    for start in range(size):
        if unit and buffer[start] != unit:
            continue
        if size - start < HEAD_BYTES:
            if first < 0:
                first, missing = start, HEAD_BYTES - (size - start)
            continue
        function = buffer[start + 1]
        if function & 0x80:
            end = start + EXCEPTION_BYTES
        elif function in (1, 2, 3, 4):
            end = start + OVERHEAD + buffer[start + 2]
        else:
            continue
        if end <= size and not crc16(buffer, start, end):
            return Reply(answer(read, buffer, start, end), start, end)
        if first < 0 and (end > size or function == read[0]):
            # Short of its length; or as long but a bad CRC, which a byte count
            # that disagrees with the data also gives: judged at the quiet.
            first, missing = start, max(1, end - size)
    if quiet and first >= 0:
        for start in range(first, size - OVERHEAD + 1):
            if (not unit or buffer[start] == unit) and buffer[start + 1] == read[0] and not crc16(buffer, start):
                return Reply(answer(read, buffer, start, size), start, size)
    return NeedMore(missing, size if first < 0 else first)


def answer(read: Read, buffer: bytes, start: int, end: int) -> bytes | list[int] | ExceptionResponse | MalformedAnswer:
    """What the frame ``buffer[start:end]`` (unit and CRC checked) says to ``read``, as ``mbap.answer_to``."""
    function = buffer[start + 1]
    outcome = read_outcome(read, function, bytes(buffer), start + 2, end - 2)  # the data ends before the CRC
    if outcome is not None:
        return outcome
    return MalformedAnswer(f"malformed answer (function {function}, {end - start} bytes) to fc {read[0]}")
