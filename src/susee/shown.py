"""How a log line about many devices (or buses) names them: the first few, and how many more.

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
