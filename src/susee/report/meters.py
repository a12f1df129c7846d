"""Which meters and counters a report covers, and how each is computed from Q15 series.

A *meter* of the report is a device, a virtual meter (``virtual_meters:``) or
a tag group (``--by tag:NAME``); a *counter* is a param the device's profile
marks ``kind: counter`` and the device reads, or a profile ``derived``
counter whose parts the device reads. Everything asked for is checked here,
before any database access, and a ``Culprit`` names what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from susee.devices import DevicePlan
from susee.report.aggregate import Composite, combine
from susee.report.energy import CounterRules
from susee.expressions import parse_expression
from susee.report.groups import tag_groups


class Culprit(ValueError):
    """A report argument names something that does not exist or is not a counter."""


@dataclass(frozen=True)
class Counter:
    """How one device's counter is computed: (sign, stored param, rules) terms."""

    device: str
    param: str
    unit: str
    terms: tuple[tuple[int, str, CounterRules], ...]


@dataclass(frozen=True)
class Meter:
    """A row label of the report and the (sign, device) terms it sums."""

    name: str
    terms: tuple[tuple[int, str], ...]
    group: bool = False  # a tag group sums the members that have a counter; a virtual meter needs all


def device_counters(plan: DevicePlan, sample_time_s: float) -> dict[str, Counter]:
    """The counters a device can report: its read counters and the derived ones whose parts it reads."""
    profile = plan.profile
    if profile is None:
        return {}
    read = set(plan.param_ids)

    def rules(param: str) -> CounterRules:
        spec = profile.by_id[param]
        return CounterRules(sample_time_s, spec.max_power, spec.modulus)

    counters = {
        pid: Counter(plan.id, pid, profile.by_id[pid].unit, ((1, pid, rules(pid)),))
        for pid in plan.param_ids if profile.by_id[pid].kind == "counter"
    }
    for name in profile.derived:
        terms = profile.derived_terms(name)
        if all(part in read for _, part in terms):
            unit = profile.by_id[terms[0][1]].unit
            counters[name] = Counter(plan.id, name, unit, tuple((sign, part, rules(part)) for sign, part in terms))
    return counters


def default_params(counters: Mapping[str, Mapping[str, Counter]]) -> list[str]:
    """Without --params: every derived counter available, and the read counters that are not its parts."""
    chosen: list[str] = []
    for by_param in counters.values():
        parts = {part for counter in by_param.values() if len(counter.terms) > 1 for _, part, _ in counter.terms}
        for param in by_param:
            if param not in parts and param not in chosen:
                chosen.append(param)
    return chosen


def check_params(params: Sequence[str], counters: Mapping[str, Mapping[str, Counter]],
                 plans: Sequence[DevicePlan]) -> None:
    """Culprit for a param no selected device can report as a counter."""
    for param in params:
        if any(param in by_param for by_param in counters.values()):
            continue
        for plan in plans:
            spec = plan.profile.by_id.get(param) if plan.profile else None
            if spec is not None and spec.kind != "counter":
                raise Culprit(f"param {param!r}: not a counter in profile {plan.profile.name!r} "  # type: ignore[union-attr]
                              f"(kind {spec.kind}); a report sums counters only")
            if spec is not None or (plan.profile and param in plan.profile.derived):
                raise Culprit(f"param {param!r}: no device reads it (or all the parts of it); "
                              "add it to a device's params")
        raise Culprit(f"param {param!r}: unknown: not a param of any device's profile")


def meters(by: str, device_ids: Sequence[str], tags: Mapping[str, Mapping[str, str]],
           virtual: Mapping[str, str]) -> list[Meter]:
    """The report's rows: devices then virtual meters (``by=device``), or tag groups (``by=tag:NAME``)."""
    if by == "device":
        rows = [Meter(device, ((1, device),)) for device in device_ids]
        rows += [Meter(name, tuple(parse_expression(expression))) for name, expression in virtual.items()]
        return rows
    kind, _, tag = by.partition(":")
    if kind != "tag" or not tag:
        raise Culprit(f"--by {by!r}: expected device or tag:NAME")
    if not any(tag in tags.get(device, {}) for device in device_ids):
        known = sorted({name for device in device_ids for name in tags.get(device, {})})
        raise Culprit(f"--by {by!r}: tag {tag!r} is on no device" + (f" (tags: {', '.join(known)})" if known else ""))
    groups = tag_groups({device: dict(tags.get(device, {})) for device in device_ids}, tag)
    return [Meter(value, tuple((1, device) for device in members), group=True) for value, members in groups.items()]


def select(rows: list[Meter], plans: Sequence[DevicePlan], wanted: Sequence[str]) -> tuple[list[Meter], list]:
    """Keep the report rows named in ``wanted`` (--devices) and the devices they need."""
    names = {meter.name for meter in rows}
    unknown = [name for name in wanted if name not in names]
    if unknown:
        raise Culprit(f"--devices: unknown device or virtual meter {unknown[0]!r}")
    kept = [meter for meter in rows if meter.name in wanted]
    devices = {device for meter in kept for _, device in meter.terms}
    return kept, [plan for plan in plans if plan.id in devices]


def virtual_counter(meter: Meter, param: str, composites: Mapping[str, Mapping[str, Composite]],
                    counters: Mapping[str, Mapping[str, Counter]]) -> tuple[str, Composite] | None:
    """(unit, composite) of ``param`` for a virtual meter; None unless every part device has the counter."""
    parts = []
    for sign, device in meter.terms:
        composite = composites.get(device, {}).get(param)
        if composite is None:
            return None
        parts.append((sign, composite))
    return counters[meter.terms[0][1]][param].unit, combine(parts)
