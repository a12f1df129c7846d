"""Registers -> values: every data type in every byte/word order, as data.

The register lists below are written out by hand from the IEEE-754 / two's
complement bit patterns (as a manufacturer's manual would print them), never
produced by ``encode``, so a symmetric bug in encode and decode cannot hide.
"""

from __future__ import annotations

import math

import pytest

from susee.codec import DATA_TYPES, encode, make_decoder, normalise_order, parse_bits, registers_to_bytes
from susee.quality import Code

# The register types; "bit" (coils, discrete inputs) has its own table below.
REGISTER_TYPES = [name for name, t in DATA_TYPES.items() if t.kind != "bit"]

# (byte order, word order) of the ABCD-style spellings; A = most significant byte.
ORDERS = {
    "ABCD": ("big", "big"),
    "CDAB": ("big", "little"),
    "BADC": ("little", "big"),
    "DCBA": ("little", "little"),
}

# (type, order, wire registers, expected value)
VECTORS = [
    # uint16: one word, so word order is moot; byte order swaps the two bytes.
    ("uint16", "ABCD", [0x1234], 0x1234),
    ("uint16", "CDAB", [0x1234], 0x1234),
    ("uint16", "BADC", [0x3412], 0x1234),
    ("uint16", "DCBA", [0x3412], 0x1234),
    ("uint16", "ABCD", [0x0000], 0),
    ("uint16", "ABCD", [0xFFFF], 65535),
    # int16
    ("int16", "ABCD", [0x8000], -32768),
    ("int16", "CDAB", [0x8000], -32768),
    ("int16", "BADC", [0x0080], -32768),
    ("int16", "DCBA", [0x0080], -32768),
    ("int16", "ABCD", [0xFFFF], -1),
    ("int16", "ABCD", [0xCFC7], -12345),
    ("int16", "BADC", [0xC7CF], -12345),
    ("int16", "ABCD", [0x7FFF], 32767),
    # uint32: 0x12345678 = 305419896
    ("uint32", "ABCD", [0x1234, 0x5678], 305419896),
    ("uint32", "CDAB", [0x5678, 0x1234], 305419896),
    ("uint32", "BADC", [0x3412, 0x7856], 305419896),
    ("uint32", "DCBA", [0x7856, 0x3412], 305419896),
    ("uint32", "ABCD", [0xFFFF, 0xFFFF], 4294967295),
    ("uint32", "ABCD", [0x0000, 0x0000], 0),
    # int32: -2 = 0xFFFFFFFE, min = 0x80000000, max = 0x7FFFFFFF
    ("int32", "ABCD", [0xFFFF, 0xFFFE], -2),
    ("int32", "CDAB", [0xFFFE, 0xFFFF], -2),
    ("int32", "BADC", [0xFFFF, 0xFEFF], -2),
    ("int32", "DCBA", [0xFEFF, 0xFFFF], -2),
    ("int32", "ABCD", [0x8000, 0x0000], -2147483648),
    ("int32", "CDAB", [0x0000, 0x8000], -2147483648),
    ("int32", "BADC", [0x0080, 0x0000], -2147483648),
    ("int32", "DCBA", [0x0000, 0x0080], -2147483648),
    ("int32", "ABCD", [0x7FFF, 0xFFFF], 2147483647),
    ("int32", "CDAB", [0xFFFF, 0x7FFF], 2147483647),
    # uint64: 0x0123456789ABCDEF = 81985529216486895; the "little" word order
    # reverses all four words, as CDAB generalises to 64 bits.
    ("uint64", "ABCD", [0x0123, 0x4567, 0x89AB, 0xCDEF], 81985529216486895),
    ("uint64", "CDAB", [0xCDEF, 0x89AB, 0x4567, 0x0123], 81985529216486895),
    ("uint64", "BADC", [0x2301, 0x6745, 0xAB89, 0xEFCD], 81985529216486895),
    ("uint64", "DCBA", [0xEFCD, 0xAB89, 0x6745, 0x2301], 81985529216486895),
    ("uint64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], 18446744073709551615),
    # int64: min = 0x8000000000000000, -1234567890123 = 0xFFFFFEE08E04FB35
    ("int64", "ABCD", [0x8000, 0x0000, 0x0000, 0x0000], -9223372036854775808),
    ("int64", "CDAB", [0x0000, 0x0000, 0x0000, 0x8000], -9223372036854775808),
    ("int64", "BADC", [0x0080, 0x0000, 0x0000, 0x0000], -9223372036854775808),
    ("int64", "DCBA", [0x0000, 0x0000, 0x0000, 0x0080], -9223372036854775808),
    ("int64", "ABCD", [0xFFFF, 0xFEE0, 0x8E04, 0xFB35], -1234567890123),
    ("int64", "CDAB", [0xFB35, 0x8E04, 0xFEE0, 0xFFFF], -1234567890123),
    ("int64", "BADC", [0xFFFF, 0xE0FE, 0x048E, 0x35FB], -1234567890123),
    ("int64", "DCBA", [0x35FB, 0x048E, 0xE0FE, 0xFFFF], -1234567890123),
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
    # float32: a manual's worked example, 230.5 V = 0x43668000
    ("float32", "ABCD", [0x4366, 0x8000], 230.5),
    ("float32", "CDAB", [0x8000, 0x4366], 230.5),
    ("float32", "BADC", [0x6643, 0x0080], 230.5),
    ("float32", "DCBA", [0x0080, 0x6643], 230.5),
    # -1.5 = 0xBFC00000 (a negative power factor or export power)
    ("float32", "ABCD", [0xBFC0, 0x0000], -1.5),
    ("float32", "CDAB", [0x0000, 0xBFC0], -1.5),
    ("float32", "BADC", [0xC0BF, 0x0000], -1.5),
    ("float32", "DCBA", [0x0000, 0xC0BF], -1.5),
    ("float32", "ABCD", [0x4248, 0x0000], 50.0),  # 50 Hz
    # float64: a PAC3200 energy counter, 123456789.0 Wh = 0x419D6F3454000000,
    # high word first as the meter sends it.
    ("float64", "ABCD", [0x419D, 0x6F34, 0x5400, 0x0000], 123456789.0),
    ("float64", "CDAB", [0x0000, 0x5400, 0x6F34, 0x419D], 123456789.0),
    ("float64", "BADC", [0x9D41, 0x346F, 0x0054, 0x0000], 123456789.0),
    ("float64", "DCBA", [0x0000, 0x0054, 0x346F, 0x9D41], 123456789.0),
    # -2.5 = 0xC004000000000000
    ("float64", "ABCD", [0xC004, 0x0000, 0x0000, 0x0000], -2.5),
    ("float64", "CDAB", [0x0000, 0x0000, 0x0000, 0xC004], -2.5),
    ("float64", "BADC", [0x04C0, 0x0000, 0x0000, 0x0000], -2.5),
    ("float64", "DCBA", [0x0000, 0x0000, 0x0000, 0x04C0], -2.5),
    # Worked examples from manufacturers' documents:
    # B+G e-tech "SDM630Register.pdf" (Eastron SDM630-Modbus): reading 30001, phase 1
    # voltage, the meter answers the bytes 43 66 33 34 -> 230.2 V (float32, high word first).
    ("float32", "ABCD", [0x4366, 0x3334], 230.20001220703125),
    # JUMO 701061 interface manual: 550.0 = 0x44098000 in IEEE 754, sent as
    # 80 00 44 09 (low word first): the CDAB order.
    ("float32", "CDAB", [0x8000, 0x4409], 550.0),
]

VECTOR_IDS = [f"{t}-{order}-{value!r}" for t, order, _, value in VECTORS]


def test_vectors_cover_every_register_type_in_every_order() -> None:
    covered = {(t, order) for t, order, _, _ in VECTORS}
    assert covered == {(t, order) for t in REGISTER_TYPES for order in ORDERS}


def test_vectors_have_the_word_count_of_their_type() -> None:
    for type_name, order, registers, _ in VECTORS:
        assert len(registers) == DATA_TYPES[type_name].words, (type_name, order, registers)


@pytest.mark.parametrize(("type_name", "order", "registers", "expected"), VECTORS, ids=VECTOR_IDS)
def test_decoder_reads_value_in_its_byte_and_word_order(type_name, order, registers, expected) -> None:
    byte_order, word_order = ORDERS[order]
    decode = make_decoder(type_name, 0, byte_order, word_order)

    value, code = decode(registers_to_bytes(registers))

    expected = as_stored(type_name, expected)
    assert value == expected
    assert type(value) is type(expected)
    assert code == Code.OK


def as_stored(type_name: str, value: float) -> float:
    """A 64-bit integer decodes to the DOUBLE it is stored as (no sink may be handed an int >= 2**63)."""
    return float(value) if type_name in ("uint64", "int64") else value


@pytest.mark.parametrize(("type_name", "order", "registers", "expected"), VECTORS, ids=VECTOR_IDS)
def test_encode_gives_the_registers_a_device_sends(type_name, order, registers, expected) -> None:
    byte_order, word_order = ORDERS[order]

    assert encode(type_name, expected, byte_order, word_order) == registers


@pytest.mark.parametrize(("type_name", "order", "registers", "expected"), VECTORS, ids=VECTOR_IDS)
def test_decoder_finds_field_at_its_offset_inside_a_block(type_name, order, registers, expected) -> None:
    byte_order, word_order = ORDERS[order]
    # Junk around the field: a decoder reading the wrong words would not see `expected`.
    before = [0xDEAD, 0xBEEF, 0x7FC0]
    after = [0xA5A5, 0x5A5A, 0xFFFF, 0x0001]
    decode = make_decoder(type_name, len(before), byte_order, word_order)

    value, code = decode(registers_to_bytes(before + registers + after))

    assert (value, code) == (as_stored(type_name, expected), Code.OK)


def test_decoders_of_adjacent_fields_share_one_block_buffer() -> None:
    # A PAC3200-like block at 1: UL1_N (float32) at offset 0, UL2_N at 2, a gap, then
    # an int16 at 6 and a float64 at 7.
    registers = [0x4366, 0x8000, 0xBFC0, 0x0000, 0x0000, 0x0000, 0xCFC7, 0x419D, 0x6F34, 0x5400, 0x0000]
    buffer = registers_to_bytes(registers)
    decoders = [
        make_decoder("float32", 0),
        make_decoder("float32", 2),
        make_decoder("int16", 6),
        make_decoder("float64", 7),
    ]

    assert [d(buffer) for d in decoders] == [
        (230.5, Code.OK),
        (-1.5, Code.OK),
        (-12345, Code.OK),
        (123456789.0, Code.OK),
    ]


@pytest.mark.parametrize(
    ("type_name", "registers", "scale", "offset", "expected"),
    [
        pytest.param("uint16", [0x0904], 0.1, 0.0, 230.8, id="uint16-tenths-of-volt"),
        pytest.param("int16", [0xFF9C], 0.01, 0.0, -1.0, id="int16-hundredths-negative"),
        pytest.param("uint32", [0x0000, 0x03E8], 1.0, -1000.0, 0.0, id="uint32-offset-only"),
        pytest.param("int32", [0xFFFF, 0xFFFE], 1000.0, 5.0, -1995.0, id="int32-kilo-scale-and-offset"),
        pytest.param("float32", [0x4366, 0x8000], 0.001, 0.0, 0.2305, id="float32-V-to-kV"),
        pytest.param("float64", [0x419D, 0x6F34, 0x5400, 0x0000], 0.001, 0.0, 123456.789, id="float64-Wh-to-kWh"),
    ],
)
def test_decoder_applies_scale_then_offset(type_name, registers, scale, offset, expected) -> None:
    decode = make_decoder(type_name, 0, scale=scale, offset=offset)

    value, code = decode(registers_to_bytes(registers))

    assert value == pytest.approx(expected)
    assert code == Code.OK


@pytest.mark.parametrize(
    ("type_name", "order", "registers"),
    [
        pytest.param("float32", "ABCD", [0x7FC0, 0x0000], id="float32-nan"),
        pytest.param("float32", "ABCD", [0x7F80, 0x0000], id="float32-plus-inf"),
        pytest.param("float32", "ABCD", [0xFF80, 0x0000], id="float32-minus-inf"),
        pytest.param("float32", "CDAB", [0x0000, 0x7FC0], id="float32-nan-word-swapped"),
        pytest.param("float32", "DCBA", [0x0000, 0x80FF], id="float32-minus-inf-byte-and-word-swapped"),
        pytest.param("float64", "ABCD", [0x7FF8, 0x0000, 0x0000, 0x0000], id="float64-nan"),
        pytest.param("float64", "ABCD", [0x7FF0, 0x0000, 0x0000, 0x0000], id="float64-plus-inf"),
        pytest.param("float64", "ABCD", [0xFFF0, 0x0000, 0x0000, 0x0000], id="float64-minus-inf"),
        pytest.param("float64", "BADC", [0xF87F, 0x0000, 0x0000, 0x0000], id="float64-nan-byte-swapped"),
    ],
)
def test_nan_and_infinity_decode_to_none_with_value_nan_code(type_name, order, registers) -> None:
    byte_order, word_order = ORDERS[order]
    decode = make_decoder(type_name, 0, byte_order, word_order)

    assert decode(registers_to_bytes(registers)) == (None, Code.VALUE_NAN)


def test_nan_stays_nan_code_when_scaled() -> None:
    decode = make_decoder("float32", 0, scale=0.001, offset=1.0)

    assert decode(registers_to_bytes([0x7FC0, 0x0000])) == (None, Code.VALUE_NAN)


def test_float_overflowing_after_scale_is_value_nan() -> None:
    # float64 max (0x7FEFFFFFFFFFFFFF) times 10 is infinite.
    decode = make_decoder("float64", 0, scale=10.0)

    assert decode(registers_to_bytes([0x7FEF, 0xFFFF, 0xFFFF, 0xFFFF])) == (None, Code.VALUE_NAN)


def test_encode_of_nan_gives_registers_that_decode_as_nan() -> None:
    registers = encode("float32", math.nan)

    assert make_decoder("float32", 0)(registers_to_bytes(registers)) == (None, Code.VALUE_NAN)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("ABCD", ("big", "big")),
        ("CDAB", ("big", "little")),
        ("BADC", ("little", "big")),
        ("DCBA", ("little", "little")),
        ("abcd", ("big", "big")),
        ("cdab", ("big", "little")),
        ("BaDc", ("little", "big")),
        ("dcbA", ("little", "little")),
    ],
)
def test_normalise_order_resolves_alias_case_insensitively(alias, expected) -> None:
    assert normalise_order(None, None, alias) == expected


