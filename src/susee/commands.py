"""What each CLI command does, given validated settings."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AsyncExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path

from susee.config import ConfigError, Settings, load_settings
from susee.dbcheck import database_problems, refuse_unwritable
from susee.devices import DevicePlan, plan_devices
from susee.poller import Poller
from susee.quality import Code, describe
from susee.sinks import SinkError, create_sink, format_tick
from susee.spool import check_not_in_use as check_spool_not_in_use
from susee.spool import folder_problem as spool_folder_problem
from susee.spool import inspect as inspect_spool
from susee.simulator import embedded_simulator
from susee.storage_commands import day_keeper, storage_lines
from susee.supervisor import Supervisor
from susee.upkeep import StorageUpkeep
from susee.ticks import TickGrid, WallClock
from susee.links.pool import LinkPool
from susee.workers import (
    OrphanReplay,
    Workers,
    follow_parent,
    ignore_stop_signals,
    orphan_spools,
    partition,
    spool_folder,
    worker_count,
    worker_settings,
)

log = logging.getLogger(__name__)

# Codes that mean "could not talk to the device" for ``check``; a NaN value is
# a reading, not an unreachable meter.
_UNREACHABLE = ~int(Code.VALUE_NAN)
NO_DEVICES = "no enabled device: nothing to poll (add one under 'devices:', or set its enabled: true)"


@dataclass(frozen=True)
class Site:
    """Validated settings plus the devices resolved from them."""

    path: Path
    settings: Settings
    plans: list[DevicePlan]


def load_site(config: str) -> Site:
    """Load, validate and plan; ConfigError on anything invalid."""
    path = Path(config)
    settings = load_settings(path).resolved(path)  # the spool per site, relative to the config file
    plans = plan_devices(settings, path)
    return Site(path, settings, plans)


async def run(site: Site, duration_s: float | None, worker: tuple[int, int] | None = None,
              log_level: str | None = None) -> int:
    """Acquire: in this process, or as the parent of ``workers`` processes, or as worker K of N."""
    settings, plans = site.settings, site.plans
    if worker is None and not plans:
        raise ConfigError(f"{site.path}: {NO_DEVICES}")
    # Without a writable spool an outage would lose rows: refuse to start instead.
    problem = await asyncio.to_thread(spool_folder_problem, settings.spool.path)
    if problem is not None:
        raise ConfigError(f"{site.path}: field 'spool.path': {settings.spool.path} cannot be used: {problem}")
    count = worker_count(settings.workers, plans)
    # [spool branch, issue 15 items 3, 5] a spool in use: exit 2 in one line; a privilege or column
    # missing is not an outage: exit 1, both before sampling.
    if worker is None:  # each process of this run locks its own folder: none may be held by another run
        for index in range(count):
            await asyncio.to_thread(check_spool_not_in_use, spool_folder(settings.spool.path, index, count))
    if worker is None and await refuse_unwritable(settings.database_target(), settings.job_id):
        return 1
    view = live_view(settings, plans)  # [web]
    if worker is None and count > 1:
        workers = Workers(site.path, settings, count, duration_s, log_level, report_state=view is not None)
        if view is None:
            return await workers.run()
        async with view.serving(view.shares_state(plans, workers)):  # [web] the parent shows the whole site
            return await workers.run()
    orphans: list[Path] = []
    # Every device's counters: only the upkeep holding the lock works.
    days = day_keeper(settings, plans) if settings.storage.rollups else None
    if worker is not None:
        index, count = worker
        plans = partition(plans, count)[index]
        settings = worker_settings(settings, index, count)
    else:
        orphans = await asyncio.to_thread(orphan_spools, settings.spool.path, 1)
    replay = OrphanReplay(settings, orphans)
    replay.start()
    sink = create_sink(settings.database_target(), settings.job_id, rollups=settings.storage.rollups)
    if view is not None:  # [web]
        sink = view.timed(sink)
    supervisor = Supervisor(settings, plans, sink, handle_signals=worker is None,
                            observe=view.tap.wrap if view is not None else None)  # [web]
    upkeep = StorageUpkeep(settings, days=days)  # rollups, partitions, retention: beside the acquisition
    upkeep_task = asyncio.create_task(upkeep.run(), name="storage-upkeep")
    following = None
    if worker is not None:
        ignore_stop_signals()
        report = view.reporter(supervisor) if view is not None else None  # [web] its parent serves the page
        following = asyncio.create_task(follow_parent(supervisor.stop, report), name="follow-parent")
    try:
        serving = view.serving(view.site_state(supervisor)) if view is not None and worker is None else nullcontext()
        async with serving:  # [web]
            return await supervisor.run(duration_s)
    finally:
        if following is not None:
            following.cancel()
        await upkeep.close()
        await upkeep_task
        await replay.close()


def live_view(settings: Settings, plans: list[DevicePlan]):
    """The HTTP endpoint (``susee.web.LiveView``) when enabled and installed, else None."""
    if not settings.http.enabled:
        return None
    try:
        from susee.web import LiveView  # only sites that serve it pay the import
    except ImportError as exc:
        log.warning("http: the live view needs the web extra (pip install 'susee[web]'): %s; not serving it", exc)
        return None
    return LiveView(settings, plans)


async def migrate(site: Site) -> int:
    sink = create_sink(site.settings.database_target(), site.settings.job_id)
    try:
        await sink.open()
        for line in await sink.migrate():
            print(line)
        problems = await sink.verify()  # [spool branch] "up to date" is not enough: a column may be gone
    except SinkError as exc:
        print(f"database {exc}")  # the message starts with the target
        return 1
    finally:
        await sink.close()
    for problem in problems:
        print(f"database {sink.target}: {problem}")
    return 1 if problems else 0


async def last(site: Site, raw_rows: int | None) -> int:
    """Print the newest value of every param, or the newest raw rows (read-only: creates nothing)."""
    target, job_id = site.settings.database_target(), site.settings.job_id
    missing = _missing_sqlite_file(target)
    if missing:
        print(f"database {target}: {missing}; `susee migrate --config {site.path}` creates it")
        return 1
    sink = create_sink(target, job_id)
    table, limit = ("raw", raw_rows) if raw_rows else ("last", 100_000)
    try:
        await sink.open()
        rows = await sink.recent(table, limit)
    except SinkError as exc:
        if _no_tables(exc):
            print(f"database {target}: has no susee tables for job {job_id} (see{job_id}Raw ...): "
                  f"run `susee migrate --config {site.path}` first")
        else:
            print(f"database {exc}")  # the message starts with the target
        return 1
    finally:
        await sink.close()
    if table == "raw":  # newest tick first; within a tick, in device and param order
        rows.sort(key=lambda row: (row[0], row[2]))
        rows.sort(key=lambda row: str(row[1]), reverse=True)
    specs = {pid: spec for plan in site.plans if plan.profile for pid, spec in plan.profile.by_id.items()}
    print(f"{'idDevice':<10} {'Date':<26} {'idParam':<8} {'acronym':<14} {'Value':>22} {'unit':<6} {'Delay':>9} Code")
    for device_id, date, param_id, value, delay, code in rows:
        spec = specs.get(param_id)
        unit = spec.unit if spec is not None else ""
        print(f"{device_id:<10} {str(date):<26} {param_id:<8} {spec.acronym if spec else '':<14} "
              f"{shown_value(value):>22} {unit or '-':<6} {delay:>9.1f} {code} ({describe(code)})")
    print(f"{len(rows)} row(s) from see{job_id}{table.capitalize()} in {target}")
    return 0


def shown_value(value: float | None) -> str:
    """A Value for people: digits grouped (counters run into millions), 4 decimals unless whole."""
    if value is None:
        return "NULL"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4f}"


def _missing_sqlite_file(target) -> str | None:
    """Why a read-only command cannot open ``target``: an SQLite file that does not exist (None otherwise).

    sqlite3 would create an empty file, leaving a stray database behind a typo.
    """
    if target.kind == "sqlite" and not target.path.exists():
        return "the SQLite file does not exist"
    return None


# Errors that mean "this database holds no susee tables": MariaDB 1046 (no
# database selected: it does not exist), 1049 (unknown database), 1146 (no
# such table); SQLite's "no such table".
_NO_TABLES = frozenset({1046, 1049, 1146})


def _no_tables(exc: SinkError) -> bool:
    cause = exc.__cause__
    if cause is None:
        return False
    number = cause.args[0] if cause.args else None
    return (isinstance(number, int) and number in _NO_TABLES) or "no such table" in str(cause)


async def check(site: Site) -> int:
    settings = site.settings
    print(f"config {site.path}: job {settings.job_id}, sample_time {settings.sample_time:g} s, "
          f"sample_shift {settings.sample_shift:g} s, {len(site.plans)} enabled device(s)")
    target = settings.database_target()
    print(f"database: {target}")
    count = worker_count(settings.workers, site.plans)
    if count > 1:
        shares = "/".join(str(len(share)) for share in partition(site.plans, count))
        print(f"workers: {count} processes, devices per worker {shares}")
    healthy = True
    if not site.plans:
        print(f"  WARNING: {NO_DEVICES}")
        healthy = False
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(embedded_simulator(settings))
        links = LinkPool()
        stack.callback(links.close)
        for plan in site.plans:
            healthy &= await _check_device(plan, links)
    healthy &= await _check_database(target, settings.job_id)
    for line in await storage_lines(site):
        print(line)
    root = settings.spool.path
    for folder in [spool_folder(root, index, count) for index in range(count)]:
        healthy &= await _check_spool(folder)
    for folder in await asyncio.to_thread(orphan_spools, root, count):
        print(f"  spool {folder} is from a run with another worker count: the next start replays it")
        healthy &= await _check_spool(folder)
    if not site.plans:
        print("nothing to poll: `susee run` refuses this config")
    else:
        print("all reachable" if healthy else "NOT all reachable")
    return 0 if healthy else 1


async def _check_spool(folder: Path) -> bool:
    """Print what the spool holds; read-only, safe while the service runs. False if unusable."""
    problem = await asyncio.to_thread(spool_folder_problem, folder)
    if problem is not None:
        print(f"  spool {folder}: NOT WRITABLE: {problem} (set spool.path)")
        return False
    try:
        stats = await asyncio.to_thread(inspect_spool, folder)
    except OSError as exc:
        print(f"  spool {folder}: unreadable: {exc}")
        return False
    if stats.rows == 0:
        print(f"  spool {folder}: empty")
    else:
        oldest = format_tick(stats.oldest_tick_s) if stats.oldest_tick_s is not None else "?"
        print(f"  spool {folder}: {stats.size_bytes} bytes, {stats.rows} rows waiting for the database, "
              f"oldest tick {oldest} UTC")
    if stats.damage:
        print(f"    damaged: {stats.damage} (the next start replays every intact batch and moves damaged ones "
              f"aside into damaged-* files, logging what they held)")
    return True


async def _check_device(plan: DevicePlan, links: LinkPool) -> bool:
    s = plan.settings
    if plan.profile is None:
        print(f"  {s.id}: driver not found: {plan.profile_error}")
        return False
    requests = ", ".join(f"fc{b.function} {b.address}+{b.count}" for b in plan.blocks)
    print(f"  {s.id}: {plan.profile.name} unit {s.unit} at {plan.endpoint}, "
          f"{len(plan.param_ids)} params in {len(plan.blocks)} request(s): {requests}")
    samples = await _read_once(plan, links)
    code = 0
    for sample in samples:
        code |= sample.code
    delay = max(sample.delay_ms for sample in samples)
    print(f"    read: {describe(code)}, {delay:.1f} ms")
    return not code & _UNREACHABLE


async def _check_database(target, job_id: str) -> bool:
    missing = _missing_sqlite_file(target)
    if missing:  # read-only: the first run or `susee migrate` creates it
        folder = target.path.parent
        if os.access(folder, os.W_OK):
            print(f"  database: {missing} yet; the first run or `susee migrate` creates it")
            return True
        print(f"  database: {missing}, and its folder {folder} is not writable")
        return False
    problems = await database_problems(target, job_id)  # [spool branch] privileges and columns too
    if problems is None:
        sink = create_sink(target, job_id)
        try:
            await sink.open()
            await sink.ping()
        except SinkError as exc:
            print(f"  database: UNREACHABLE: {_without_target(exc, target)}")
            return False
        finally:
            await sink.close()
    if not problems:
        print("  database: reachable" + ("" if problems is not None else " (tables not checked)"))
    for problem in problems or ():
        verdict = "UNREACHABLE" if "cannot connect" in problem else "CANNOT STORE ROWS"  # login refused, or not
        print(f"  database: {verdict}: {problem.removeprefix(f'{target}: ')}")
    return not problems


def _without_target(exc: SinkError, target) -> str:
    """The sink's message without the target it starts with (already printed above it)."""
    return str(exc).removeprefix(f"{target}: ")


