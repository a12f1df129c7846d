"""Day partitions of the compact MariaDB Raw: made ahead, never missing, dropped exactly when expired."""

from __future__ import annotations

import calendar
import logging
from datetime import date, datetime, timedelta

import pytest

from susee.partitions import drop_expired, make_ahead, partition_name, partitions_of
from susee.rollup import now_utc
from susee.sample import Sample
from tests.integration.storage_support import Store, store  # noqa: F401


# Partitions are MariaDB's: the storage_support fixture on MariaDB only.
pytestmark = pytest.mark.parametrize("store", ["mariadb"], indirect=True)


def last_day_of_month(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def at_noon(day: date) -> float:
    return calendar.timegm(datetime.combine(day, datetime.min.time()).timetuple()) + 12 * 3600


async def in_session(store: Store, work):
    return await store.sink.session("test", work)


def rows_in(store: Store, partition: str) -> int:
    return store.query(f"SELECT COUNT(*) FROM see{store.job_id}Raw PARTITION ({partition})")[0][0]


async def test_partitions_are_made_ahead_across_a_month_and_a_year_boundary_and_no_insert_fails(store):  # noqa: F811
    raw = f"see{store.job_id}Raw"
    today = now_utc().date()
    month_end = last_day_of_month(today)  # the injected clock: the last day of this month
    made = await in_session(store, lambda s: make_ahead(s, raw, month_end, 2))
    assert made == [today + timedelta(days=n) for n in range((month_end - today).days + 3)]
    names = [p.name for p in await in_session(store, lambda s: partitions_of(s, raw))]
    next_month = month_end + timedelta(days=1)
    assert names[-4:] == [partition_name(month_end), partition_name(next_month),
                          partition_name(next_month + timedelta(days=1)), "pmax"]
    assert names[0] == partition_name(today - timedelta(days=1)), "the partition of every day before"

    far_past, far_future = date(2021, 2, 18), date(2040, 1, 1)
    await store.sink.write([Sample("d01", "222", at_noon(day), 1.0, 1.0, 0)
                            for day in (far_past, today, next_month, far_future)])
    assert rows_in(store, names[0]) == 1 and rows_in(store, partition_name(today)) == 1
    assert rows_in(store, partition_name(next_month)) == 1 and rows_in(store, "pmax") == 1

    # The next day: one more partition, nothing else moves.
    assert await in_session(store, lambda s: make_ahead(s, raw, next_month, 2)) == [next_month + timedelta(days=2)]
    # Rows for a day with no partition yet sit in pmax and move into theirs when it is made.
    beyond = next_month + timedelta(days=5)
    await store.sink.write([Sample("d01", "222", at_noon(beyond), 2.0, 1.0, 0)])
    assert rows_in(store, "pmax") == 2
    await in_session(store, lambda s: make_ahead(s, raw, beyond, 0))
    assert rows_in(store, partition_name(beyond)) == 1 and rows_in(store, "pmax") == 1
    assert len(store.raw()) == 5


async def test_retention_drops_exactly_the_expired_partitions(store, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="susee.partitions")
    raw = f"see{store.job_id}Raw"
    today = now_utc().date()
    await in_session(store, lambda s: make_ahead(s, raw, today, 5))
    days = [today + timedelta(days=n) for n in range(6)]
    await store.sink.write([Sample("d01", p, at_noon(day), 1.0, 1.0, 0) for day in days for p in ("104", "222")])

    horizon = today + timedelta(days=3)  # keep from the fourth day on
    gone = await in_session(store, lambda s: drop_expired(s, raw, horizon))
    assert [p.name for p in gone] == [partition_name(today - timedelta(days=1))] + [partition_name(d) for d in days[:3]]
    left = [p.name for p in await in_session(store, lambda s: partitions_of(s, raw))]
    assert left == [partition_name(d) for d in days[3:]] + ["pmax"]
    kept = sorted({row[1][:10] for row in store.raw()})
    assert kept == [f"{d:%Y-%m-%d}" for d in days[3:]] and len(store.raw()) == 6
    messages = [r.getMessage() for r in caplog.records if "expired partition" in r.getMessage()]
    assert len(messages) == 4 and all(raw in m for m in messages)
    assert await in_session(store, lambda s: drop_expired(s, raw, horizon)) == [], "nothing more to drop"
