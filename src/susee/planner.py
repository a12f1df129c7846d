"""Fields -> coalesced read requests, planned once per device at start-up.

Params read with the same function code and lying close together are merged
into one request (at most ``max_registers`` words, or ``max_bits`` bits for
coils and discrete inputs, holes of at most ``max_gap``), so PAC3200's
default eight params cost two requests.

A param with a ``scale_register`` (value = raw x 10^exponent) makes the
planner add the exponent register as a hidden field, coalesced like any
other; ``finisher`` returns the one function the poller calls at the end of a
tick to apply the exponents and drop the hidden rows. Without scale
registers there is no finisher and the poller does nothing extra.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from susee.codec import BIT_FUNCTIONS, BlockDecoder, Decoder, FieldFormat, make_block_decoder
from susee.profiles import ParamSpec, Profile
from susee.quality import Code
from susee.sample import Sample

# Hidden fields are named so that they can never clash with a param id
# (at most 20 characters) nor reach the database unnoticed.
_HIDDEN_PREFIX = "(scale register of) "

Finish = Callable[[list[Sample]], list[Sample]]


class PlanError(ValueError):
    """A param cannot be read with the numbering asked for; the message names it."""


@dataclass(frozen=True, slots=True)
class Rescale:
    """How a param's raw value becomes its value: raw x 10^exponent x scale + offset."""

    exponent_id: str
    scale: float
    offset: float


@dataclass(frozen=True, slots=True)
class PlannedField:
    """A param inside a block: its id and a decoder bound to its offset.

    ``hidden`` fields (scale registers) are read for other params and never
    stored; ``rescale`` is set on a param whose value needs such an exponent.
    """

    param_id: str
    offset_words: int
    decode: Decoder
    hidden: bool = False
    rescale: Rescale | None = None


@dataclass(frozen=True, slots=True)
class BlockRead:
    """One Modbus read request and the fields it carries.

    For function 1 and 2, ``address`` and ``count`` are in bits.
    ``decode_values`` decodes every field at once (see ``codec.make_block_decoder``);
    ``param_ids`` lists every field's id, hidden ones included: a failed read
    yields a row for each.
    """

    function: int
    address: int
    count: int
    fields: tuple[PlannedField, ...]
    decode_values: BlockDecoder = field(compare=False, repr=False)
    param_ids: tuple[str, ...] = field(compare=False, repr=False)

    @property
    def visible_ids(self) -> tuple[str, ...]:
        """The ids of the params this request carries for storage."""
        return tuple(f.param_id for f in self.fields if not f.hidden)


@dataclass(frozen=True, slots=True)
class _Span:
    """A field to place in a block, its decoder still to bind to an offset."""

    function: int
    address: int
    words: int
    field_id: str
    format: FieldFormat
    hidden: bool = False
    rescale: Rescale | None = None


def plan_reads(profile: Profile, param_ids: Iterable[str], address_base: int | None = None) -> tuple[BlockRead, ...]:
    """Plan the requests that read ``param_ids`` of ``profile``.

    ``address_base`` overrides the profile's register numbering (a device
    setting). Raises KeyError naming the first id the profile does not
    define, PlanError naming a param whose registers fall outside 0..65535.
    """
    spans: dict[object, _Span] = {}
    for param_id in dict.fromkeys(param_ids):  # keep order, drop repeats
        param = profile.by_id.get(param_id)
        if param is None:
            raise KeyError(param_id)
        problem = profile.address_problem(param, address_base)
        if problem:
            raise PlanError(f"param {param_id!r}: {problem}")
        rescale = None
        if param.scale_register is not None:
            exponent = _exponent_span(profile, param, address_base)
            spans.setdefault(exponent.field_id, exponent)
            rescale = Rescale(exponent.field_id, param.scale, param.offset)
        spans[("param", param_id)] = _param_span(profile, param, address_base, rescale)
    ordered = sorted(spans.values(), key=lambda s: (s.function, s.address, s.hidden))

    groups: list[list[_Span]] = []
    for span in ordered:
        current = groups[-1] if groups else None
        if current is not None and _fits(current, span, profile):
            current.append(span)
        else:
            groups.append([span])
    return tuple(_block(group) for group in groups)


