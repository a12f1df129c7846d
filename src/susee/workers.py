"""One site on several cores: worker processes, each polling a share of the buses.

One Python process runs on one core. A tick's reads all start at once, so the
Delay of the last read of a burst grows with the CPU the whole burst takes:
at 1,000 meters that is tens of milliseconds on one core, and a core is full
somewhere past 5,000 meters at 1 s. With ``workers: N`` the service starts N
worker processes (``susee run --worker K/N``), each the usual supervisor for a
share of the buses (devices sharing a connection always stay together), with
its own database connection and its own spool folder ``<spool>/worker-K``.

The parent process validates the configuration (exit 2 before anything
starts), applies the migrations once, hosts the embedded simulator if there
is one, restarts a worker that dies (with capped backoff), and replays spool
folders that no worker owns any more: left by an earlier run with another
worker count. Nothing a worker acquired is lost when it dies harder than a
signal allows: its spool is replayed by its successor.

Stopping: only the parent acts on SIGTERM/SIGINT; it tells each worker
"stop" on the worker's stdin (a second signal: "stop" again, and the workers
spill at once). Workers ignore those signals themselves, because Ctrl-C in a
terminal and systemd's stop both signal every process of the group: a worker
that acted on them too would count each stop twice. A worker whose stdin
closes (its parent was killed) stops cleanly on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from susee.bus_key import BusKey
from susee.config import Settings
from susee.devices import DevicePlan
from susee.sinks import SinkError, create_sink
from susee.spool import Spool
from susee.spool import inspect as inspect_spool
from susee.simulator import embedded_simulator
from susee.store import Store

log = logging.getLogger(__name__)

WORKER_FOLDER_PREFIX = "worker-"
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0
STABLE_AFTER_S = 60.0  # a worker that ran this long before dying restarts at once again
EXIT_CONFIG = 2  # a worker that finds the configuration invalid: restarting cannot help
STOP_LINE = b"stop\n"  # parent -> worker, on the worker's stdin
# [web] parent -> worker "state <n>": the worker answers one JSON line with "seq": n on its stdout.
STATE_PREFIX = b"state "
STATE_TIMEOUT_S = 2.0  # a worker busy for longer is shown as not answering
STATE_LINE_LIMIT = 64 << 20  # a 5,000-device snapshot is ~1 MB: above asyncio's 64 KiB default
# Acquisition must not wait on a long schema upgrade: past this, the workers start
# (their writers spool and take their turn at the migration lock).
MIGRATE_AHEAD_TIMEOUT_S = 30.0


def worker_count(setting: int | str, plans: Sequence[DevicePlan]) -> int:
    """How many workers ``setting`` means for ``plans``: never more than there are buses."""
    buses = len({bus_of(plan) for plan in plans})
    wanted = usable_cpus() if setting == "auto" else int(setting)
    return max(1, min(wanted, buses))


def usable_cpus() -> int:
    """CPUs this process may run on (a container's or taskset's limit, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def bus_of(plan: DevicePlan) -> BusKey:
    """The connection a device shares with others: they must be polled by one process."""
    return plan.endpoint.bus


def partition(plans: Sequence[DevicePlan], count: int) -> list[list[DevicePlan]]:
    """Buses to ``count`` workers, balanced by devices; config order is kept within a worker.

    Largest bus first onto the worker with the fewest devices so far (ties:
    the lowest index), so the split depends only on the configuration.
    """
    buses: dict[BusKey, list[int]] = {}
    for index, plan in enumerate(plans):
        buses.setdefault(bus_of(plan), []).append(index)
    load = [0] * count
    owner: dict[BusKey, int] = {}
    for bus, members in sorted(buses.items(), key=lambda item: (-len(item[1]), item[1][0])):
        worker = min(range(count), key=lambda k: (load[k], k))
        owner[bus] = worker
        load[worker] += len(members)
    shares: list[list[DevicePlan]] = [[] for _ in range(count)]
    for plan in plans:
        shares[owner[bus_of(plan)]].append(plan)
    return shares


def spool_folder(root: Path, index: int, count: int) -> Path:
    """The spool folder of worker ``index`` of ``count`` (the root itself when there is one process)."""
    return root if count == 1 else root / f"{WORKER_FOLDER_PREFIX}{index}"


def worker_settings(settings: Settings, index: int, count: int) -> Settings:
    """What worker ``index`` of ``count`` runs with: its own spool folder, no simulator (the parent hosts it)."""
    worker = settings.with_spool(spool_folder(settings.spool.path, index, count))
    return worker.model_copy(update={"simulator": None})


def orphan_spools(root: Path, count: int) -> list[Path]:
    """Spool folders holding rows that no process of a ``count``-worker run owns.

    They were left by a run with another worker count: the root folder when
    there are several workers now, ``worker-K`` folders for K >= count (all of
    them when there is one process).
    """
    root = Path(root)
    candidates = [root] if count > 1 else []
    if root.is_dir():
        for path in sorted(root.glob(f"{WORKER_FOLDER_PREFIX}*")):
            digits = path.name[len(WORKER_FOLDER_PREFIX):]
            if path.is_dir() and digits.isdigit() and (count == 1 or int(digits) >= count):
                candidates.append(path)
    return [path for path in candidates if inspect_spool(path).rows > 0]


class OrphanReplay:
    """Replays the spool folders no worker owns into the database, until closed.

    Each folder gets a store of its own (its own connection, spool thread and
    outage state) and no writer: with nothing submitted, it only probes and replays.
    """

    def __init__(self, settings: Settings, folders: Sequence[Path]) -> None:
        self.stores = [
            Store(create_sink(settings.database_target(), settings.job_id),
                  Spool(folder, settings.spool.max_bytes, settings.spool.when_full,
                        destination=settings.database_target().identity(settings.job_id)),  # [spool branch]
                  write_timeout_s=settings.database.write_timeout)
            for folder in folders
        ]
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        for store in self.stores:
            log.warning("spool %s belongs to no process of this run (an earlier run had another worker count): "
                        "replaying it", store.spool.folder)
            self._tasks.append(asyncio.create_task(store.run(), name=f"replay-{store.spool.folder.name}"))

    async def close(self) -> None:
        for store in self.stores:
            store.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for store in self.stores:
            await store.sink.close()


class Workers:
    """The parent process: starts, watches, restarts and stops the workers."""

    def __init__(self, config_path: Path, settings: Settings, count: int, duration_s: float | None,
                 log_level: str | None, report_state: bool = False) -> None:
        self.report_state = report_state  # [web] the workers answer "state" requests on their stdout
        self._asked = 0  # [web]
        self._state_locks: dict[int, asyncio.Lock] = {}  # [web]
        self.config_path = config_path
        self.settings = settings
        self.count = count
        self.deadline = None if duration_s is None else time.monotonic() + duration_s
        self.log_level = log_level
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.exit_codes: dict[int, int] = {}
        self.stopping = False
        self._signals = 0

    async def run(self) -> int:
        await self._migrate()
        orphans = OrphanReplay(self.settings, await asyncio.to_thread(orphan_spools, self.settings.spool.path, self.count))
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(embedded_simulator(self.settings))  # hosted here, for every worker
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._forward, signum)
                stack.callback(loop.remove_signal_handler, signum)
            orphans.start()
            stack.push_async_callback(orphans.close)
            log.info("starting %d workers", self.count)
            await asyncio.gather(*(self._keep_running(index) for index in range(self.count)))
        worst = max(self.exit_codes.values(), default=0)
        log.info("all %d workers stopped (exit codes %s)", self.count,
                 ", ".join(f"{k}: {c}" for k, c in sorted(self.exit_codes.items())))
        return worst

    async def _migrate(self) -> None:
        """Apply the migrations once, before the workers would each try; retried by them if this fails."""
        sink = create_sink(self.settings.database_target(), self.settings.job_id)
        try:
            await sink.open()
            lines = await asyncio.wait_for(sink.migrate(), MIGRATE_AHEAD_TIMEOUT_S)
            for line in lines:
                log.info("database %s: %s", sink.target, line)
        except SinkError as exc:
            log.warning("database %s: %s; the workers spool and migrate once it answers", sink.target, exc)
        except asyncio.TimeoutError:
            log.warning("database %s: migrations still running after %g s (a long upgrade, or another process "
                        "holds the migration lock): starting the workers, which spool until it is done",
                        sink.target, MIGRATE_AHEAD_TIMEOUT_S)
        finally:
            await sink.close()

    def _command(self, index: int) -> list[str]:
        command = [sys.executable, "-m", "susee", "--config", str(self.config_path), "run",
                   "--worker", f"{index}/{self.count}"]
        if self.deadline is not None:
            command += ["--duration", f"{max(0.0, self.deadline - time.monotonic()):.3f}"]
        if self.log_level is not None:
            command += ["--log-level", self.log_level]
        return command

    async def _keep_running(self, index: int) -> None:
        """Run worker ``index``; start it again when it dies, until the parent stops."""
        backoff_s = RESTART_FIRST_S
        while True:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *self._command(index), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE if self.report_state else None, limit=STATE_LINE_LIMIT)  # [web]
            self.processes[index] = process
            code = await process.wait()
            self.exit_codes[index] = code
            if code == 0 or self.stopping:  # its duration ended, or it was told to stop
                return
            if code == EXIT_CONFIG:
                log.error("worker %d/%d exited with code %d: not restarting it", index, self.count, code)
                return
            if time.monotonic() - started >= STABLE_AFTER_S:
                backoff_s = RESTART_FIRST_S
            log.error("worker %d/%d (pid %d) died with code %d; restarting it in %g s (its spool is kept)",
                      index, self.count, process.pid, code, backoff_s)
            await self._sleep_unless_stopping(backoff_s)
            if self.stopping:
                return
            backoff_s = min(backoff_s * 2, RESTART_MAX_S)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < end:
            await asyncio.sleep(min(0.1, end - time.monotonic()))

    async def ask_states(self) -> list[dict | None]:
        """[web] Each worker's snapshot (``susee.web.shares``), None for one that did not answer in time."""
        return list(await asyncio.gather(*(self._ask_state(index) for index in range(self.count))))

    async def _ask_state(self, index: int) -> dict | None:
        process = self.processes.get(index)
        if process is None or process.returncode is not None or process.stdout is None or process.stdin is None:
            return None
        async with self._state_locks.setdefault(index, asyncio.Lock()):
            self._asked += 1
            seq = self._asked
            try:
                process.stdin.write(STATE_PREFIX + str(seq).encode() + b"\n")
                return await asyncio.wait_for(_answer(process.stdout, seq), STATE_TIMEOUT_S)
            except (BrokenPipeError, ConnectionResetError, asyncio.TimeoutError, ValueError):
                return None

    def _forward(self, signum: int) -> None:
        """Pass a stop signal on to every running worker (a second one too: they then spill at once)."""
        self._signals += 1
        self.stopping = True
        name = signal.Signals(signum).name
        log.info("%s: stopping the workers%s", name, " now (asked twice)" if self._signals > 1 else "")
        for process in self.processes.values():
            if process.returncode is None and process.stdin is not None:
                try:
                    process.stdin.write(STOP_LINE)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # it is exiting anyway


async def _answer(stdout: asyncio.StreamReader, seq: int) -> dict | None:
    """[web] The answer to question ``seq``; one that came too late to an earlier question is skipped."""
    while True:
        answer = json.loads(await stdout.readline() or b"null")
        if answer is None or answer.get("seq") == seq:
            return answer


def ignore_stop_signals() -> None:
    """In a worker: SIGTERM and SIGINT are the parent's to act on (see the module doc)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


async def follow_parent(stop: Callable[[], None], report: Callable[[int], Awaitable[None]] | None = None) -> None:
    """In a worker: call ``stop`` for each "stop" line from the parent, and once when it is gone.

    [web] ``report(n)`` answers each "state <n>" line (the live view's snapshot).
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line == STOP_LINE:
            stop()
        elif report is not None and line.startswith(STATE_PREFIX) and line[len(STATE_PREFIX):].strip().isdigit():
            await report(int(line[len(STATE_PREFIX):]))  # [web]
    log.warning("the parent process is gone: stopping")
    stop()
