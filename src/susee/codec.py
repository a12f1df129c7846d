"""Registers -> values: one table entry per data type, one per byte/word order.

Decoders are built once at start-up (see ``planner``); the polling loop only
calls them. A block's registers are big-endian bytes, exactly as they
travelled on the wire, and every field is unpacked from that buffer. A block
of bits (function 1 or 2) arrives as 0/1 ints and is packed into words, one
word per bit, so a ``bit`` field is simply the word at its offset.

Two kinds of decoder: ``make_decoder`` decodes one field; ``make_block_decoder``
decodes every field of a block in one go, with one precompiled ``struct`` for
the fields stored in wire order (the PAC3200's floats: one call for the whole
block instead of one per field). They give the same values; the block decoder
is the polling path, the field decoder its reference and its fallback.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

from susee.quality import Code


@dataclass(frozen=True)
class DataType:
    """A data type: how many block elements (16-bit words), which struct code, which kind.

    ``kind`` is "int" (bit fields may be extracted), "float" (NaN and infinity
    become Code 16) or "bit" (one coil or discrete input: function 1 or 2 sends
    it as 0/1, the poller packs it as one word like a register).
    """

    name: str
    words: int
    struct_code: str
    kind: str = "int"


DATA_TYPES: dict[str, DataType] = {
    t.name: t
    for t in (
        DataType("uint16", 1, "H"),
        DataType("int16", 1, "h"),
        DataType("uint32", 2, "I"),
        DataType("int32", 2, "i"),
        DataType("uint64", 4, "Q"),
        DataType("int64", 4, "q"),
        DataType("float32", 2, "f", "float"),
        DataType("float64", 4, "d", "float"),
        DataType("bit", 1, "H", "bit"),
    )
}

# Function codes that read bits (coils, discrete inputs) rather than registers.
BIT_FUNCTIONS = frozenset({1, 2})

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
# A block decoder takes the block's bytes and returns every field's value in
# field order, None for a value that is not finite (Code 16).
BlockDecoder = Callable[[bytes], "list[float | int | None]"]


@dataclass(frozen=True, slots=True)
class FieldFormat:
    """How one field is encoded: its type, byte and word order, scale and offset, bit field."""

    type_name: str
    byte_order: str = "big"
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    bits: tuple[int, int] | None = None

    def decoder(self, offset_words: int) -> Decoder:
        """The field decoder of this format at ``offset_words`` into a block."""
        return make_decoder(self.type_name, offset_words, self.byte_order, self.word_order,
                            self.scale, self.offset, self.bits)

    @property
    def in_wire_order(self) -> bool:
        """True if the value's bytes are big-endian on the wire and whole (no bit field)."""
        words = DATA_TYPES[self.type_name].words
        return self.bits is None and byte_permutation(words, self.byte_order, self.word_order) == tuple(range(2 * words))


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
    bits: tuple[int, int] | None = None,
) -> Decoder:
    """Build a decoder for one field located ``offset_words`` into a block.

    ``bits`` = (lowest, highest), both inclusive, bit 0 being the least
    significant bit of the value: the unsigned field between them is returned
    (before scale and offset), whatever the signedness of ``type_name``.
    """
    data_type = DATA_TYPES[type_name]
    code = data_type.struct_code.upper() if bits is not None else data_type.struct_code
    unpacker = struct.Struct(">" + code)
    start = 2 * offset_words
    end = start + 2 * data_type.words
    permutation = byte_permutation(data_type.words, byte_order, word_order)
    identity = permutation == tuple(range(2 * data_type.words))
    unscaled = scale == 1.0 and offset == 0.0
    # A 64-bit integer is returned as the DOUBLE it is stored as: 0xFFFFFFFFFFFFFFFF
    # ("not available" on many meters) is above what an SQLite INTEGER holds.
    wide = data_type.kind == "int" and data_type.words == 4
    shift, mask = (bits[0], (1 << (bits[1] - bits[0] + 1)) - 1) if bits is not None else (0, -1)

    def decode(buffer: bytes) -> tuple[float | None, int]:
        if identity:
            (raw,) = unpacker.unpack_from(buffer, start)
        else:
            field = buffer[start:end]
            (raw,) = unpacker.unpack(bytes(field[i] for i in permutation))
        if bits is not None:
            raw = (raw >> shift) & mask
        value = raw if unscaled else raw * scale + offset
        if wide:
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            return None, Code.VALUE_NAN
        return value, Code.OK

    return decode