@pytest.mark.parametrize(
    ("byte_order", "word_order", "expected"),
    [
        (None, None, ("big", "big")),
        ("little", None, ("little", "big")),
        (None, "little", ("big", "little")),
        ("little", "little", ("little", "little")),
    ],
)
def test_normalise_order_without_alias_defaults_to_big(byte_order, word_order, expected) -> None:
    assert normalise_order(byte_order, word_order, None) == expected


def test_normalise_order_alias_wins_over_explicit_orders() -> None:
    assert normalise_order("big", "big", "DCBA") == ("little", "little")


@pytest.mark.parametrize("alias", ["ABDC", "BE", "", "big"])
def test_normalise_order_rejects_unknown_alias_naming_it(alias) -> None:
    with pytest.raises(ValueError, match=f"unknown order '{alias}'"):
        normalise_order(None, None, alias)


# --- bits: coils and discrete inputs ------------------------------------------------
# Function 1/2 answers are lists of 0/1; the poller packs them like registers, one
# word per bit, so a bit field is the word at its offset.


@pytest.mark.parametrize(
    ("bits_on_the_wire", "offset", "expected"),
    [
        pytest.param([1], 0, 1, id="single-coil-on"),
        pytest.param([0], 0, 0, id="single-coil-off"),
        pytest.param([0, 1, 0, 0, 1], 1, 1, id="second-of-five-on"),
        pytest.param([0, 1, 0, 0, 1], 3, 0, id="fourth-of-five-off"),
        pytest.param([0, 1, 0, 0, 1], 4, 1, id="last-of-five-on"),
        pytest.param([0] * 1999 + [1], 1999, 1, id="bit-1999-of-2000"),
    ],
)
def test_bit_decoder_reads_one_coil_at_its_offset(bits_on_the_wire, offset, expected) -> None:
    decode = make_decoder("bit", offset)

    assert decode(registers_to_bytes(bits_on_the_wire)) == (expected, Code.OK)


