"""Pydantic errors rewritten to name the culprit: list entry, its id, the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError


def describe_errors(exc: ValidationError, data: Any, list_key: str) -> list[str]:
    """One line per problem, e.g. ``devices[3] (id 'd07'): field 'port': <problem>``.

    ``data`` is the raw mapping that was validated; entries of its ``list_key``
    list are named by index and by their ``id``.
    """
    entries = data.get(list_key) if isinstance(data, Mapping) else None
    entries = entries if isinstance(entries, list) else []
    lines = []
    for error in exc.errors():
        location = list(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        where = ""
        if len(location) >= 2 and location[0] == list_key and isinstance(location[1], int):
            index = location[1]
            entry = entries[index] if index < len(entries) and isinstance(entries[index], Mapping) else {}
            where = f"{list_key}[{index}] (id {str(entry.get('id', '?'))!r}): "
            location = location[2:]
        field = ".".join(str(p) for p in location)
        lines.append(f"{where}field {field!r}: {message}" if field else f"{where}{message}")
    return lines
