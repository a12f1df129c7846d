"""A site split over worker processes, seen whole: each worker's snapshot, merged in the parent.

With ``workers`` > 1 the parent serves the page and the metrics; the pollers
and writers live in the workers. When a request comes, the parent asks each
worker for a snapshot over the pipe it already has to it (``state <n>`` on
the worker's stdin, one JSON line back on its stdout: see
``Workers.ask_states``) and merges them. Nothing is sent while nobody looks,
no port or file is shared, and the parent computes every figure the same way
as a single process: the metrics and the page are the same code.

The alternative, prometheus-client's multiprocess mode, only knows its own
metric types in files shared between processes; the page and the readiness
need the same snapshots anyway, so one mechanism serves both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence

from susee import __version__
from susee.web.state import DELAY_BOUNDS_MS, WAITING, WRITE_BOUNDS_S, DeviceView, Fleet, Histogram, SiteState, SiteView

# Several requests at once (a page and a scrape) share one round of questions.
FRESH_S = 0.5
DELAY_BOUNDS = tuple(b / 1000.0 for b in DELAY_BOUNDS_MS)  # seconds, as SiteState.site() reports them
WRITE_BOUNDS = WRITE_BOUNDS_S
SITE_SUMS = ("queue_rows", "rows_written", "rows_spooled", "rows_replayed", "rows_dropped", "spool_rows", "spool_bytes")


def worker_snapshot(state: SiteState, seq: int) -> bytes:
    """One worker's site and devices as one JSON line answering question ``seq`` (what the parent merges)."""
    site = state.site()
    devices = [
        (d.id, d.profile, d.tags, d.status, d.code, d.polls, d.missed_ticks, d.skipped_polls,
         {str(bit): n for bit, n in d.failures.items()}, d.last_tick_s, d.last_good_s, d.delay_ms, d.power_w)
        for d in state.devices()
    ]
    body = {
        "seq": seq,
        "site": {
            "database": site.database, "online": site.online, "outage_since_s": site.outage_since_s,
            "paused": site.paused, "last_poll_s": site.last_poll_s, "stopping": site.stopping,
            **{name: getattr(site, name) for name in SITE_SUMS},
            "write_latency": [list(site.write_latency.counts), site.write_latency.total],
            "delay": [list(site.delay.counts), site.delay.total],
        },
        "devices": devices,
        "cpu_s": time.process_time(),
    }
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


class SharesState(Fleet):
    """The parent's view: the workers' snapshots merged, with the parent's plans (all devices)."""

    def __init__(self, plans: Sequence, period_s: float, ask: Callable[[], Awaitable[list[dict | None]]],
                 stopping: Callable[[], bool]) -> None:
        super().__init__(plans, period_s)
        self._ask = ask
        self._stopping = stopping
        self._snapshots: list[dict | None] = []
        self._asked_s = -1.0

    @property
    def stopping(self) -> bool:
        return self._stopping()

    @property
    def database_online(self) -> bool:
        answers = [s for s in self._snapshots if s]
        return bool(answers) and all(s["site"]["online"] for s in answers)

    async def refresh(self) -> None:
        if time.monotonic() - self._asked_s >= FRESH_S:
            self._snapshots = await self._ask()
            self._asked_s = time.monotonic()

    def site(self) -> SiteView:
        answers = [s["site"] for s in self._snapshots if s]
        silent = [str(index) for index, s in enumerate(self._snapshots) if not s]
        outages = [a["outage_since_s"] for a in answers if a["outage_since_s"] is not None]
        polls = [a["last_poll_s"] for a in answers if a["last_poll_s"] is not None]
        return SiteView(
            version=__version__, started_s=self.started_s, now_s=time.time(), period_s=self.period_s,
            stopping=self.stopping or any(a["stopping"] for a in answers),
            database=answers[0]["database"] if answers else "?",
            online=bool(answers) and all(a["online"] for a in answers),
            outage_since_s=min(outages) if outages else None, paused=any(a["paused"] for a in answers),
            devices=len(self.plans), last_poll_s=max(polls) if polls else None,
            write_latency=_summed([a["write_latency"] for a in answers], WRITE_BOUNDS),
            delay=_summed([a["delay"] for a in answers], DELAY_BOUNDS),
            notes=(f"worker(s) {', '.join(silent)} did not answer",) if silent else (),
            **{name: sum(a[name] for a in answers) for name in SITE_SUMS},
        )

    def devices(self) -> list[DeviceView]:
        found: dict[str, DeviceView] = {}
        for snapshot in self._snapshots:
            for row in (snapshot or {}).get("devices", ()):
                failures = {int(bit): n for bit, n in row[8].items()}
                found[row[0]] = DeviceView(*row[:8], failures, *row[9:])
        return [found.get(device_id) or DeviceView(device_id, profile, tags, WAITING, 0, 0, 0, 0, {}, None, None,
                                                   None, None)
                for device_id, profile, tags, _ in self._static]

    def worker_cpu_s(self) -> list[float | None]:
        return [s["cpu_s"] if s else None for s in self._snapshots]


def _summed(parts: list[list], bounds: tuple[float, ...]) -> Histogram:
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for part_counts, part_total in parts:
        counts = [a + b for a, b in zip(counts, part_counts)]
        total += part_total
    return Histogram(bounds, tuple(counts), total)

