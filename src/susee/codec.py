"""Registers -> values: one table entry per data type, one per byte/word order.

Decoders are built once at start-up (see ``planner``); the polling loop only
calls them. A block's registers are packed once into big-endian bytes, exactly
as they travelled on the wire, and every field is unpacked from that buffer.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from susee.quality import Code


@dataclass(frozen=True)
class DataType:
    """A register data type: how many 16-bit words and which struct code."""

    name: str
    words: int
    struct_code: str


DATA_TYPES: dict[str, DataType] = {
    t.name: t
    for t in (
        DataType("uint16", 1, "H"),
        DataType("int16", 1, "h"),
        DataType("uint32", 2, "I"),
        DataType("int32", 2, "i"),
        DataType("uint64", 4, "Q"),
        DataType("int64", 4, "q"),
        DataType("float32", 2, "f"),
        DataType("float64", 4, "d"),
    )
}

# Common manual spellings of (byte order, word order) for 32-bit values, where
# A is the most significant byte. They generalise to 64-bit values.
ORDER_ALIASES: dict[str, tuple[str, str]] = {
    "ABCD": ("big", "big"),
    "CDAB": ("big", "little"),
    "BADC": ("little", "big"),
    "DCBA": ("little", "little"),
}

ORDERS = ("big", "little")

# A decoder takes the block's bytes and returns (value, code).
Decoder = Callable[[bytes], "tuple[float | None, int]"]


def registers_to_bytes(registers: list[int]) -> bytes:
    """Pack registers into the bytes that were on the wire (big-endian words)."""
    return struct.pack(f">{len(registers)}H", *registers)


def byte_permutation(words: int, byte_order: str, word_order: str) -> tuple[int, ...]:
    """Indices that reorder a field's wire bytes into big-endian value bytes."""
    word_indices = list(range(words))
    if word_order == "little":
        word_indices.reverse()
    pair = (1, 0) if byte_order == "little" else (0, 1)
    return tuple(2 * w + b for w in word_indices for b in pair)


def make_decoder(
    type_name: str,
    offset_words: int,
    byte_order: str = "big",
    word_order: str = "big",
    scale: float = 1.0,
    offset: float = 0.0,
) -> Decoder:
    """Build a decoder for one field located ``offset_words`` into a block."""
    data_type = DATA_TYPES[type_name]
    unpacker = struct.Struct(">" + data_type.struct_code)
    start = 2 * offset_words
    end = start + 2 * data_type.words
    permutation = byte_permutation(data_type.words, byte_order, word_order)
    identity = permutation == tuple(range(2 * data_type.words))
    unscaled = scale == 1.0 and offset == 0.0

    def decode(buffer: bytes) -> tuple[float | None, int]:
        if identity:
            (raw,) = unpacker.unpack_from(buffer, start)
        else:
            field = buffer[start:end]
            (raw,) = unpacker.unpack(bytes(field[i] for i in permutation))
        value = raw if unscaled else raw * scale + offset
        if isinstance(value, float) and not math.isfinite(value):
            return None, Code.VALUE_NAN
        return value, Code.OK

    return decode


def encode(type_name: str, value: float, byte_order: str = "big", word_order: str = "big") -> list[int]:
    """Inverse of decoding: the registers a device would send for ``value``.

    Used by the simulator and by tests; scale and offset are not applied.
    """
    data_type = DATA_TYPES[type_name]
    if data_type.struct_code in "fd":
        raw = struct.pack(">" + data_type.struct_code, float(value))
    else:
        raw = struct.pack(">" + data_type.struct_code, int(value))
    permutation = byte_permutation(data_type.words, byte_order, word_order)
    wire = bytearray(len(raw))
    for value_index, wire_index in enumerate(permutation):
        wire[wire_index] = raw[value_index]
    return list(struct.unpack(f">{data_type.words}H", bytes(wire)))


def normalise_order(byte_order: str | None, word_order: str | None, alias: str | None) -> tuple[str, str]:
    """Resolve an order given as an ABCD-style alias or as two big/little words."""
    if alias is not None:
        key = alias.upper()
        if key not in ORDER_ALIASES:
            raise ValueError(f"unknown order {alias!r}; expected one of {', '.join(ORDER_ALIASES)}")
        return ORDER_ALIASES[key]
    return byte_order or "big", word_order or "big"

