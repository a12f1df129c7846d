"""Storage upkeep beside the acquisition: rollups, partitions, retention.

One task with its own database connection (the writer's is never held by it):

- every ``storage.rollup_every`` seconds, the buckets marked in Q15Dirty are
  recomputed from Raw (``susee.rollup``): closed buckets once, the bucket
  still being written every ``storage.rollup_open_every`` seconds;
- after the buckets, the daily rollups of the days they touched that are over
  (``susee.report.daykeeper``, when the report extra is installed), in a thread;
- every hour (and at start), day partitions are made ahead
  (``susee.partitions``) and expired data removed (``susee.retention``).

With several workers on one MariaDB, each runs an upkeep but only the one
holding the server lock ``susee_upkeep_<database>_<job>`` works; if its
process dies the lock goes with its connection and another takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from susee.config import Settings
from susee.partitions import make_ahead
from susee.retention import expire_raw, expire_rollups, horizon
from susee.rollup import prepare_session, BUCKET, Rollups, Session, epoch_s, now_utc
from susee.sinks import Sink, SinkError, create_sink

if TYPE_CHECKING:
    from susee.report.daykeeper import DayKeeper

log = logging.getLogger(__name__)

HOUSEKEEPING_EVERY = timedelta(hours=1)
# A bucket counts as closed this long after its end: the writer's last
# batch of it (batch_age, a slow commit) is in by then, so it is done once.
CLOSE_GRACE = timedelta(seconds=15)


class StorageUpkeep:
    """Keeps rollups, partitions and retention up to date while the service runs."""

    def __init__(self, settings: Settings, sink: Sink | None = None, now: Callable[[], datetime] = now_utc,
                 days: DayKeeper | None = None) -> None:
        self.settings = settings.storage
        self.job_id = settings.job_id
        self.sink = sink or create_sink(settings.database_target(), settings.job_id, rollups=False)
        self.now = now
        self._stop = asyncio.Event()
        self._owner = False  # holds the upkeep lock (MariaDB)
        self._opened: dict[datetime, datetime] = {}  # open bucket -> when it was last recomputed
        self._next_housekeeping: datetime | None = None
        self._failing = False
        self.rollups: Rollups | None = None
        self.buckets_done = 0
        self.days = days  # the daily rollups (None: not kept)

    async def run(self) -> None:
        """Work until ``close()``; database failures are logged and retried at the next pass."""
        while not self._stop.is_set():
            try:
                if self.rollups is None:
                    await self.sink.migrate()  # the writer does too: whoever comes first, the tables exist
                await self.sink.session("storage upkeep", self.run_once)
                if self._failing:
                    log.info("storage upkeep: database %s answers again", self.sink.target)
                self._failing = False
            except SinkError as exc:
                self._owner = False  # a new connection must take the lock again
                if not self._failing:
                    log.warning("storage upkeep: %s; retrying every %g s", exc, self.settings.rollup_every)
                self._failing = True
            except Exception:  # a bug must not stop the acquisition: say it once, try again later
                self._owner = False
                if not self._failing:
                    log.exception("storage upkeep failed; retrying every %g s", self.settings.rollup_every)
                self._failing = True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.rollup_every)

    async def close(self) -> None:
        """Stop after the bucket in progress; a bucket not done stays marked for the next start."""
        self._stop.set()
        await self.sink.close()

    async def run_once(self, session: Session) -> None:
        """One pass: housekeeping when due, then the marked buckets."""
        if not await self._own(session):
            return
        await prepare_session(session)
        self.rollups = self.rollups or Rollups(self.job_id, session.dialect, mark_days=self.days is not None)
        now = self.now()
        if self._next_housekeeping is None or now >= self._next_housekeeping:
            await self.housekeeping(session, now)
            self._next_housekeeping = now + HOUSEKEEPING_EVERY
        if self.settings.rollups:
            await self.roll_up(session, now)

    async def roll_up(self, session: Session, now: datetime) -> int:
        """Recompute the marked buckets that are due; return how many were done."""
        assert self.rollups is not None
        keep_from = self._raw_horizon(now)
        done = 0
        due = await self.rollups.dirty(session)
        late = [bucket for bucket, _ in due if keep_from is not None and bucket < keep_from]
        if late:
            log.info("storage upkeep: rows written for %d bucket(s) before the Raw horizon %s (%s .. %s, a late"
                     " spool): kept until the next expiry; their rollups only gain keys they lacked",
                     len(late), keep_from, late[0], late[-1])
        for bucket, version in due:
            if self._stop.is_set():
                break
            is_open = bucket + BUCKET + CLOSE_GRACE > now
            if is_open:
                last = self._opened.get(bucket)
                if last is not None and now - last < timedelta(seconds=self.settings.rollup_open_every):
                    continue
                self._opened[bucket] = now
            await self.rollups.refresh_bucket(session, bucket, version, keep_from)
            done += 1
        for bucket in [b for b in self._opened if b + BUCKET + CLOSE_GRACE <= now]:
            del self._opened[bucket]
        self.buckets_done += done
        if done > 1:
            log.debug("storage upkeep: %d bucket(s) rolled up", done)
        if self.days is not None:  # the days of buckets marked now or before a restart
            await asyncio.to_thread(self.days.build, epoch_s(now))
        return done

    async def housekeeping(self, session: Session, now: datetime) -> None:
        """Partitions ahead, then expiry (Raw never past a bucket still to roll up)."""
        today = now.date()
        raw = f"see{self.job_id}Raw"
        if session.dialect == "mariadb":
            await make_ahead(session, raw, today, self.settings.partitions_ahead_days)
        raw_from = horizon(today, self.settings.raw_keep_days)
        if raw_from is not None:
            assert self.rollups is not None
            due = await self.rollups.dirty(session) if self.settings.rollups else []
            await expire_raw(session, self.job_id, raw_from, due[0][0] if due else None)
        rollup_from = horizon(today, self.settings.rollup_keep_days)
        if rollup_from is not None:
            await expire_rollups(session, self.job_id, rollup_from)

    def _raw_horizon(self, now: datetime) -> datetime | None:
        keep_from = horizon(now.date(), self.settings.raw_keep_days)
        return None if keep_from is None else datetime.combine(keep_from, datetime.min.time())

    async def _own(self, session: Session) -> bool:
        """Take the upkeep lock (MariaDB: one upkeep per database and job among the workers)."""
        if self._owner or session.dialect != "mariadb":
            return True
        name = f"susee_upkeep_{self.sink.target.database}_{self.job_id}"
        rows = await session.fetch("SELECT GET_LOCK(%s, 0)", (name,))
        self._owner = bool(rows and rows[0][0] == 1)
        return self._owner

