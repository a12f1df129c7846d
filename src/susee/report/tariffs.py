"""Tariff band calendars: which band each 15-minute bucket belongs to, in local time.

The Italian ARERA bands are built in (``arera``); any other contract is a
YAML file with the same structure (see config/tariff.example.yaml):

    name: my contract
    default: OFFPEAK                       # band of every hour no rule matches
    rules:                                 # first match wins; hours are [start, end)
      - {days: mon-fri, hours: 8-20, band: PEAK}
    holidays: {country: IT, band: OFFPEAK, extra: ["2026-12-24"]}
    combined: {ALL_OFF: [OFFPEAK]}         # extra rows summing several bands

A holiday (from the ``holidays`` package for ``country``, national holidays
only, plus ``extra`` dates) is in ``holidays.band`` all day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^\s*(\d{1,2})\s*-\s*(\d{1,2})\s*$")

# ARERA (delibera 181/06): F1 Mon-Fri 08-19; F2 Mon-Fri 07-08 and 19-23,
# Sat 07-23; F3 every other hour, Sundays and national holidays all day.
ARERA = {
    "name": "ARERA F1/F2/F3",
    "default": "F3",
    "rules": [
        {"days": "mon-fri", "hours": "8-19", "band": "F1"},
        {"days": "mon-fri", "hours": "7-8", "band": "F2"},
        {"days": "mon-fri", "hours": "19-23", "band": "F2"},
        {"days": "sat", "hours": "7-23", "band": "F2"},
    ],
    "holidays": {"country": "IT", "band": "F3"},
    "combined": {"F23": ["F2", "F3"]},
}


class TariffError(ValueError):
    """A tariff calendar is unknown or malformed; the message names the file and field."""


@dataclass(frozen=True)
class Calendar:
    """Bands by weekday and hour, holidays all day in one band."""

    name: str
    bands: tuple[str, ...]
    combined: dict[str, tuple[str, ...]]
    # week[weekday][hour] -> band, weekday 0 = Monday.
    week: tuple[tuple[str, ...], ...]
    holiday_band: str | None = None
    country: str | None = None
    extra_holidays: frozenset[date] = field(default_factory=frozenset)

    def band_at(self, local: datetime) -> str:
        """The band of the local civil time ``local``."""
        if self.holiday_band is not None and self.is_holiday(local.date()):
            return self.holiday_band
        return self.week[local.weekday()][local.hour]

    def is_holiday(self, day: date) -> bool:
        return day in self.extra_holidays or (self.country is not None and day in _holidays(self.country, day.year))

    def bands_of(self, bucket_starts: range, zone: ZoneInfo) -> list[str]:
        """The band of each bucket (a bucket never straddles a local hour)."""
        cache: dict[tuple[date, int], str] = {}
        result = []
        for t in bucket_starts:
            local = datetime.fromtimestamp(t, zone)
            key = (local.date(), local.hour)
            band = cache.get(key)
            if band is None:
                band = cache[key] = self.band_at(local)
            result.append(band)
        return result


_HOLIDAY_CACHE: dict[tuple[str, int], frozenset[date]] = {}


def _holidays(country: str, year: int) -> frozenset[date]:
    key = (country, year)
    if key not in _HOLIDAY_CACHE:
        import holidays

        _HOLIDAY_CACHE[key] = frozenset(holidays.country_holidays(country, years=year))
    return _HOLIDAY_CACHE[key]


def load_calendar(reference: str, base_dir: Path | None = None) -> Calendar:
    """``arera`` or a YAML file (relative to ``base_dir``); TariffError naming the culprit."""
    if reference.lower() == "arera":
        return build_calendar(ARERA, "built-in tariff 'arera'")
    path = Path(reference)
    if not path.is_absolute() and base_dir is not None and not path.is_file():
        path = base_dir / path
    if not path.is_file():
        raise TariffError(f"tariff {reference!r}: neither 'arera' nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TariffError(f"{path}: cannot read tariff calendar: {exc}") from exc
    return build_calendar(data, str(path))


def build_calendar(data: object, source: str) -> Calendar:
    """Validate a calendar mapping (the YAML structure in this module's docstring)."""
    if not isinstance(data, dict) or not isinstance(data.get("default"), str):
        raise TariffError(f"{source}: a calendar is a mapping with at least 'default: BAND'")
    unknown = set(data) - {"name", "default", "rules", "holidays", "combined"}
    if unknown:
        raise TariffError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    default = data["default"]
    week = [[default] * 24 for _ in DAY_NAMES]
    decided = [[False] * 24 for _ in DAY_NAMES]
    bands: list[str] = []
    for index, rule in enumerate(data.get("rules") or []):
        where = f"{source}: rules[{index}]"
        if not isinstance(rule, dict) or not isinstance(rule.get("band"), str):
            raise TariffError(f"{where}: needs days, hours and band")
        band = rule["band"]
        if band not in bands:
            bands.append(band)
        for day in _days(rule.get("days"), where):
            for hour in _hours(rule.get("hours"), where):
                if not decided[day][hour]:  # first match wins
                    week[day][hour], decided[day][hour] = band, True
    if default not in bands:
        bands.append(default)
    holiday = data.get("holidays") or {}
    if not isinstance(holiday, dict):
        raise TariffError(f"{source}: holidays: a mapping with country, band, extra")
    holiday_band = holiday.get("band", default) if holiday else None
    if holiday_band is not None and holiday_band not in bands:
        bands.append(holiday_band)
    country = holiday.get("country")
    if country is not None:
        import holidays

        if country not in holidays.list_supported_countries():
            raise TariffError(f"{source}: holidays.country: {country!r} is not a country code of the holidays package")
    try:
        extra = frozenset(date.fromisoformat(str(d)) for d in holiday.get("extra") or [])
    except ValueError as exc:
        raise TariffError(f"{source}: holidays.extra: {exc}") from None
    combined = {}
    for name, parts in (data.get("combined") or {}).items():
        missing = [p for p in parts or [] if p not in bands]
        if not parts or missing or name in bands:
            raise TariffError(f"{source}: combined.{name}: must list existing bands and be a new name")
        combined[str(name)] = tuple(parts)
    return Calendar(
        name=str(data.get("name") or source),
        bands=tuple(bands),
        combined=combined,
        week=tuple(tuple(day) for day in week),
        holiday_band=holiday_band,
        country=country,
        extra_holidays=extra,
    )


def _days(text: object, where: str) -> list[int]:
    days: list[int] = []
    for part in str(text or "").lower().replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if first not in DAY_NAMES or (last and last not in DAY_NAMES):
            raise TariffError(f"{where}: days: {text!r} is not like mon-fri or sat,sun")
        start, end = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days.extend(range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)])
    return days


def _hours(text: object, where: str) -> range:
    match = _HOURS.match(str(text or ""))
    if not match or not 0 <= int(match.group(1)) < int(match.group(2)) <= 24:
        raise TariffError(f"{where}: hours: {text!r} is not like 8-19 (start and end hour, 0-24)")
    return range(int(match.group(1)), int(match.group(2)))
