"""Pydantic errors rewritten to name the culprit: list entry, its id, the field."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError


def describe_errors(exc: ValidationError, data: Any, list_key: str, model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem, e.g. ``devices[3] (id 'd07'): field 'port': <problem>``.

    ``data`` is the raw mapping that was validated; entries of its ``list_key``
    list are named by index and by their ``id``. With ``model`` (the class
    validated), an unknown key gets the closest known one as a suggestion.
    """
    entries = data.get(list_key) if isinstance(data, Mapping) else None
    entries = entries if isinstance(entries, list) else []
    lines = []
    for error in exc.errors():
        location = list(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(model, location)
        where = ""
        if len(location) >= 2 and location[0] == list_key and isinstance(location[1], int):
            index = location[1]
            entry = entries[index] if index < len(entries) and isinstance(entries[index], Mapping) else {}
            where = f"{list_key}[{index}] (id {str(entry.get('id', '?'))!r}): "
            location = location[2:]
        field = ".".join(str(p) for p in location)
        lines.append(f"{where}field {field!r}: {message}" if field else f"{where}{message}")
    return lines


def _did_you_mean(model: type[BaseModel] | None, location: Sequence[Any]) -> str:
    """``"; did you mean 'database'?"`` for the key at ``location``, or "" when nothing is close."""
    if model is None or not location:
        return ""
    for part in location[:-1]:
        if isinstance(part, int):
            continue  # an entry of a list: same model
        field = model.model_fields.get(str(part))
        model = _model_in(field.annotation) if field is not None else None
        if model is None:
            return ""
    known = list(model.model_fields)
    close = difflib.get_close_matches(str(location[-1]), known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as ``list[DeviceSettings]`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, tuple, typing.Annotated) or \
            typing.get_args(annotation):
        for argument in typing.get_args(annotation):
            found = _model_in(argument)
            if found is not None:
                return found
    return None
