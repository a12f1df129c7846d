"""The block decoder gives, for every field of a block, exactly what its field decoder gives.

The field decoders are checked against hand-written vectors in test_codec;
the block decoder is the polling path, so it is checked against them on the
layouts the planner makes: every type and order, gaps, overlaps, bit fields,
scale and offset, NaN and infinity, and the shipped profiles' real blocks.
"""

from __future__ import annotations

import random
import struct

import pytest

from susee.codec import DATA_TYPES, FieldFormat, make_block_decoder
from susee.planner import plan_reads
from susee.profiles import builtin_names, load_profile

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]

# Words that decode as NaN / +inf / -inf in a big-endian float32 or float64, and ordinary ones.
SPECIAL_WORDS = [0x7FC0, 0x7F80, 0xFF80, 0x7FF8, 0x7FF0, 0xFFF0, 0x0000, 0xFFFF, 0x4366, 0x8000]


def expected_values(fields: list[tuple[FieldFormat, int]], buffer: bytes) -> list:
    """What the field decoders say, with None where they give a code."""
    values = []
    for fmt, offset in fields:
        value, code = fmt.decoder(offset)(buffer)
        values.append(None if code else value)
    return values


def random_buffer(rng: random.Random, words: int) -> bytes:
    return struct.pack(f">{words}H", *(rng.choice(SPECIAL_WORDS) if rng.random() < 0.3 else rng.randrange(65536)
                                       for _ in range(words)))


def same(got: list, want: list) -> bool:
    return len(got) == len(want) and all(type(g) is type(w) and g == w for g, w in zip(got, want))


LAYOUTS = {
    # name: fields as (format, offset in words)
    "adjacent floats (PAC3200 voltages)": [(FieldFormat("float32"), 2 * i) for i in range(6)],
    "floats with gaps": [(FieldFormat("float32"), 0), (FieldFormat("float32"), 6), (FieldFormat("float64"), 20)],
    "every type in wire order": [(FieldFormat(name), 4 * i) for i, name in enumerate(DATA_TYPES) if name != "bit"],
    "swapped words in the middle": [(FieldFormat("float32"), 0), (FieldFormat("float32", "big", "little"), 2),
                                    (FieldFormat("float32"), 4)],
    "overlap: a bit field of the word before": [(FieldFormat("uint16"), 0), (FieldFormat("uint16", bits=(3, 5)), 0),
                                               (FieldFormat("uint16"), 1)],
    "overlap: the same register twice": [(FieldFormat("int32"), 0), (FieldFormat("uint32"), 0)],
    "scaled and offset": [(FieldFormat("int16", scale=0.1), 0), (FieldFormat("uint32", scale=10.0, offset=-5.0), 1),
                          (FieldFormat("float32", scale=1e300), 3), (FieldFormat("float64", offset=1.5), 5)],
    "bits (coils) as words": [(FieldFormat("bit"), i) for i in (0, 1, 2, 7, 8)],
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_block_decoder_matches_field_decoders(name: str) -> None:
    fields = LAYOUTS[name]
    words = max(offset + DATA_TYPES[fmt.type_name].words for fmt, offset in fields)
    decode = make_block_decoder(fields)
    rng = random.Random(name)
    for _ in range(500):
        buffer = random_buffer(rng, words)
        assert same(decode(buffer), expected_values(fields, buffer)), buffer.hex()


@pytest.mark.parametrize("byte_order, word_order", ORDERS)
@pytest.mark.parametrize("type_name", [name for name in DATA_TYPES if name != "bit"])
def test_block_decoder_matches_field_decoders_for_every_type_and_order(type_name, byte_order, word_order) -> None:
    words = DATA_TYPES[type_name].words
    fields = [(FieldFormat(type_name, byte_order, word_order), 1), (FieldFormat("uint16"), 1 + words),
              (FieldFormat(type_name, byte_order, word_order, scale=0.5, offset=2.0), 2 + words)]
    decode = make_block_decoder(fields)
    rng = random.Random(f"{type_name}{byte_order}{word_order}")
    for _ in range(300):
        buffer = random_buffer(rng, 2 + 2 * words)
        assert same(decode(buffer), expected_values(fields, buffer)), buffer.hex()


@pytest.mark.parametrize("buffer, expected", [
    (struct.pack(">ff", float("nan"), 1.5), [None, 1.5]),
    (struct.pack(">ff", float("inf"), float("-inf")), [None, None]),
    (struct.pack(">ff", 3.4e38, -0.0), [None, -0.0]),  # x 1e300 overflows to inf; -0.0 stays
])
def test_not_finite_values_are_none_before_and_after_scaling(buffer: bytes, expected: list) -> None:
    decode = make_block_decoder([(FieldFormat("float32", scale=1e300), 0), (FieldFormat("float32"), 2)])
    assert decode(buffer) == expected


@pytest.mark.parametrize("profile_name", builtin_names())
def test_block_decoder_matches_field_decoders_on_every_shipped_profile(profile_name: str) -> None:
    profile = load_profile(profile_name)
    blocks = plan_reads(profile, [param.id for param in profile.params])
    rng = random.Random(profile_name)
    for block in blocks:
        words = block.count
        for _ in range(100):
            buffer = random_buffer(rng, words)
            want = []
            for planned in block.fields:
                value, code = planned.decode(buffer)
                want.append(None if code else value)
            assert same(block.decode_values(buffer), want), (profile_name, block.address, buffer.hex())
        assert block.param_ids == tuple(planned.param_id for planned in block.fields)
