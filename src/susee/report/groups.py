"""Tag groups of meters for ``--by tag:NAME``; the ``+``/``-`` grammar lives in ``susee.expressions``."""

from __future__ import annotations

UNTAGGED = "(untagged)"


def tag_groups(device_tags: dict[str, dict[str, str]], tag: str) -> dict[str, list[str]]:
    """Group device ids by the value of ``tag``; devices without it go to ``(untagged)``."""
    groups: dict[str, list[str]] = {}
    for device, tags in device_tags.items():
        groups.setdefault(tags.get(tag, UNTAGGED), []).append(device)
    return dict(sorted(groups.items()))
