"""How a log line names many devices (or buses): the first few, and how many more; and rates.

At a site of thousands of meters one line per device would bury the log, and
a line without any name would leave nothing to look up: these lines name
the first ``SHOWN`` and count the rest.
"""

from __future__ import annotations

from collections.abc import Iterable

SHOWN = 5


def first_few(names: Iterable[str]) -> str:
    """``"d1, d2, d3, d4, d5 and 45 more"``: the first ``SHOWN`` names and how many more."""
    names = list(names)
    more = len(names) - SHOWN
    return ", ".join(names[:SHOWN]) + (f" and {more} more" if more > 0 else "")


# Below this a rate says more about the clock than about the work (0.0 s gave "6400000000 rows/s").
RATE_MIN_S = 0.1


def rate_text(rows: int, elapsed_s: float) -> str:
    """``" (40000 rows/s)"``, or "" when ``elapsed_s`` is too short for a meaningful rate."""
    if elapsed_s < RATE_MIN_S:
        return ""
    return f" ({rows / elapsed_s:.0f} rows/s)"