def test_bit_type_is_one_element_and_encodes_as_0_or_1() -> None:
    assert DATA_TYPES["bit"].words == 1
    assert (encode("bit", 1), encode("bit", 0)) == ([1], [0])


# --- bit fields of integer registers ------------------------------------------------

# (type, order, wire registers, (low bit, high bit), expected unsigned field)
BIT_FIELD_VECTORS = [
    ("uint16", "ABCD", [0x0008], (3, 3), 1),
    ("uint16", "ABCD", [0xFFF7], (3, 3), 0),
    ("uint16", "ABCD", [0x00F0], (4, 7), 15),
    ("uint16", "ABCD", [0xABCD], (4, 7), 0xC),
    ("uint16", "ABCD", [0xABCD], (12, 15), 0xA),
    ("uint16", "ABCD", [0xABCD], (0, 15), 0xABCD),
    # byte order is applied before the bits are counted: 0x0800 on the wire is 0x0008
    ("uint16", "BADC", [0x0800], (3, 3), 1),
    ("uint16", "DCBA", [0xCDAB], (4, 7), 0xC),
    # a signed register gives an unsigned field
    ("int16", "ABCD", [0xFFFF], (0, 15), 65535),
    ("int16", "ABCD", [0x8000], (15, 15), 1),
    ("int16", "ABCD", [0xFFFE], (0, 3), 14),
    # 32 and 64 bits: bit 0 is the least significant bit of the value, whatever the word order
    ("uint32", "ABCD", [0x1234, 0x5678], (16, 31), 0x1234),
    ("uint32", "CDAB", [0x5678, 0x1234], (16, 31), 0x1234),
    ("uint32", "CDAB", [0x5678, 0x1234], (0, 15), 0x5678),
    ("int32", "ABCD", [0x8000, 0x0001], (31, 31), 1),
    ("int32", "BADC", [0x0080, 0x0100], (0, 0), 1),
    ("uint64", "ABCD", [0xF000, 0x0000, 0x0000, 0x0000], (60, 63), 15),
    ("uint64", "CDAB", [0x0000, 0x0000, 0x0000, 0xF000], (60, 63), 15),
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], (0, 63), 18446744073709551615),
    ("int64", "DCBA", [0x0100, 0x0000, 0x0000, 0x0000], (0, 7), 1),
]


