"""``susee profile show NAME|FILE`` and ``susee profile check FILE``.

``show`` prints a profile's header, its params as a table and the requests
its default set costs; ``check`` validates a user profile and prints the same
requests, or the error (naming file, param and field) and exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from susee.codec import ORDER_ALIASES
from susee.planner import BlockRead, plan_reads
from susee.profiles import ParamSpec, Profile, ProfileError, load_profile

EXIT_INVALID = 2
_ALIAS_OF = {orders: alias for alias, orders in ORDER_ALIASES.items()}
_COLUMNS = ("id", "address", "fc", "type", "order", "bits", "scale/offset", "unit", "acronym", "description")


def show(reference: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the profile ``reference`` (built-in name or file) as a table."""
    out = out or sys.stdout
    profile = _load_or_report(reference, err)
    if profile is None:
        return EXIT_INVALID
    default_order = _alias(profile.byte_order, profile.word_order)
    print(f"profile {profile.name}: {profile.description}", file=out)
    if profile.source:
        print(f"source: {profile.source}", file=out)
    print(f"defaults: function {profile.function}, order {default_order}, address_base {profile.address_base}, "
          f"max_registers {profile.max_registers}, max_bits {profile.max_bits}, max_gap {profile.max_gap}", file=out)
    print(f"{len(profile.params)} params; default set: {', '.join(profile.default_ids)}", file=out)
    print(file=out)
    _print_table([_row(profile, p) for p in profile.params], out)
    print(file=out)
    _print_requests(profile, out)
    return 0


def check(reference: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Validate a profile; print OK and its default set's requests, or the error (exit 2)."""
    out = out or sys.stdout
    profile = _load_or_report(reference, err)
    if profile is None:
        return EXIT_INVALID
    print(f"OK: {reference}: profile {profile.name!r}, {len(profile.params)} params", file=out)
    _print_requests(profile, out)
    return 0


def _load_or_report(reference: str, err: TextIO | None) -> Profile | None:
    """The profile, or None after printing why it cannot be loaded."""
    try:
        return load_profile(reference)
    except ProfileError as exc:
        print(f"profile error: {exc}", file=err or sys.stderr)
        return None


def _print_requests(profile: Profile, out: TextIO) -> None:
    ids = profile.default_ids
    blocks = plan_reads(profile, ids)
    print(f"default set: {len(ids)} params in {len(blocks)} request(s) (wire addresses):", file=out)
    for block in blocks:
        print(f"  {_request(block)}", file=out)


def _request(block: BlockRead) -> str:
    unit = "bits" if block.function in (1, 2) else "registers"
    carried = [
        f"10^[{block.address + f.offset_words}]" if f.hidden else f.param_id for f in block.fields
    ]
    return f"fc{block.function} {block.address}+{block.count} {unit}: {' '.join(carried)}"


def _row(profile: Profile, param: ParamSpec) -> tuple[str, ...]:
    order = "-" if param.type == "bit" else _alias(*profile.orders_of(param))
    scaling = []
    if param.scale_register is not None:
        scaling.append(f"x10^[{param.scale_register.address}]")
    if param.scale != 1.0:
        scaling.append(f"x{param.scale:g}")
    if param.offset:
        scaling.append(f"{param.offset:+g}")
    return (
        param.id,
        str(param.address),
        str(profile.function_of(param)),
        param.type,
        order,
        "-" if param.bits is None else str(param.bits),
        " ".join(scaling) or "-",
        param.unit,
        param.acronym,
        param.descr_eng or param.descr_ita,
    )


def _alias(byte_order: str, word_order: str) -> str:
    return _ALIAS_OF.get((byte_order, word_order), f"{byte_order}/{word_order}")


def _print_table(rows: Sequence[tuple[str, ...]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in (_COLUMNS, *rows)) for i in range(len(_COLUMNS))]
    right = {1, 2}  # numbers
    for row in (_COLUMNS, *rows):
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        print("  ".join(cells).rstrip(), file=out)
