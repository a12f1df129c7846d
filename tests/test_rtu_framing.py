"""Modbus RTU framing, byte by byte, without a port or a socket: every frame a table entry."""

from __future__ import annotations

import struct

import pytest

from rawmodbus import crc16 as reference_crc
from rawmodbus import mbap as mbap_frame
from susee.links import ExceptionResponse, MalformedAnswer, Read
from susee.links import mbap
from susee.links.rtu import NeedMore, Reply, crc16, encode_read, parse

HOLDING = Read(3, 7, 2)  # fc 3, two registers at 7
COILS = Read(1, 0, 10)  # fc 1, ten coils


def rtu(unit: int, function: int, pdu: bytes) -> bytes:
    """An RTU frame with its good CRC (the tests' own CRC, bit by bit: not the module's table)."""
    frame = bytes([unit, function]) + pdu
    return frame + reference_crc(frame)


def test_the_crc_of_a_frame_with_its_own_crc_is_0_and_matches_the_bitwise_reference() -> None:
    for data in (b"", b"\x01", bytes(range(256)), b"\x01\x03\x00\x00\x00\x0a"):
        assert struct.pack("<H", crc16(data)) == reference_crc(data)
        assert crc16(data + reference_crc(data)) == 0


# (case id, request args, expected bytes)
REQUESTS = [
    ("holding-the-classic-example", (1, 3, 0, 10), bytes.fromhex("01 03 0000 000a c5cd")),
    ("input", (247, 4, 100, 125), bytes.fromhex("f7 04 0064 007d") + reference_crc(bytes.fromhex("f704 0064 007d"))),
    ("coils", (2, 1, 0, 2000), bytes.fromhex("02 01 0000 07d0") + reference_crc(bytes.fromhex("0201 0000 07d0"))),
]


@pytest.mark.parametrize(("case_id", "args", "expected"), REQUESTS, ids=[c[0] for c in REQUESTS])
def test_encode_read(case_id, args, expected) -> None:
    assert encode_read(*args) == expected


# (case id, read, unit asked, bytes received, quiet, expected outcome; NeedMore: no reply)
ANSWERS = [
    ("registers", HOLDING, 1, rtu(1, 3, bytes([4, 0, 1, 0xAB, 0xCD])), False, bytes([0, 1, 0xAB, 0xCD])),
    ("fewer-registers-than-asked", HOLDING, 1, rtu(1, 3, bytes([2, 0, 9])), False, bytes([0, 9])),
    ("odd-byte-count-keeps-whole-words", HOLDING, 1, rtu(1, 3, bytes([3, 0, 9, 7])), False, bytes([0, 9])),
    ("coils-lsb-first-at-most-count", COILS, 1, rtu(1, 1, bytes([2, 0b1000_0101, 0b11])), False,
     [1, 0, 1, 0, 0, 0, 0, 1, 1, 1]),
    ("unit-0-request-takes-any-unit", HOLDING, 0, rtu(9, 3, bytes([2, 0, 9])), False, bytes([0, 9])),
    ("exception-0x02", HOLDING, 1, rtu(1, 0x83, bytes([2])), False, ExceptionResponse(2)),
    ("exception-0x0B-gateway-target", HOLDING, 1, rtu(1, 0x83, bytes([0x0B])), False, ExceptionResponse(0x0B)),
    ("wrong-function", HOLDING, 1, rtu(1, 4, bytes([4, 0, 1, 0, 2])), False, MalformedAnswer),
    ("exception-of-another-function", HOLDING, 1, rtu(1, 0x84, bytes([2])), False, MalformedAnswer),
    ("another-unit-is-never-its-answer", HOLDING, 1, rtu(2, 3, bytes([4, 0, 1, 0, 2])), True, NeedMore),
    ("an-exception-with-a-bad-crc-is-never-an-answer", HOLDING, 1, rtu(1, 0x83, bytes([2]))[:-1] + b"\0", True,
     NeedMore),
    ("an-exception-of-another-unit-is-never-its-answer", HOLDING, 1, rtu(2, 0x83, bytes([2])), True, NeedMore),
    ("a-frame-without-its-crc-is-never-an-answer", HOLDING, 1, rtu(1, 3, bytes([4, 0, 1, 0, 2]))[:-2], True, NeedMore),
    ("a-bad-crc-is-never-an-answer", HOLDING, 1, rtu(1, 3, bytes([4, 0, 1, 0, 2]))[:-1] + b"\0", True, NeedMore),
    ("noise-before-the-frame-is-skipped", HOLDING, 1, b"\x01\x83\xff" + rtu(1, 3, bytes([4, 0, 1, 0, 2])), False,
     bytes([0, 1, 0, 2])),
    ("the-tail-of-a-late-answer-is-skipped", HOLDING, 1, rtu(1, 3, bytes([4, 9, 9, 9, 9]))[4:]
     + rtu(1, 3, bytes([4, 0, 1, 0, 2])), False, bytes([0, 1, 0, 2])),
    ("a-frame-sent-twice-answers-once", HOLDING, 1, rtu(1, 3, bytes([4, 0, 1, 0, 2])) * 2, False, bytes([0, 1, 0, 2])),
    # A byte count that disagrees with the data: judged once the line is quiet, as Modbus TCP judges it.
    ("byte-count-below-the-data-waits-for-the-quiet", HOLDING, 1, rtu(1, 3, bytes([2, 0, 9, 1, 1])), False, NeedMore),
    ("byte-count-below-the-data-is-fewer-registers", HOLDING, 1, rtu(1, 3, bytes([2, 0, 9, 1, 1])), True, bytes([0, 9])),
    ("byte-count-0-with-data-is-no-register", HOLDING, 1, rtu(1, 3, bytes([0, 0, 9, 1, 1])), True, b""),
    ("byte-count-beyond-the-data-waits-for-the-quiet", HOLDING, 1, rtu(1, 3, bytes([4, 0, 1])), False, NeedMore),
    ("byte-count-beyond-the-data-is-malformed", HOLDING, 1, rtu(1, 3, bytes([4, 0, 1])), True, MalformedAnswer),
    ("no-data-at-all-is-malformed", HOLDING, 1, rtu(1, 3, bytes([4])), True, MalformedAnswer),
    ("coils-byte-count-below-the-data", COILS, 1, rtu(1, 1, bytes([1, 0b101, 0b10])), True,
     [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]),
]