@pytest.mark.parametrize(("type_name", "order", "registers", "bits", "expected"), BIT_FIELD_VECTORS)
def test_bit_field_is_the_unsigned_bits_of_the_decoded_value(type_name, order, registers, bits, expected) -> None:
    byte_order, word_order = ORDERS[order]
    decode = make_decoder(type_name, 1, byte_order, word_order, bits=bits)

    assert decode(registers_to_bytes([0xFFFF] + registers + [0xFFFF])) == (as_stored(type_name, expected), Code.OK)


def test_bit_field_vectors_cover_every_integer_type() -> None:
    assert {t for t, *_ in BIT_FIELD_VECTORS} == {n for n, t in DATA_TYPES.items() if t.kind == "int"}


def test_bit_field_is_scaled_after_extraction() -> None:
    decode = make_decoder("uint16", 0, scale=10.0, offset=1.0, bits=(4, 5))

    assert decode(registers_to_bytes([0x0030])) == (31.0, Code.OK)


@pytest.mark.parametrize(
    ("spec", "type_name", "expected"),
    [
        ("3", "uint16", (3, 3)),
        (3, "uint16", (3, 3)),
        ("4-7", "uint16", (4, 7)),
        (" 4 - 7 ", "int16", (4, 7)),
        ("0-15", "int16", (0, 15)),
        ("31", "uint32", (31, 31)),
        ("32-63", "int64", (32, 63)),
    ],
)
def test_parse_bits_accepts_a_bit_or_an_inclusive_range(spec, type_name, expected) -> None:
    assert parse_bits(spec, type_name) == expected


@pytest.mark.parametrize(
    ("spec", "type_name", "message"),
    [
        ("16", "uint16", "uint16 has bits 0-15"),
        ("30-32", "int32", "int32 has bits 0-31"),
        ("7-4", "uint16", "the lowest bit comes first"),
        ("x", "uint16", "must look like"),
        ("3-", "uint16", "must look like"),
        ("-3", "uint16", "must look like"),
        ("1.5", "uint16", "must look like"),
        ("3", "float32", "bits need an integer type"),
        ("0", "bit", "bits need an integer type"),
    ],
)
def test_parse_bits_rejects_bad_spec_naming_it(spec, type_name, message) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bits(spec, type_name)
