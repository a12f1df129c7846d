"""SQL literals for the MariaDB hot path, written by hand and injection-safe by construction.

The driver's escaping costs about 2 µs per row (one call per value, through
a type lookup); the rows of a batch are only ever numbers, NULL, a date this
module formats itself, and ids that were validated at load time. So they are
written here directly, each kind with the rule that makes it safe:

- numbers: ``repr()`` of a finite float with ``e0`` appended when it has no
  exponent (exactly the literal PyMySQL's ``escape_float`` writes, so the
  server parses the same approximate-value literal and stores the same
  DOUBLE), ``str()`` of an int; None is ``NULL``. Anything else is refused.
- dates: ``'YYYY-MM-DD HH:MM:SS.ffffff'`` from ``format_tick``: digits and
  separators only.
- ids (idDevice, idParam): quoted as they are, after a check that they match
  ``ID_PATTERN`` in full (letters, digits, ``_ . : -``, at most 20): no quote,
  backslash, space or control character can ever reach a statement. The
  check runs once per distinct id (the quoted literal is cached). An id that
  fails it raises UnsafeIdentifier: nothing of the batch is committed (the
  sink drops the session) and the writer stops the service naming the id. It
  cannot come from a validated site; only a spool written by a version that
  did not check param ids could hold one.

Everything else (migrations, params, reads) stays parameterised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from susee.config import ID_PATTERN
from susee.quality import Code
from susee.sinks import format_tick

if TYPE_CHECKING:
    from susee.sample import Sample

# Distinct ids remembered with their literal. A site has a few thousand
# devices x a few params; a spool from other sites could hold more, so the
# cache is cleared rather than grown past this.
MAX_CACHED_IDS = 200_000
DATE_PATTERN = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")


class UnsafeIdentifier(ValueError):
    """An id that must never be written into SQL (config and profiles reject it at load time)."""


def number(value: object) -> str:
    """A Value/Delay/Code literal: a finite float, an int (bool, IntFlag) or None (``NULL``)."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        value = float(value)  # a subclass's repr could be anything: float's own
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number: store NULL with Code value_NaN instead")
        text = repr(value)
        return text if "e" in text else text + "e0"
    if isinstance(value, int):
        return str(int(value))
    raise TypeError(f"{type(value).__name__} {value!r} is not a number to write into SQL")


def quoted_date(text: str) -> str:
    """``'2021-02-18 10:30:00.000000'`` from ``format_tick``'s text, checked to hold no quote."""
    if type(text) is not str or DATE_PATTERN.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a 'YYYY-MM-DD HH:MM:SS.ffffff' date")
    return "'" + text + "'"


class IdLiterals:
    """Quoted SQL literals of validated ids, checked once per distinct id."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        literal = self._cache.get(text)
        if literal is None:
            literal = quoted_id(text)
            if len(self._cache) >= MAX_CACHED_IDS:
                self._cache.clear()
            self._cache[text] = literal
        return literal


def quoted_id(text: str) -> str:
    """``'d01'``: an id as a string literal, or UnsafeIdentifier if it does not match ``ID_PATTERN``."""
    # type() and fullmatch: a str subclass or a trailing newline ('$' would allow one) never pass.
    if type(text) is not str or ID_PATTERN.fullmatch(text) is None:
        raise UnsafeIdentifier(f"id {text!r} does not match {ID_PATTERN.pattern}: refusing to write it into SQL")
    return "'" + text + "'"


class RowLiterals:
    """Samples -> ``(idDevice, idParam, Date, Delay, Code, Value)`` row literals.

    What is stored is exactly what ``sample_rows`` prepares for the SQLite
    sink: a non-finite value becomes NULL with ``Code.VALUE_NAN`` OR-ed in;
    Last gets the newest sample of each (device, param), the later one on a
    tie. The cheap parts are cached: the ``('dev','param',`` prefix per key
    (ids checked once), the ``'date',delay,code,`` middle shared by the
    params of one request (same tick, Delay and Code).
    """

    # The column order of the row literals: the per-key part first, then what
    # the params of one request share, the value last.
    COLUMNS = "(idDevice, idParam, `Date`, Delay, Code, Value)"

    __slots__ = ("_ids", "_prefixes")

    def __init__(self) -> None:
        self._ids = IdLiterals()
        self._prefixes: dict[tuple[str, str], str] = {}

    def raw(self, samples: Iterable[Sample], newest: dict[str, tuple[float, str]]) -> list[str]:
        """The row literals of ``samples`` in order; ``newest`` keeps (tick, row) of the newest per key."""
        rows: list[str] = []
        append = rows.append
        prefixes = self._prefixes
        held_of = newest.get
        dates: dict[float, str] = {}
        isfinite = math.isfinite
        nan_bit = int(Code.VALUE_NAN)
        # The middle of the previous row and what it was made of (the params of one
        # request come one after the other and share it).
        middle, middle_tick, middle_delay, middle_code = "", None, None, None
        for sample in samples:
            tick, value, code, delay = sample.tick_s, sample.value, sample.code, sample.delay_ms
            if value is None:
                literal = "NULL"
            elif type(value) is float and isfinite(value):  # number(), inlined for the common case
                literal = repr(value)
                if "e" not in literal:
                    literal += "e0"  # an approximate-value (DOUBLE) literal, as PyMySQL writes it
            elif isinstance(value, float) and not isfinite(value):
                literal = "NULL"  # NaN or infinite: no database takes it, and the Code says why
                code = code | nan_bit
            else:
                literal = number(value)
            if code != middle_code or delay != middle_delay or tick != middle_tick:
                date = dates.get(tick)
                if date is None:
                    date = dates[tick] = quoted_date(format_tick(tick))
                middle = f"{date},{number(float(delay))},{number(int(code))},"
                middle_tick, middle_delay, middle_code = tick, delay, code
            prefix = prefixes.get((sample.device_id, sample.param_id))
            if prefix is None:
                prefix = self._prefix(sample.device_id, sample.param_id)
            row = prefix + middle + literal + ")"
            append(row)
            held = held_of(prefix)
            if held is None or tick >= held[0]:
                newest[prefix] = (tick, row)
        return rows

    def _prefix(self, device_id: str, param_id: str) -> str:
        if len(self._prefixes) >= MAX_CACHED_IDS:
            self._prefixes.clear()
        prefix = self._prefixes[(device_id, param_id)] = f"({self._ids(device_id)},{self._ids(param_id)},"
        return prefix


def newest_rows(newest: dict[str, tuple[float, str]]) -> list[str]:
    """Last's rows, sorted by key so that writers always lock them in the same order."""
    return [newest[key][1] for key in sorted(newest)]