def make_block_decoder(fields: list[tuple[FieldFormat, int]]) -> BlockDecoder:
    """One decoder for the ``(format, offset_words)`` fields of a block; same values as ``make_decoder``.

    Fields in wire order that follow one another without overlapping are
    unpacked by one ``struct`` (pad bytes skip the gaps); any other field (a
    bit field, a swapped order, an overlap) by its own field decoder.
    Floats that are NaN or infinite, before or after scaling, become None.
    """
    codes = [">"]
    unpacked: list[int] = []  # indices of the fields the struct unpacks, in its order
    by_field: list[tuple[int, Decoder]] = []  # the others
    end = 0  # bytes the struct covers so far
    for index, (fmt, offset_words) in enumerate(fields):
        start = 2 * offset_words
        if fmt.in_wire_order and start >= end:
            codes.append(f"{start - end}x{DATA_TYPES[fmt.type_name].struct_code}")
            end = start + 2 * DATA_TYPES[fmt.type_name].words
            unpacked.append(index)
        else:
            by_field.append((index, fmt.decoder(offset_words)))
    unpack = struct.Struct("".join(codes)).unpack_from
    floats = tuple(i for i in unpacked if DATA_TYPES[fields[i][0].type_name].kind == "float")
    wide = tuple(i for i in unpacked if DATA_TYPES[fields[i][0].type_name].struct_code in "qQ")  # as make_decoder
    scaled = tuple((i, fields[i][0].scale, fields[i][0].offset) for i in unpacked
                   if fields[i][0].scale != 1.0 or fields[i][0].offset != 0.0)
    count = len(fields)
    in_order = unpacked == list(range(count))

    def decode(buffer: bytes) -> list[float | int | None]:
        if in_order:
            values: list = list(unpack(buffer))
        else:
            values = [None] * count
            for index, value in zip(unpacked, unpack(buffer)):
                values[index] = value
        for index in wide:
            values[index] = float(values[index])
        for index in floats:
            value = values[index]
            if value - value:  # NaN or infinite (inf - inf is NaN, and NaN is true)
                values[index] = None
        for index, scale, offset in scaled:
            value = values[index]
            if value is not None:
                value = value * scale + offset
                values[index] = value if value - value == 0 else None  # scaled out of range
        for index, decoder in by_field:
            value, code = decoder(buffer)
            values[index] = None if code else value
        return values

    return decode


def parse_bits(spec: str | int, type_name: str) -> tuple[int, int]:
    """Parse a bit-field spec, "3" or "4-7" (inclusive, bit 0 = least significant).

    Raises ValueError naming the problem when the spec is malformed, the type
    is not an integer type, or a bit lies beyond the type's width.
    """
    data_type = DATA_TYPES[type_name]
    if data_type.kind != "int":
        integer_types = ", ".join(t.name for t in DATA_TYPES.values() if t.kind == "int")
        raise ValueError(f"bits need an integer type ({integer_types}), not {type_name!r}")
    text = str(spec).strip()
    low_text, dash, high_text = text.partition("-")
    if not low_text.strip().isdigit() or (dash and not high_text.strip().isdigit()):
        raise ValueError(f"bits {spec!r} must look like \"3\" or \"4-7\"")
    low = int(low_text)
    high = int(high_text) if dash else low
    width = 16 * data_type.words
    if low > high:
        raise ValueError(f"bits {spec!r}: the lowest bit comes first")
    if high >= width:
        raise ValueError(f"bits {spec!r}: {type_name} has bits 0-{width - 1}")
    return low, high


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