async def read(site: Site, device_id: str) -> int:
    plan = next((p for p in site.plans if p.id == device_id), None)
    if plan is None:
        known = ", ".join(p.id for p in site.plans) or "none"
        raise ConfigError(f"{site.path}: no enabled device {device_id!r} (enabled: {known})")
    if plan.profile is None:
        print(f"{device_id}: driver not found: {plan.profile_error}")
        return 1
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(embedded_simulator(site.settings))
        links = LinkPool()
        stack.callback(links.close)
        samples = await _read_once(plan, links)
    print(f"{'idParam':<8} {'acronym':<14} {'value':>18} {'unit':<6} code")
    for sample in samples:
        spec = plan.profile.by_id[sample.param_id]
        value = "NULL" if sample.value is None else f"{sample.value:.4f}"
        print(f"{sample.param_id:<8} {spec.acronym:<14} {value:>18} {spec.unit:<6} {sample.code} ({describe(sample.code)})")
    return 0 if all(s.code == 0 for s in samples) else 1


async def _read_once(plan: DevicePlan, links: LinkPool):
    clock = WallClock()
    link = links.link_for(plan.endpoint, plan.settings.inter_request_delay)
    poller = Poller(plan, link, TickGrid(1), clock, lambda samples: None)
    return await poller.poll(clock.now())


async def simulate(host: str, port: int, units: str, faults: list[str]) -> int:
    from susee.simulator import Fault, parse_units, serve

    try:
        unit_ids = parse_units(units)
        injected = {}
        for entry in faults:
            unit, _, name = entry.partition("=")
            injected[int(unit)] = Fault(name)
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from exc
    try:
        await serve(host, port, unit_ids, injected)
    except asyncio.CancelledError:
        pass
    return 0