def finisher(blocks: Iterable[BlockRead]) -> Finish | None:
    """The end-of-tick step for ``blocks``: None when no param has a scale register.

    The returned function takes the tick's samples (hidden exponents included,
    as the poller produced them) and returns the rows to store: each rescaled
    param gets raw x 10^exponent x scale + offset, or NULL with the exponent
    read's Code when that read failed; the exponent rows are dropped.
    """
    rescales = {f.param_id: f.rescale for b in blocks for f in b.fields if f.rescale is not None}
    if not rescales:
        return None
    hidden = frozenset(r.exponent_id for r in rescales.values())

    def finish(samples: list[Sample]) -> list[Sample]:
        exponents = {s.param_id: s for s in samples if s.param_id in hidden}
        stored = []
        for sample in samples:
            if sample.param_id in hidden:
                continue
            rescale = rescales.get(sample.param_id)
            if rescale is not None:
                sample = _rescaled(sample, exponents.get(rescale.exponent_id), rescale)
            stored.append(sample)
        return stored

    return finish


def _rescaled(sample: Sample, exponent: Sample | None, rescale: Rescale) -> Sample:
    if exponent is None:  # cannot happen with a plan from plan_reads
        return sample._replace(value=None, code=sample.code | Code.DRIVER_ERROR)
    if exponent.code or exponent.value is None:
        return sample._replace(value=None, code=sample.code | exponent.code)
    if sample.value is None:
        return sample
    try:
        value = _times_power_of_ten(sample.value, int(exponent.value)) * rescale.scale + rescale.offset
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        return sample._replace(value=None, code=sample.code | Code.VALUE_NAN)
    return sample._replace(value=value)


def _times_power_of_ten(raw: float, exponent: int) -> float:
    """``raw`` x 10^exponent, dividing for a negative exponent: 23073 / 100 is 230.73 exactly,
    where 23073 * 0.01 is 230.73000000000002 (0.01 has no exact binary form, 100 has)."""
    return raw * 10.0 ** exponent if exponent >= 0 else raw / 10.0 ** -exponent


def _param_span(profile: Profile, param: ParamSpec, address_base: int | None, rescale: Rescale | None) -> _Span:
    byte_order, word_order = profile.orders_of(param)
    # With a scale register, scale and offset apply after the exponent (in the finisher).
    scale, offset = (1.0, 0.0) if rescale is not None else (param.scale, param.offset)
    fmt = FieldFormat(param.type, byte_order, word_order, scale, offset, param.bit_field)
    return _Span(profile.function_of(param), profile.wire_address(param, address_base), param.words,
                 param.id, fmt, rescale=rescale)


def _exponent_span(profile: Profile, param: ParamSpec, address_base: int | None) -> _Span:
    register = param.scale_register
    assert register is not None
    function = register.function or profile.function_of(param)
    address = profile.scale_wire_address(param, address_base)
    byte_order, word_order = profile.orders_of(param)
    field_id = f"{_HIDDEN_PREFIX}fc{function} {address} {register.type} {byte_order}/{word_order}"
    return _Span(function, address, register.words, field_id, FieldFormat(register.type, byte_order, word_order),
                 hidden=True)


def _fits(group: list[_Span], span: _Span, profile: Profile) -> bool:
    first = group[0]
    end = max(s.address + s.words for s in group)
    limit = profile.max_bits if first.function in BIT_FUNCTIONS else profile.max_registers
    return (
        span.function == first.function
        and span.address - end <= profile.max_gap
        and max(end, span.address + span.words) - first.address <= limit
    )


def _block(group: list[_Span]) -> BlockRead:
    start = group[0].address
    end = max(s.address + s.words for s in group)
    fields = tuple(
        PlannedField(s.field_id, s.address - start, s.format.decoder(s.address - start), s.hidden, s.rescale)
        for s in group
    )
    decode_values = make_block_decoder([(s.format, s.address - start) for s in group])
    return BlockRead(group[0].function, start, end - start, fields, decode_values, tuple(s.field_id for s in group))