@pytest.mark.parametrize(("case_id", "read", "unit", "received", "quiet", "expected"), ANSWERS,
                         ids=[c[0] for c in ANSWERS])
def test_parse_an_answer(case_id, read, unit, received, quiet, expected) -> None:
    parsed = parse(read, unit, received, quiet)

    if expected is NeedMore:
        assert isinstance(parsed, NeedMore)
        return
    assert isinstance(parsed, Reply)
    if expected is MalformedAnswer:
        assert isinstance(parsed.outcome, MalformedAnswer) and f"to fc {read.function}" in str(parsed.outcome)
    elif isinstance(expected, ExceptionResponse):
        assert isinstance(parsed.outcome, ExceptionResponse)
        assert parsed.outcome.exception_code == expected.exception_code
    else:
        assert parsed.outcome == expected


# (case id, read, PDU after the function code): a fault as Modbus TCP and as RTU carries it
SAME_PDU = [
    ("whole", HOLDING, 3, bytes([4, 0, 1, 0, 2])),
    ("byte-count-below-the-data", HOLDING, 3, bytes([2, 0, 1, 0, 2])),
    ("odd-byte-count-below-the-data", HOLDING, 3, bytes([1, 0, 1, 0, 2])),
    ("byte-count-beyond-the-data", HOLDING, 3, bytes([6, 0, 1, 0, 2])),
    ("no-data", HOLDING, 3, bytes([4])),
    ("another-function", HOLDING, 4, bytes([4, 0, 1, 0, 2])),
    ("exception", HOLDING, 0x83, bytes([4])),
    ("coils-byte-count-below-the-data", COILS, 1, bytes([1, 0xFF, 0x01])),
    ("coils-byte-count-beyond-the-data", COILS, 1, bytes([3, 0xFF, 0x01])),
]


@pytest.mark.parametrize(("case_id", "read", "function", "pdu"), SAME_PDU, ids=[c[0] for c in SAME_PDU])
def test_a_pdu_says_the_same_over_rtu_as_over_modbus_tcp(case_id, read, function, pdu) -> None:
    try:
        over_tcp = mbap.answer(read, 5, 1, mbap_frame(5, 1, function, pdu))
    except MalformedAnswer as exc:
        over_tcp = exc

    over_rtu = parse(read, 1, rtu(1, function, pdu), quiet=True).outcome

    assert type(over_rtu) is type(over_tcp)
    if isinstance(over_tcp, ExceptionResponse):
        assert over_rtu.exception_code == over_tcp.exception_code
    elif isinstance(over_tcp, MalformedAnswer):
        assert str(over_rtu) == str(over_tcp).replace(f"{len(pdu) + 8} bytes", f"{len(pdu) + 4} bytes")
    else:
        assert over_rtu == over_tcp


WHOLE = rtu(7, 3, bytes([4, 0, 1, 0, 2]))


@pytest.mark.parametrize("cut", range(len(WHOLE)))
@pytest.mark.parametrize("quiet", [False, True], ids=["arriving", "quiet"])
def test_a_frame_split_at_every_byte_waits_and_answers_once_whole(cut, quiet) -> None:
    head = WHOLE[:cut]

    parsed = parse(HOLDING, 7, head, quiet)

    assert isinstance(parsed, NeedMore)  # a part of a frame is never an answer, even once quiet
    assert parsed.garbage == 0  # nothing to skip: it all may become the answer
    assert parsed.missing == (3 - cut if cut < 3 else len(WHOLE) - cut)
    assert parse(HOLDING, 7, head + WHOLE[cut:]) == Reply(bytes([0, 1, 0, 2]), 0, len(WHOLE))


@pytest.mark.parametrize("cut", range(1, len(WHOLE)))
def test_noise_then_a_frame_split_at_every_byte_answers_once_whole(cut) -> None:
    data = b"\x07\x03\x7f\x00" + WHOLE  # looks like the start of a long answer; its CRC never comes

    assert isinstance(parse(HOLDING, 7, data[: 4 + cut]), NeedMore)
    assert parse(HOLDING, 7, data) == Reply(bytes([0, 1, 0, 2]), 4, len(data))


@pytest.mark.parametrize(
    ("received", "garbage"),
    [
        pytest.param(b"\x02\x03\x04\x00\x01", 5, id="bytes-of-another-unit"),
        pytest.param(b"\x00\xff\x02\x07", 3, id="noise-then-the-unit"),
        pytest.param(b"\x07\x2b\x0e\x01\x01", 5, id="a-function-no-read-answers"),
        pytest.param(b"", 0, id="nothing"),
    ],
)
def test_bytes_that_can_begin_no_answer_are_garbage(received, garbage) -> None:
    parsed = parse(HOLDING, 7, received, quiet=True)

    assert isinstance(parsed, NeedMore) and parsed.garbage == garbage
