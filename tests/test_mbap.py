"""Modbus TCP framing, byte by byte, without a socket: every frame a table entry."""

from __future__ import annotations

import struct

import pytest

from susee.links import ExceptionResponse, Read
from susee.links.mbap import FramingError, MalformedAnswer, answer, encode_read, missing, parse

HOLDING = Read(3, 7, 2)  # fc 3, two registers at 7
COILS = Read(1, 0, 10)  # fc 1, ten coils


def frame(tid: int, unit: int, function: int, pdu: bytes, *, protocol: int = 0, length: int | None = None) -> bytes:
    """A Modbus TCP frame; ``length`` overrides the MBAP length field (to break it)."""
    length = 2 + len(pdu) if length is None else length
    return struct.pack(">HHHBB", tid, protocol, length, unit, function) + pdu


# (case id, request args, expected bytes)
REQUESTS = [
    ("holding", (1, 1, 3, 7, 2), bytes.fromhex("0001 0000 0006 01 03 0007 0002")),
    ("input-largest-tid", (0xFFFF, 247, 4, 100, 125), bytes.fromhex("ffff 0000 0006 f7 04 0064 007d")),
    ("coils", (12, 0, 1, 0, 2000), bytes.fromhex("000c 0000 0006 00 01 0000 07d0")),
]


@pytest.mark.parametrize(("case_id", "args", "expected"), REQUESTS, ids=[c[0] for c in REQUESTS])
def test_encode_read(case_id, args, expected) -> None:
    assert encode_read(*args) == expected


# (case id, read, transaction id and unit the request went out with, response frame, expected outcome)
ANSWERS = [
    ("registers", HOLDING, 5, 1, frame(5, 1, 3, bytes([4, 0, 1, 0xAB, 0xCD])), bytes([0, 1, 0xAB, 0xCD])),
    ("fewer-registers-than-asked", HOLDING, 5, 1, frame(5, 1, 3, bytes([2, 0, 9])), bytes([0, 9])),
    ("odd-byte-count-keeps-whole-words", HOLDING, 5, 1, frame(5, 1, 3, bytes([3, 0, 9, 7])), bytes([0, 9])),
    ("bytes-after-the-count-are-ignored", HOLDING, 5, 1, frame(5, 1, 3, bytes([2, 0, 9, 1, 1])), bytes([0, 9])),
    ("coils-lsb-first-at-most-count", COILS, 5, 1, frame(5, 1, 1, bytes([2, 0b1000_0101, 0b11])),
     [1, 0, 1, 0, 0, 0, 0, 1, 1, 1]),
    ("unit-0-request-takes-any-unit", HOLDING, 5, 0, frame(5, 9, 3, bytes([2, 0, 9])), bytes([0, 9])),
    ("exception-0x02", HOLDING, 5, 1, frame(5, 1, 0x83, bytes([2])), ExceptionResponse(2)),
    ("exception-0x0B-gateway-target", HOLDING, 5, 1, frame(5, 1, 0x83, bytes([0x0B])), ExceptionResponse(0x0B)),
    ("wrong-transaction-id-is-not-its-answer", HOLDING, 5, 1, frame(6, 1, 3, bytes([4, 0, 1, 0, 2])), None),
    ("transaction-id-0-that-fits-is-its-answer", HOLDING, 5, 1, frame(0, 1, 3, bytes([4, 0, 1, 0, 2])),
     bytes([0, 1, 0, 2])),
    ("transaction-id-0-exception", HOLDING, 5, 1, frame(0, 1, 0x83, bytes([2])), ExceptionResponse(2)),
    ("transaction-id-0-coils", COILS, 5, 1, frame(0, 1, 1, bytes([2, 0b101, 0b10])), [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]),
    ("transaction-id-0-other-unit", HOLDING, 5, 1, frame(0, 2, 3, bytes([4, 0, 1, 0, 2])), None),
    ("transaction-id-0-other-function", HOLDING, 5, 1, frame(0, 1, 4, bytes([4, 0, 1, 0, 2])), None),
    ("transaction-id-0-other-count", HOLDING, 5, 1, frame(0, 1, 3, bytes([2, 0, 1])), None),
    ("transaction-id-0-byte-count-not-the-length", HOLDING, 5, 1, frame(0, 1, 3, bytes([4, 0, 1, 0, 2, 9])), None),
    ("wrong-unit-is-not-its-answer", HOLDING, 5, 1, frame(5, 2, 3, bytes([4, 0, 1, 0, 2])), None),
    ("wrong-function", HOLDING, 5, 1, frame(5, 1, 4, bytes([4, 0, 1, 0, 2])), MalformedAnswer),
    ("exception-of-another-function", HOLDING, 5, 1, frame(5, 1, 0x84, bytes([2])), MalformedAnswer),
    ("byte-count-beyond-the-frame", HOLDING, 5, 1, frame(5, 1, 3, bytes([4, 0, 1, 0])), MalformedAnswer),
    ("no-byte-count", HOLDING, 5, 1, frame(5, 1, 3, b""), MalformedAnswer),
    ("exception-without-its-code", HOLDING, 5, 1, frame(5, 1, 0x83, b""), MalformedAnswer),
]


