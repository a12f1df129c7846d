"""Sums and differences of ids: ``main - hvac - lighting``, ``222 + 223``.

Virtual meters (site.yaml) and derived counters (profiles) are written this
way. Ids may contain ``-`` themselves (``pv-roof``), so a minus between two
ids needs a space on each side; ``+`` never appears in an id. It is parsed by
splitting, never evaluated.
"""

from __future__ import annotations

import re

# Same shape as idDevice/idParam (susee.config.ID_PATTERN): not imported, the
# settings import this module.
TERM_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,20}")
OPERATOR = re.compile(r"\s*(\+)\s*|\s+(-)\s+")


class ExpressionError(ValueError):
    """An expression does not follow the ``id + id - id`` grammar; the message says where."""


def parse_expression(text: str) -> list[tuple[int, str]]:
    """``"main - hvac + pv"`` -> ``[(1, "main"), (-1, "hvac"), (1, "pv")]``."""
    terms: list[tuple[int, str]] = []
    sign, position = 1, 0
    stripped = text.strip()
    for match in OPERATOR.finditer(stripped):
        terms.append((sign, _term(stripped[position:match.start()], text)))
        sign = 1 if match.group(1) else -1
        position = match.end()
    terms.append((sign, _term(stripped[position:], text)))
    seen = [term for _, term in terms]
    duplicates = sorted({term for term in seen if seen.count(term) > 1})
    if duplicates:
        raise ExpressionError(f"{text!r}: {', '.join(duplicates)} appears more than once")
    return terms


def _term(term: str, text: str) -> str:
    if not TERM_PATTERN.fullmatch(term):
        shown = repr(term) if term else "an empty term"
        raise ExpressionError(f"{text!r}: {shown} is not an id (write ids joined by ' + ' and ' - ')")
    return term
