"""Modbus TCP framing (MBAP) as pure functions over bytes: no socket, no timer, no state.

A frame is the 7-byte MBAP header (transaction id, protocol id 0, length,
unit) followed by the PDU (function code and data); the length counts the
unit and the PDU. The lean client (``links.tcp``) frames with these; its
receive loop reads the header with ``HEADER`` itself and calls ``answer_to``
once per frame, so the hot path pays no layer of its own per frame.

- ``encode_read``: the request of a read (function 1-4);
- ``missing``: how many bytes a partial buffer still needs to hold a frame;
- ``parse``: one whole frame into ``Frame(transaction, unit, function, payload)``;
- ``answer_to`` (``answer`` for a whole frame): what a response frame says to
  the read outstanding: its data, the ``ExceptionResponse`` it carries, or
  None when it is not that read's answer; ``MalformedAnswer`` if it does not fit.

``FramingError`` (the stream is not Modbus TCP: another protocol id, an
impossible length) means the stream is lost: the caller drops the connection.
``MalformedAnswer`` is one bad frame: the stream stays in step.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from susee.links import ExceptionResponse, MalformedAnswer, Read, read_outcome

HEADER = struct.Struct(">HHHBB")  # transaction, protocol (0), length, unit, function
READ_REQUEST = struct.Struct(">HHHBBHH")  # MBAP (length 6) + function, address, count
READ_LENGTH = 6  # a read request's MBAP length: unit, function, address, count
HEADER_SIZE = HEADER.size  # header and function code: enough to know a frame's length
LENGTH_MIN, LENGTH_MAX = 2, 254  # MBAP length: unit + PDU of 1..253 bytes
HEAD_BYTES = 6  # the MBAP bytes before the ones counted by its length field
DATA_AT = 9  # offset of the first data byte in a read response (after the byte count)


class FramingError(ValueError):
    """The bytes are not Modbus TCP: the stream cannot be followed any further."""


class Frame(NamedTuple):
    """One Modbus TCP frame: its header fields and the bytes after the function code."""

    transaction: int
    unit: int
    function: int
    payload: bytes


def encode_read(transaction: int, unit: int, function: int, address: int, count: int) -> bytes:
    """The request of read ``function`` of ``count`` registers (or bits) at ``address``."""
    return READ_REQUEST.pack(transaction, 0, READ_LENGTH, unit, function, address, count)


def not_modbus_tcp(protocol: int, length: int) -> FramingError | None:
    """The error a header with ``protocol`` and ``length`` is, or None if it can be a frame."""
    if protocol or not LENGTH_MIN <= length <= LENGTH_MAX:
        return FramingError(f"not Modbus TCP (protocol {protocol}, length {length})")
    return None


def missing(buffer: bytes, pos: int = 0) -> int:
    """Bytes still needed after ``buffer[pos:]`` to hold a whole frame (0: it does).

    Raises FramingError when the header already shows the bytes are not Modbus TCP.
    """
    have = len(buffer) - pos
    if have < HEADER_SIZE:
        return HEADER_SIZE - have
    _, protocol, length, _, _ = HEADER.unpack_from(buffer, pos)
    error = not_modbus_tcp(protocol, length)
    if error is not None:
        raise error
    return max(0, HEAD_BYTES + length - have)


def parse(buffer: bytes, pos: int = 0) -> tuple[Frame, int]:
    """The frame at ``buffer[pos:]`` and the offset after it.

    Raises FramingError if the bytes are not Modbus TCP, ValueError if the
    frame is not whole yet (``missing`` says how many bytes to wait for).
    """
    need = missing(buffer, pos)
    if need:
        raise ValueError(f"incomplete frame: {need} more byte(s) needed")
    transaction, _, length, unit, function = HEADER.unpack_from(buffer, pos)
    end = pos + HEAD_BYTES + length
    return Frame(transaction, unit, function, bytes(buffer[pos + HEADER_SIZE : end])), end


def answer_to(
    read: Read, sent_tid: int, sent_unit: int, buffer: bytes, pos: int, end: int, tid: int, unit: int, function: int
) -> bytes | list[int] | ExceptionResponse | None:
    """What the frame ``buffer[pos:end]`` (header fields ``tid``, ``unit``, ``function``) says to ``read``.

    ``read`` went out with transaction id ``sent_tid`` (never 0) to unit
    ``sent_unit`` and is the one request outstanding on the connection.
    None: the frame is not its answer (another transaction id, or another
    unit when the request named one: unit 0 takes any), a late or stray
    frame to drop. Some gateways answer every request with transaction id 0:
    such a frame is taken as the answer of the one request outstanding only
    if it fits it exactly (its unit, its function, the byte count of the
    count asked, or an exception response of that function).
    Registers (fc 3/4) come as their wire bytes, whole words only; bits
    (fc 1/2) as 0/1 ints, least significant bit first, at most the count
    asked (as pymodbus). Fewer than asked when the device sent fewer: the
    caller judges that. An exception response gives ``ExceptionResponse``.
    Raises MalformedAnswer for another function, or a byte count beyond the frame.
    """
    if unit != sent_unit and sent_unit:
        return None
    asked = read[0]
    if tid != sent_tid and (tid or not _fits(read, buffer, pos, end, function)):
        return None
    outcome = read_outcome(read, function, buffer, pos + DATA_AT - 1, end)
    if outcome is not None:
        return outcome
    raise MalformedAnswer(f"malformed answer (function {function}, {end - pos} bytes) to fc {asked}")


def _fits(read: Read, buffer: bytes, pos: int, end: int, function: int) -> bool:
    """Whether the frame is exactly the answer ``read`` asks for: whole data, or an exception."""
    asked, _, count = read
    if function == asked | 0x80:
        return end - pos == DATA_AT
    expected = 2 * count if asked >= 3 else (count + 7) // 8
    return function == asked and end - pos == DATA_AT + expected and buffer[pos + DATA_AT - 1] == expected


def answer(read: Read, sent_tid: int, sent_unit: int, frame: bytes) -> bytes | list[int] | ExceptionResponse | None:
    """``answer_to`` for a buffer holding one whole frame (FramingError if it is not Modbus TCP)."""
    parsed, end = parse(frame)
    return answer_to(read, sent_tid, sent_unit, frame, 0, end, parsed.transaction, parsed.unit, parsed.function)
