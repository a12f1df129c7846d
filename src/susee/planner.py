"""Fields -> coalesced read requests, planned once per device at start-up.

Params read with the same function code and lying close together are merged
into one request (at most ``max_registers`` words, holes of at most
``max_gap`` words), so PAC3200's default eight params cost two requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from susee.codec import Decoder, make_decoder
from susee.profiles import ParamSpec, Profile


@dataclass(frozen=True, slots=True)
class PlannedField:
    """A param inside a block: its id and a decoder bound to its offset."""

    param_id: str
    offset_words: int
    decode: Decoder


@dataclass(frozen=True, slots=True)
class BlockRead:
    """One Modbus read request and the fields it carries."""

    function: int
    address: int
    count: int
    fields: tuple[PlannedField, ...]

    @property
    def param_ids(self) -> tuple[str, ...]:
        return tuple(f.param_id for f in self.fields)


@dataclass(frozen=True, slots=True)
class _Span:
    function: int
    address: int
    words: int
    param: ParamSpec


def plan_reads(profile: Profile, param_ids: Iterable[str]) -> tuple[BlockRead, ...]:
    """Plan the requests that read ``param_ids`` of ``profile``.

    Raises KeyError naming the first id the profile does not define.
    """
    spans = []
    for param_id in dict.fromkeys(param_ids):  # keep order, drop repeats
        param = profile.by_id.get(param_id)
        if param is None:
            raise KeyError(param_id)
        spans.append(_Span(profile.function_of(param), profile.wire_address(param), param.words, param))
    spans.sort(key=lambda s: (s.function, s.address))

    groups: list[list[_Span]] = []
    for span in spans:
        current = groups[-1] if groups else None
        if current is not None and _fits(current, span, profile):
            current.append(span)
        else:
            groups.append([span])
    return tuple(_block(group, profile) for group in groups)


def _fits(group: list[_Span], span: _Span, profile: Profile) -> bool:
    first = group[0]
    end = max(s.address + s.words for s in group)
    return (
        span.function == first.function
        and span.address - end <= profile.max_gap
        and max(end, span.address + span.words) - first.address <= profile.max_registers
    )


def _block(group: list[_Span], profile: Profile) -> BlockRead:
    start = group[0].address
    end = max(s.address + s.words for s in group)
    fields = []
    for span in group:
        byte_order, word_order = profile.orders_of(span.param)
        offset = span.address - start
        decoder = make_decoder(span.param.type, offset, byte_order, word_order, span.param.scale, span.param.offset)
        fields.append(PlannedField(span.param.id, offset, decoder))
    return BlockRead(group[0].function, start, end - start, tuple(fields))