@pytest.mark.parametrize(("case_id", "read", "tid", "unit", "response", "expected"), ANSWERS,
                         ids=[c[0] for c in ANSWERS])
def test_answer_to_a_read(case_id, read, tid, unit, response, expected) -> None:
    if expected is MalformedAnswer:
        with pytest.raises(MalformedAnswer, match=f"to fc {read.function}"):
            answer(read, tid, unit, response)
        return
    found = answer(read, tid, unit, response)
    if isinstance(expected, ExceptionResponse):
        assert isinstance(found, ExceptionResponse) and found.exception_code == expected.exception_code
    else:
        assert found == expected


# (case id, bytes, FramingError message fragment)
NOT_MODBUS_TCP = [
    ("protocol-1", frame(1, 1, 3, bytes([2, 0, 1]), protocol=1), "protocol 1"),
    ("length-0", frame(1, 1, 3, b"", length=0), "length 0"),
    ("length-1-no-function", frame(1, 1, 3, b"", length=1), "length 1"),
    ("length-beyond-a-pdu", frame(1, 1, 3, b"", length=255), "length 255"),
]


@pytest.mark.parametrize(("case_id", "data", "fragment"), NOT_MODBUS_TCP, ids=[c[0] for c in NOT_MODBUS_TCP])
def test_bytes_that_are_not_modbus_tcp_are_a_framing_error(case_id, data, fragment) -> None:
    with pytest.raises(FramingError, match=fragment):
        missing(data)
    with pytest.raises(FramingError, match=fragment):
        parse(data)


WHOLE = frame(0x1234, 7, 3, bytes([4, 0, 1, 0, 2]))


@pytest.mark.parametrize("cut", range(len(WHOLE) + 1))
def test_a_frame_split_at_every_byte_says_what_it_still_needs_and_parses_once_whole(cut) -> None:
    head = WHOLE[:cut]
    need = missing(head)

    if cut < 8:
        assert need == 8 - cut  # the header and function code first: they give the length
    else:
        assert need == len(WHOLE) - cut
    if need:
        with pytest.raises(ValueError, match="incomplete"):
            parse(head)
    assert missing(head + WHOLE[cut:]) == 0
    assert parse(head + WHOLE[cut:]) == ((0x1234, 7, 3, bytes([4, 0, 1, 0, 2])), len(WHOLE))


def test_frames_back_to_back_parse_one_after_the_other() -> None:
    second = frame(2, 1, 0x83, bytes([2]))
    data = WHOLE + second + second[:3]

    first, end = parse(data)
    after, end2 = parse(data, end)

    assert first.transaction == 0x1234 and after == (2, 1, 0x83, bytes([2]))
    assert missing(data, end2) == 5  # the third frame: 3 of 8 header bytes so far

