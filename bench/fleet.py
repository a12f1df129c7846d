"""Fleet benchmark: the real susee service against a simulated fleet, next to the floor.

    .venv/bin/python bench/fleet.py --meters 50 500 --duration 15 [--workers 1 2]

For each N: a fresh database ``susee_bench_<random>``, a fleet server process
(bench/fleet_server.c, compiled on first use; bench/fleet_server.py with
``--fleet python`` or without a C compiler), then for each ``workers``
setting a generated site file and ``python -m susee`` as a subprocess, its
process tree (the service and its worker processes) measured from the OS
accounting over a steady window after the warm-up, then the floor client
(bench/floor.py) on the same fleet and window.
Prints one table and the ratio susee / floor of CPU per device-tick. See
bench/README.md for what each column means and how it is measured.
"""

from __future__ import annotations

import argparse
import calendar
import json
import math
import os
import platform
import re
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pymysql

import floor

BENCH = Path(__file__).resolve().parent
FLEET_SOURCE = BENCH / "fleet_server.c"
# Compiled on first use, rebuilt when the source is newer; ignored by git.
FLEET_BINARY = BENCH / ".build" / "fleet_server"
COMPILERS = ("cc", "gcc", "clang")
COMPILE_TIMEOUT_S = 120.0
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
JOB_ID = "bench"  # susee's tables: seebenchRaw, seebenchLast
FLOOR_JOB = "floor"  # the floor's tables in the same database: seefloorRaw, seefloorLast
PARAMS_PER_DEVICE = floor.ROWS_PER_DEVICE_TICK  # PAC3200 default set: 8 rows per device-tick
ON_TIME_MS = 1000.0  # a row is on time with Code 0 and a Delay under one sampling period
# --duration covers warm-up + window + this: the window's last tick is polled and
# flushed before the service stops on its own.
STOP_MARGIN_S = 3.0
# After --duration the service drains its queue (shutdown timeout 10 s); a
# 5000-device start-up adds its own seconds before the duration starts counting.
EXIT_GRACE_S = 60.0
# CPU is sampled half a period after a tick: small fleets are idle then, so the
# window holds exactly S polls and S writer flushes.
SAMPLE_OFFSET_S = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
# utime/stime count whole clock ticks (10 ms at 100 Hz): below this many in the
# window, the CPU figure carries more than 1 % quantisation error: say so.
CPU_TICKS_FOR_PRECISION = 100
STOP_WAIT_S = 20.0
FILES_SLACK = 64  # interpreter, logs, database connections
PHASE_COUNTERS = ("accepted", "requests", "exceptions")  # fleet server counters reported per phase
LOG_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL)\b")


# -- processes and OS accounting ---------------------------------------------------------

def raise_open_files_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit; children (service, fleet) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state is [0], ppid [1]), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return None


def cpu_ticks(pid: int | None) -> int | None:
    """utime + stime of a process (all its threads) in clock ticks, None if gone."""
    fields = stat_fields(pid) if pid is not None else None
    if fields is None:
        return None
    return int(fields[11]) + int(fields[12])


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, root first: ppid chains from one scan of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, index = [root], 0
    while index < len(tree):
        tree += sorted(children.get(tree[index], ()))
        index += 1
    return tree


def command_line(pid: int) -> str:
    """The arguments of a process joined by spaces, '' if gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def environment(pid: int) -> dict[str, str] | None:
    """The environment a process was started with, None if unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            pairs = environ.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    return dict(pair.partition("=")[::2] for pair in pairs if pair)


def runtime_ns(pid: int | None) -> int | None:
    """se.sum_exec_runtime summed over the threads of ``pid`` (ns), where the kernel shows it.

    Only used to qualify figures with few clock ticks: utime + stime stay the measurement.
    """
    if pid is None:
        return None
    total = 0
    try:
        for task in os.scandir(f"/proc/{pid}/task"):
            with open(f"{task.path}/sched", encoding="ascii") as sched:
                for line in sched:
                    if line.startswith("se.sum_exec_runtime"):
                        total += round(float(line.split(":")[1]) * 1e6)  # shown in ms
                        break
    except (OSError, ValueError):
        return None
    return total


def status_kib(pid: int, *keys: str) -> dict[str, int | None]:
    """VmRSS, VmHWM ... of /proc/<pid>/status in KiB."""
    found: dict[str, int | None] = dict.fromkeys(keys)
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in found:
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def find_mariadbd() -> int | None:
    """The pid of the local MariaDB server, by process name."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/comm", encoding="ascii") as comm:
                    if comm.read().strip() in ("mariadbd", "mysqld"):
                        return int(entry.name)
            except OSError:
                continue
    return None


def clean_environment(secrets_dir: Path) -> dict[str, str]:
    """This shell's environment minus anything that would override the generated site.yaml."""
    legacy = {"user_db", "pswd_db", "host_db", "port_db"}
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SUSEE_") and k.lower() not in legacy}
    env["SUSEE_SECRETS_DIR"] = str(secrets_dir)  # empty: /run/secrets must not leak in
    return env


def with_susee_src(env: dict[str, str], src: Path | None) -> dict[str, str]:
    """``env`` with ``src`` first on PYTHONPATH, so ``python -m susee`` imports that tree."""
    if src is not None:
        env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, (str(src.resolve()), env.get("PYTHONPATH"))))}
    return env


class Child:
    """A subprocess in its own session (Ctrl-C reaches only the harness, which stops it)."""

    def __init__(self, name: str, command: list[str], cwd: Path, env: dict[str, str], stdout=None) -> None:
        self.name = name
        self.stderr_path = cwd / f"{name}.stderr"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self._stdout = stdout if stdout is not None else open(cwd / f"{name}.stdout", "wb")  # noqa: SIM115
        self.started_s = time.time()
        self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._stdout, stderr=self._stderr,
                                     start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """SIGTERM (a clean stop for susee), then SIGKILL to its process group if it does not end.

        The group is the session this child leads, so it holds the service's
        workers too (and nothing else); until the child is reaped its pid, and
        so the group id, cannot be reused.
        """
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(STOP_WAIT_S) is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for stream in (self._stderr, self._stdout, self.proc.stdout):
            if hasattr(stream, "close"):
                stream.close()

    def stdout_json(self) -> dict:
        """The last JSON line the child printed (the floor's own summary), or {}."""
        try:
            lines = (self.stderr_path.parent / f"{self.name}.stdout").read_text(encoding="utf-8").splitlines()
            return json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            return {}

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


@dataclass(frozen=True)
class FleetServer:
    """The fleet server program of a run: how to start it and how the header names it."""

    command: tuple[str, ...]
    description: str


def fleet_server(choice: str) -> FleetServer:
    """The C fleet server (compiled on first use) for ``c``, the Python one for ``python``.

    The C server is the default because the fleet shares the machine's cores
    with the service under test: the Python one spends ~15 us per request
    there, which shows in the service's Delay. When the C server cannot be
    built, one note says why and the Python server stands in.
    """
    python = FleetServer((sys.executable, str(BENCH / "fleet_server.py")), "Python, bench/fleet_server.py")
    if choice == "python":
        return python
    binary, problem = build_c_fleet_server()
    if binary is None:
        print(f"note: {problem}; using the Python fleet server bench/fleet_server.py instead, which takes more"
              f" of the shared cores (Delay then includes more of the simulator)", file=sys.stderr, flush=True)
        return FleetServer(python.command, f"{python.description} (fallback: {problem})")
    return FleetServer((str(binary),), f"C, {binary.relative_to(BENCH.parent)} built from"
                                       f" {FLEET_SOURCE.relative_to(BENCH.parent)}")


def build_c_fleet_server() -> tuple[Path | None, str]:
    """bench/.build/fleet_server, compiled with ``cc -O2`` if missing or older than its source.

    Returns the binary, or None and what went wrong. The compiler writes to a
    temporary name that is then renamed, so a concurrent harness never starts
    a half-written binary.
    """
    try:
        if FLEET_BINARY.stat().st_mtime >= FLEET_SOURCE.stat().st_mtime:
            return FLEET_BINARY, ""
    except FileNotFoundError:
        pass
    compiler = next(filter(None, map(shutil.which, COMPILERS)), None)
    if compiler is None:
        return None, f"no C compiler found ({', '.join(COMPILERS)})"
    FLEET_BINARY.parent.mkdir(exist_ok=True)
    partial = FLEET_BINARY.with_name(f"{FLEET_BINARY.name}.{os.getpid()}.tmp")
    command = [compiler, "-O2", "-std=c11", "-Wall", "-Wextra", "-o", str(partial), str(FLEET_SOURCE), "-lm"]
    try:
        built = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        partial.unlink(missing_ok=True)
        return None, f"{' '.join(command)} failed: {exc}"
    if built.returncode != 0:
        partial.unlink(missing_ok=True)
        errors = [line for line in built.stderr.splitlines() if "error" in line] or built.stderr.splitlines()
        return None, f"{Path(compiler).name} could not compile {FLEET_SOURCE.name}: {(errors or ['?'])[0].strip()}"
    os.replace(partial, FLEET_BINARY)
    print(f"compiled {FLEET_BINARY.relative_to(BENCH.parent)} from {FLEET_SOURCE.relative_to(BENCH.parent)}"
          f" with {Path(compiler).name} -O2", file=sys.stderr, flush=True)
    return FLEET_BINARY, ""


class Fleet:
    """The fleet server process: its ports and its connection statistics."""

    def __init__(self, meters: int, units_per_port: int, cwd: Path, env: dict[str, str],
                 server: FleetServer | None = None) -> None:
        self.units_per_port = units_per_port
        port_count = math.ceil(meters / units_per_port)
        server = server if server is not None else fleet_server("c")
        command = [*server.command, "--ports", str(port_count), "--units-per-port", str(units_per_port)]
        self.child = Child("fleet", command, cwd, env, stdout=subprocess.PIPE)
        info = self._read_json(60.0)
        if info is None or "ports" not in info:
            self.child.stop()
            raise RuntimeError(f"fleet server did not start: {self.child.stderr_text().strip()[-500:]}")
        self.ports: list[int] = info["ports"]
        self._totals: dict[str, int] = {}

    @property
    def pid(self) -> int:
        return self.child.pid

    def stats(self) -> dict:
        """Counters since the last call, so each covers one phase (the accept peak restarts too)."""
        self.child.proc.send_signal(signal.SIGUSR1)
        stats = self._read_json(5.0) or {}
        for key in PHASE_COUNTERS:
            if key in stats:
                stats[key], self._totals[key] = stats[key] - self._totals.get(key, 0), stats[key]
        return stats

    def _read_json(self, timeout_s: float) -> dict | None:
        stream = self.child.proc.stdout
        ready, _, _ = select.select([stream], [], [], timeout_s)
        line = stream.readline() if ready else b""
        return json.loads(line) if line.strip() else None

    def stop(self) -> None:
        self.child.stop()


# -- database ------------------------------------------------------------------------------

def connect(database: str | None = None) -> pymysql.connections.Connection:
    conn = pymysql.connect(**MYSQL, database=database, autocommit=True, charset="utf8mb4")
    with conn.cursor() as cursor:
        cursor.execute("SET time_zone = '+00:00'")
    return conn


def create_database() -> str:
    name = f"susee_bench_{secrets.token_hex(4)}"
    with connect() as conn, conn.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    return name


def drop_database(name: str) -> None:
    if not name.startswith("susee_bench_"):  # never drop anything this harness did not create
        return
    try:
        with connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
    except pymysql.err.Error as exc:
        print(f"warning: could not drop database {name}: {exc}", file=sys.stderr)


def utc_text(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


@dataclass
class Rows:
    """What the database holds for one run's window."""

    written: int = 0
    on_time: int = 0
    device_ticks: int = 0
    missed: int = 0
    devices_missing_ticks: int = 0
    delay_ms: dict[str, float | None] = field(default_factory=dict)
    startup_s: float | None = None
    first_row_s: float | None = None


def analyse(database: str, job: str, meters: int, first_tick: int, window_s: int, spawned_s: float) -> Rows:
    """Count rows of the window's ticks, Delay percentiles, missed ticks, start-up time."""
    raw = f"see{job}Raw"
    low, high = utc_text(first_tick), utc_text(first_tick + window_s)
    where = "`Date` >= %s AND `Date` < %s"
    rows = Rows()
    with connect(database) as conn, conn.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), COALESCE(SUM(Code = 0 AND Delay < %s), 0), COUNT(DISTINCT idDevice, `Date`),"
            f" COUNT(DISTINCT idDevice), MAX(Delay) FROM `{raw}` WHERE {where}", (ON_TIME_MS, low, high))
        written, on_time, device_ticks, devices, max_delay = cursor.fetchone()
        rows.written, rows.on_time, rows.device_ticks = int(written), int(on_time), int(device_ticks)
        rows.missed = meters * window_s - rows.device_ticks
        # 0.1 ms buckets: exact enough for p50/p99, and a few thousand groups instead of millions of rows.
        cursor.execute(f"SELECT ROUND(Delay, 1), COUNT(*) FROM `{raw}` WHERE {where} GROUP BY 1 ORDER BY 1",
                       (low, high))
        histogram = [(float(d), int(c)) for d, c in cursor.fetchall() if d is not None]
        rows.delay_ms = {"p50": percentile(histogram, 0.50), "p99": percentile(histogram, 0.99),
                         "max": float(max_delay) if max_delay is not None else None}
        cursor.execute(
            f"SELECT COUNT(*) FROM (SELECT idDevice FROM `{raw}` WHERE {where} GROUP BY idDevice"
            f" HAVING COUNT(DISTINCT `Date`) < %s) AS short", (low, high, window_s))
        rows.devices_missing_ticks = int(cursor.fetchone()[0]) + (meters - int(devices))
        cursor.execute(
            f"SELECT `Date`, COUNT(*), SUM(Code = 0), MAX(Delay) FROM `{raw}` WHERE `Date` < %s"
            f" GROUP BY `Date` ORDER BY `Date`", (high,))
        for date, count, good, delay in cursor.fetchall():
            tick_s = calendar.timegm(date.timetuple()) + date.microsecond / 1e6
            arrived_s = tick_s + (float(delay or 0.0) / 1000.0)
            if rows.first_row_s is None and count:
                rows.first_row_s = arrived_s - spawned_s
            if int(good or 0) >= meters * PARAMS_PER_DEVICE:
                rows.startup_s = arrived_s - spawned_s
                break
    return rows


def percentile(histogram: list[tuple[float, int]], fraction: float) -> float | None:
    """Nearest-rank percentile of (value, count) pairs sorted by value."""
    total = sum(count for _, count in histogram)
    if not total:
        return None
    rank, seen = math.ceil(fraction * total), 0
    for value, count in histogram:
        seen += count
        if seen >= rank:
            return value
    return histogram[-1][0]


# -- one measured run ------------------------------------------------------------------------

@dataclass(frozen=True)
class TreeProcess:
    """One process of the measured tree at one moment."""

    pid: int
    start_ticks: int  # starttime since boot: a restarted worker that got an old pid is another process
    cpu_ticks: int
    runtime_ns: int | None
    command: str


@dataclass(frozen=True)
class ProcessShare:
    """What one process of the tree spent in the window (totals; per device-tick when reported)."""

    process: TreeProcess
    cpu_ticks: int
    runtime_us: float | None
    root: bool
    new: bool  # started in the window: all its CPU counts


@dataclass
class Result:
    """One row of the table."""

    label: str
    meters: int
    workers: int | None = None  # the service's workers setting; None for the floor
    expected: int = 0
    rows: Rows | None = None
    cpu_us: float | None = None
    rss_kib: int | None = None
    hwm_kib: int | None = None
    db_cpu_pct: float | None = None
    fleet_cpu_pct: float | None = None
    ratio: float | None = None
    cpu_ticks: int | None = None
    runtime_us: float | None = None  # scheduler runtime over the window, ns precision
    processes: list[ProcessShare] = field(default_factory=list)  # the tree's split of the CPU figures
    gone: list[TreeProcess] = field(default_factory=list)  # processes that ended in the window
    failed: str | None = None
    notes: list[str] = field(default_factory=list)


def sample_tree(root: int) -> dict[tuple[int, int], TreeProcess]:
    """The service process and its descendants, root first, keyed by (pid, starttime); {} if it is gone."""
    tree = {}
    for pid in process_tree(root):
        fields = stat_fields(pid)
        if fields is not None:
            process = TreeProcess(pid, int(fields[19]), int(fields[11]) + int(fields[12]), runtime_ns(pid),
                                  command_line(pid))
            tree[(pid, process.start_ticks)] = process
    return tree


def still_running(process: TreeProcess) -> bool:
    """The same process (pid and start time) is still there and not a zombie."""
    fields = stat_fields(process.pid)
    return fields is not None and int(fields[19]) == process.start_ticks and fields[0] != "Z"


@dataclass
class Snapshot:
    wall_s: float
    tree: dict[tuple[int, int], TreeProcess]
    mariadb: int | None
    fleet: int | None


def snapshot(pid: int, mariadb_pid: int | None, fleet_pid: int) -> Snapshot:
    return Snapshot(time.time(), sample_tree(pid), cpu_ticks(mariadb_pid), cpu_ticks(fleet_pid))


def tree_memory_kib(pids: list[int]) -> tuple[int | None, int | None]:
    """VmRSS and VmHWM summed over ``pids`` (None when no process shows them)."""
    rss = hwm = None
    for pid in pids:
        memory = status_kib(pid, "VmRSS", "VmHWM")
        if memory["VmRSS"] is not None:
            rss = (rss or 0) + memory["VmRSS"]
        if memory["VmHWM"] is not None:
            hwm = (hwm or 0) + memory["VmHWM"]
    return rss, hwm


def sleep_until(t_s: float, child: Child) -> bool:
    """Sleep until ``t_s``; False as soon as the child has exited."""
    while (remaining := t_s - time.time()) > 0:
        if not child.alive():
            return False
        time.sleep(min(remaining, 0.5))
    return child.alive()


@dataclass
class Bench:
    """What every measured run of one fleet size shares."""

    args: argparse.Namespace
    meters: int
    tmp: Path
    env: dict[str, str]
    database: str
    fleet: Fleet
    mariadb_pid: int | None


def measure(bench: Bench, label: str, job: str, command: list[str], workers: int | None = None) -> Result:
    """Start ``command``, measure its process tree over the steady window, let it stop, read the rows back."""
    args, meters, fleet = bench.args, bench.meters, bench.fleet
    result = Result(label, meters, workers, expected=meters * args.duration * PARAMS_PER_DEVICE)
    fleet.stats()  # the fleet's counters start over for this run
    phases: dict[str, dict] = {}
    with ExitStack() as stack:
        child = Child(label if workers in (None, 1) else f"{label}-w{workers}", command, bench.tmp, bench.env)
        stack.callback(child.stop)
        first_tick = math.ceil(child.started_s + args.warmup)
        before = after = None
        tree_notes: list[str] = []
        if sleep_until(first_tick + SAMPLE_OFFSET_S, child):
            before = snapshot(child.pid, bench.mariadb_pid, fleet.pid)
            phases["start-up"] = fleet.stats()
            tree_notes = _pythonpath_notes(before, args.susee_src)  # while the workers run
            if sleep_until(first_tick + args.duration + SAMPLE_OFFSET_S, child):
                after = snapshot(child.pid, bench.mariadb_pid, fleet.pid)
                phases["window"] = fleet.stats()
                result.rss_kib, result.hwm_kib = tree_memory_kib([p.pid for p in after.tree.values()])
        last_seen = sample_tree(child.pid)  # the workers as they are when the service stops
        code = child.wait(args.warmup + args.duration + STOP_MARGIN_S + EXIT_GRACE_S)
        phases["stop"] = fleet.stats()
        stray = [p for p in list(last_seen.values())[1:] if still_running(p)]
        log = child.stderr_text()
        own = child.stdout_json()
    _judge_exit(result, after is not None, code, child.proc.returncode, log)
    if not fleet.child.alive():
        result.failed = f"the fleet server exited (code {fleet.child.proc.returncode}) during the run"
        result.notes += fleet.child.stderr_text().strip().splitlines()[-5:]
    if after is not None:
        _account(result, before, after)
    try:
        result.rows = analyse(bench.database, job, meters, first_tick, args.duration, child.started_s)
    except pymysql.err.Error as exc:
        result.rows = Rows(missed=meters * args.duration)
        result.notes.append(f"no rows to analyse: {exc}")
    if result.rows.device_ticks and result.cpu_us is not None:
        result.cpu_us /= result.rows.device_ticks
        if result.runtime_us is not None:
            result.runtime_us /= result.rows.device_ticks
    else:
        result.cpu_us = result.runtime_us = None
    _describe_run(result, first_tick - child.started_s, len(fleet.ports), phases, log)
    result.notes += tree_notes
    if stray:
        result.notes.append(f"left running after the service exited, killed: {_names(stray)}")
        for process in stray:
            if still_running(process):
                os.kill(process.pid, signal.SIGKILL)
    if "cpu_us_per_device_tick" in own:
        result.notes.append(f"its own getrusage over its ticks after the warm-up: {own['cpu_us_per_device_tick']}"
                            f" us per device-tick, {own.get('overruns', 0)} overrun(s)")
    return result


def _judge_exit(result: Result, measured: bool, code: int | None, returncode: int | None, log: str) -> None:
    """A run fails when it died before the window ended or exited non-zero; show its last words."""
    if not measured:
        result.failed = f"exited (code {returncode}) before the window ended; its last lines:"
    elif code is None:
        result.notes.append(f"did not stop within {EXIT_GRACE_S:g} s after --duration: killed")
    elif code != 0:
        result.failed = f"exit code {code}; its last lines:"
    if result.failed:
        result.notes += log.strip().splitlines()[-8:]
    if "Too many open files" in log:
        result.notes.append(f"'Too many open files' appears {log.count('Too many open files')} time(s) in stderr")


def _fleet_notes(result: Result, ports: int, phases: dict[str, dict]) -> list[str]:
    """What the fleet saw: connections per phase (a storm, reconnects), requests polled in the window."""
    notes = []
    connections = ", ".join(f"{name} {p.get('accepted', '?')} (peak {p.get('max_accepts_per_s', '?')}/s)"
                            for name, p in phases.items())
    exceptions = sum(p.get("exceptions", 0) for p in phases.values())
    notes.append(f"fleet: connections accepted for {ports} port(s): {connections}; {exceptions} exception"
                 f" response(s); fleet server CPU {_fmt(result.fleet_cpu_pct, '.0f')} % of a core in the window")
    requests = phases.get("window", {}).get("requests")
    if requests is not None and result.rows is not None:
        polled = requests / len(floor.BLOCKS)
        written = result.rows.device_ticks
        if abs(polled - written) > max(0.01 * written, result.meters):  # a tick's worth of slack at the edges
            notes.append(f"the fleet answered {requests} requests in the window (~{polled:.0f} device-ticks polled)"
                         f" but {written} device-ticks were written for the window's ticks")
    return notes


def _account(result: Result, before: Snapshot, after: Snapshot) -> None:
    """CPU of the measured process tree (divided by device-ticks later), MariaDB and fleet CPU %.

    A process present at both samples counts its delta, one started in the
    window all its CPU; one that ended in the window is missing from the sum
    (listed in ``result.gone``).
    """
    wall_s = after.wall_s - before.wall_s
    roots = next(iter(before.tree), None), next(iter(after.tree), None)
    if roots[0] is not None and roots[0] == roots[1]:
        for key, process in after.tree.items():
            old = before.tree.get(key)
            ticks = process.cpu_ticks - (old.cpu_ticks if old else 0)
            ns = None
            if process.runtime_ns and (old is None or old.runtime_ns):
                ns = process.runtime_ns - (old.runtime_ns if old else 0)
            result.processes.append(ProcessShare(process, ticks, None if ns is None else ns / 1e3, key == roots[0],
                                                 old is None))
        result.gone = [process for key, process in before.tree.items() if key not in after.tree]
        result.cpu_ticks = sum(share.cpu_ticks for share in result.processes)
        result.cpu_us = result.cpu_ticks / CLK_TCK * 1e6  # total, per device-tick below
        if all(share.runtime_us is not None for share in result.processes):
            result.runtime_us = sum(share.runtime_us for share in result.processes)
    if before.mariadb is not None and after.mariadb is not None:
        result.db_cpu_pct = 100.0 * (after.mariadb - before.mariadb) / CLK_TCK / wall_s
    if before.fleet is not None and after.fleet is not None:
        result.fleet_cpu_pct = 100.0 * (after.fleet - before.fleet) / CLK_TCK / wall_s


def _describe_run(result: Result, window_start_s: float, ports: int, phases: dict[str, dict], log: str) -> None:
    rows = result.rows
    if rows.startup_s is None:
        result.notes.append("no tick with Code 0 rows from every device before the window ended")
    elif rows.startup_s > window_start_s:
        result.notes.append(f"start-up ({rows.startup_s:.1f} s) ended after the window began"
                            f" ({window_start_s:.1f} s): the window includes start-up")
    if result.cpu_ticks is not None and rows.device_ticks:
        text = f"{result.cpu_ticks} clock ticks of CPU in the window"
        if result.cpu_ticks < CPU_TICKS_FOR_PRECISION:
            resolution_us = 1e6 / CLK_TCK / rows.device_ticks
            text += f" (+/- {resolution_us:.0f} us per device-tick: a larger N or --duration makes it exact)"
        if result.runtime_us:
            text += f"; scheduler runtime {result.runtime_us:.1f} us per device-tick"
        result.notes.append(text)
    result.notes += _tree_notes(result)
    if rows.devices_missing_ticks:
        result.notes.append(f"{rows.devices_missing_ticks} device(s) missing at least one tick in the window")
    result.notes += _fleet_notes(result, ports, phases)
    problems = [line for line in log.splitlines() if LOG_LINE.match(line)]
    if problems:
        kinds = {k: sum(k in line for line in problems) for k in ("overran", "dropped", "unavailable", "Too many")}
        summary = ", ".join(f"{n} '{k}'" for k, n in kinds.items() if n)
        result.notes.append(f"stderr: {len(problems)} WARNING/ERROR line(s){f' ({summary})' if summary else ''};"
                            f" first: {problems[0][:200]}")


def _name(process: TreeProcess) -> str:
    """'1234 (--worker 0/2)': the pid and the worker share, or the start of the command line."""
    words = process.command.split()
    if "--worker" in words[:-1]:
        return f"{process.pid} (--worker {words[words.index('--worker') + 1]})"
    return f"{process.pid} ({process.command[:60]})"


def _names(processes: list[TreeProcess]) -> str:
    return ", ".join(f"pid {_name(process)}" for process in processes)


def _tree_notes(result: Result) -> list[str]:
    """The CPU split over the service's processes and changes of the tree, when it has more than one."""
    device_ticks = result.rows.device_ticks if result.rows else 0
    notes = []
    if (len(result.processes) > 1 or result.gone) and device_ticks:
        precise = all(share.runtime_us is not None for share in result.processes)

        def per_tick(share: ProcessShare) -> str:
            us = share.runtime_us if precise else share.cpu_ticks / CLK_TCK * 1e6
            return f"{us / device_ticks:.1f} us"

        parts = [f"parent {per_tick(s)}" for s in result.processes if s.root]
        children = [f"{_name(s.process)}: {per_tick(s)}" for s in result.processes if not s.root]
        if children:
            parts.append("worker pids " + ", ".join(children))
        notes.append(f"{', '.join(parts)} per device-tick"
                     f" ({'scheduler runtime' if precise else 'clock ticks'}; the table sums them)")
    started = [s.process for s in result.processes if s.new]
    if started or result.gone:
        notes.append(f"the process tree changed in the window (a worker restarted?):"
                     f" ended {_names(result.gone) or '-'}; started {_names(started) or '-'}."
                     f" An ended process's CPU after the window start is missing, a started one's counts from its start")
    return notes


def _pythonpath_notes(before: Snapshot, src: Path | None) -> list[str]:
    """With --susee-src: the descendants that did not inherit it on PYTHONPATH (they may run another susee)."""
    if src is None:
        return []
    wanted = str(src.resolve())
    environments = [(p, environment(p.pid)) for p in list(before.tree.values())[1:]]
    missing = [p for p, env in environments
               if env is not None and wanted not in env.get("PYTHONPATH", "").split(os.pathsep)]
    return [f"{_names(missing)}: {wanted} is not on PYTHONPATH, it may import another susee"] if missing else []


# -- one N -----------------------------------------------------------------------------------

def write_site(tmp: Path, database: str, ports: list[int], meters: int, units_per_port: int,
               workers: int = 1, extra: Sequence[str] = ()) -> Path:
    """site.yaml with devices d00000.. spread over the fleet's ports, units 1..U on each.

    One worker is the service's default: the file then has no ``workers`` key and
    is the one every version of susee reads. Each worker count has its own job
    (tables) and file, so every run starts on empty tables like the first.
    """
    lines = [
        "# generated by bench/fleet.py",
        f'job_id: "{susee_job(workers)}"',
        "sample_time: 1",
        "log_level: WARNING",
        # Each worker count its own spool folder too: rows one run spilled must not be
        # replayed by the next one into its tables (they would count as its own).
        *([f"workers: {workers}", "spool:", f"  path: spool-w{workers}"] if workers != 1 else []),
        "database:",
        f'  url: "mysql://{MYSQL["user"]}@{MYSQL["host"]}:{MYSQL["port"]}/{database}"',
        *extra,  # --site: settings to compare, e.g. "http: {enabled: false}", "storage: {rollups: false}"
        "devices:",
    ]
    for index in range(meters):
        port, unit = ports[index // units_per_port], index % units_per_port + 1
        lines.append(f"  - {{id: d{index:05d}, profile: pac3200, host: 127.0.0.1, port: {port},"
                     f" unit: {unit}, timeout: 1.0}}")
    path = tmp / ("site.yaml" if workers == 1 else f"site-w{workers}.yaml")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def susee_job(workers: int) -> str:
    """The job_id of the run with ``workers``: bench, bench_w2, ... (tables seebenchRaw, seebench_w2Raw)."""
    return JOB_ID if workers == 1 else f"{JOB_ID}_w{workers}"


def cpu_ratio(susee: Result, floor_result: Result) -> float | None:
    """susee / floor CPU per device-tick, from the scheduler's ns runtime when both have it.

    utime + stime are that same runtime rounded to clock ticks; the ns figure keeps
    the ratio exact even when a short run holds only a few ticks.
    """
    if susee.runtime_us and floor_result.runtime_us:
        return susee.runtime_us / floor_result.runtime_us
    if susee.cpu_us and floor_result.cpu_us:
        return susee.cpu_us / floor_result.cpu_us
    return None


def bench_meters(meters: int, args: argparse.Namespace, mariadb_pid: int | None,
                 server: FleetServer) -> list[Result]:
    """susee and the floor for one fleet size; everything made here is removed on the way out."""
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="susee-bench-"))
        (tmp / "secrets").mkdir()
        env = with_susee_src(clean_environment(tmp / "secrets"), args.susee_src)
        database = create_database()
        if args.keep:
            print(f"N={meters}: keeping {tmp} and database {database}", file=sys.stderr)
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            stack.callback(drop_database, database)
        fleet = Fleet(meters, args.units_per_port, tmp, env, server)
        stack.callback(fleet.stop)
        # The fleet holds a listener and an accepted socket per port, each client one socket per port.
        needed = 2 * len(fleet.ports) + FILES_SLACK
        if needed > resource.getrlimit(resource.RLIMIT_NOFILE)[0]:
            print(f"warning: N={meters} needs ~{needed} open files, the limit is"
                  f" {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}", file=sys.stderr)
        bench = Bench(args, meters, tmp, env, database, fleet, mariadb_pid)
        run_s = args.warmup + args.duration + STOP_MARGIN_S
        results = []
        for workers in args.workers:
            site = write_site(tmp, database, fleet.ports, meters, args.units_per_port, workers, args.site)
            print(f"N={meters}: {len(fleet.ports)} port(s) x {args.units_per_port} unit(s), database {database};"
                  f" susee{f' workers={workers}' if workers != 1 else ''} for {run_s:g} s ...",
                  file=sys.stderr, flush=True)
            susee = [sys.executable, "-m", "susee", "--config", str(site), "--duration", f"{run_s:g}",
                     "--log-level", "WARNING"]
            results.append(measure(bench, "susee", susee_job(workers), susee, workers))
        if not args.no_floor:
            print(f"N={meters}: floor for {run_s:g} s ...", file=sys.stderr, flush=True)
            # The floor reads only the devices and the database URL, the same in every site file.
            floor_cmd = [sys.executable, str(BENCH / "floor.py"), "--site", str(site), "--duration", f"{run_s:g}",
                         "--warmup", f"{args.warmup:g}", "--job", FLOOR_JOB]
            floor_result = measure(bench, "floor", FLOOR_JOB, floor_cmd)
            for result in results:
                result.ratio = cpu_ratio(result, floor_result)
            results.append(floor_result)
        return results


# -- report ----------------------------------------------------------------------------------

def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COLUMNS = (
    # header, width
    ("run", 6), ("N", 6), ("workers", 7), ("expected", 9), ("written", 9), ("on-time %", 9), ("CPU us/dev-tick", 15),
    ("susee/floor", 11), ("Delay p50 ms", 12), ("p99 ms", 8), ("max ms", 8), ("missed", 7), ("RSS MiB", 8),
    ("KiB/meter", 9), ("HWM MiB", 8), ("MariaDB CPU %", 13), ("start-up s", 10),
)


def table(results: list[Result]) -> str:
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(COLUMNS))]
    for r in results:
        rows = r.rows or Rows()
        on_time = 100.0 * rows.on_time / r.expected if r.expected else None
        cells = [
            r.label + ("!" if r.failed else ""), str(r.meters), _fmt(r.workers, "d"), str(r.expected),
            str(rows.written),
            _fmt(on_time, ".2f"), _fmt(r.cpu_us, ".1f"), _fmt(r.ratio, ".2f"),
            _fmt(rows.delay_ms.get("p50"), ".1f"), _fmt(rows.delay_ms.get("p99"), ".1f"),
            _fmt(rows.delay_ms.get("max"), ".1f"), str(rows.missed),
            _fmt(r.rss_kib / 1024 if r.rss_kib else None, ".1f"),
            _fmt(r.rss_kib / r.meters if r.rss_kib else None, ".0f"),
            _fmt(r.hwm_kib / 1024 if r.hwm_kib else None, ".1f"), _fmt(r.db_cpu_pct, ".1f"),
            _fmt(rows.startup_s, ".1f"),
        ]
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, (_, w)) in enumerate(zip(cells, COLUMNS))))
    return "\n".join(lines)


def run_name(result: Result, workers: list[int]) -> str:
    """'susee N=1000', or 'susee N=1000 workers=2' when the runs differ in workers."""
    shown = result.workers is not None and workers != [1]
    return f"{result.label} N={result.meters}" + (f" workers={result.workers}" if shown else "")


def machine(mariadb_pid: int | None) -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        with connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT VERSION()")
            mariadb = cursor.fetchone()[0]
    except pymysql.err.Error as exc:
        mariadb = f"unreachable ({exc})"

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    uvloop = version("uvloop")
    load = Path("/proc/loadavg").read_text(encoding="ascii").split()[:3]
    return (f"machine: {model}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable),"
            f" {platform.system()} {platform.release()}\n"
            f"software: Python {platform.python_version()}, pymodbus {version('pymodbus')},"
            f" aiomysql {version('aiomysql')}, uvloop {'yes ' + uvloop if uvloop != 'not installed' else 'no'},"
            f" MariaDB {mariadb} (pid {mariadb_pid or 'not found'})\n"
            f"load average at start: {' '.join(load)}")


def describe_susee(env: dict[str, str]) -> str:
    """Which susee the service subprocess imports, and how far its tree is from HEAD."""
    probe = subprocess.run([sys.executable, "-c", "import susee; print(susee.__file__)"], env=env,
                           capture_output=True, text=True, check=False)
    package = Path(probe.stdout.strip()).parent if probe.returncode == 0 else None
    if package is None:
        return f"susee under test: cannot import ({probe.stderr.strip()[-200:]})"
    git = ["git", "-C", str(package)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return f"susee under test: {package}"
    changes = subprocess.run([*git, "status", "--porcelain", "--", "."], capture_output=True, text=True,
                             check=False).stdout.splitlines()
    return f"susee under test: {package} (git HEAD {head.stdout.strip()}, {len(changes)} uncommitted change(s) there)"


def check_plan() -> None:
    """The floor must send exactly the requests susee plans for a PAC3200's default params."""
    from susee.planner import plan_reads
    from susee.profiles import load_profile

    profile = load_profile("pac3200", BENCH)
    planned = [(b.function, b.address, b.count, b.param_ids) for b in plan_reads(profile, profile.default_ids)]
    mine = [(b.function, b.address, b.count, tuple(p for p, _, _ in b.fields)) for b in floor.BLOCKS]
    if planned != mine:
        raise SystemExit(f"bench/floor.py reads {mine}, but susee plans {planned}: update floor.BLOCKS")


def add_fleet_option(parser: argparse.ArgumentParser) -> None:
    """--fleet, shared with bench/replay.py."""
    parser.add_argument("--fleet", choices=("c", "python"), default="c",
                        help="fleet server: c (default; bench/fleet_server.c, compiled on first use into"
                             " bench/.build, costs the shared cores far less) or python (bench/fleet_server.py,"
                             " also the fallback when no C compiler works)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, nargs="+", required=True, metavar="N", help="fleet sizes to run")
    parser.add_argument("--duration", type=int, required=True, metavar="S", help="measured window, seconds")
    parser.add_argument("--warmup", type=int, default=5, metavar="W", help="seconds before the window (default 5)")
    parser.add_argument("--units-per-port", type=int, default=10, metavar="U",
                        help="unit ids per port, i.e. meters behind one gateway (default 10)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], metavar="K",
                        help="run susee with each of these 'workers' settings (default 1: one process);"
                             " the floor runs once per fleet size")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor reference")
    parser.add_argument("--site", action="append", default=[], metavar="YAML",
                        help='a top-level line added to the generated site.yaml, e.g. "http: {enabled: false}"')
    parser.add_argument("--susee-src", type=Path, metavar="DIR",
                        help="run susee from this src folder (e.g. unpacked by git archive) instead of the"
                             " installed one, to compare two versions on the same machine")
    add_fleet_option(parser)
    parser.add_argument("--keep", action="store_true",
                        help="keep the databases and temp folders (site.yaml, logs) for a look afterwards")
    args = parser.parse_args(argv)
    if min(args.meters) < 1 or min(args.workers) < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--meters, --workers and --duration must be >= 1, --warmup >= 0")
    args.workers = list(dict.fromkeys(args.workers))  # each count once, in the order given
    if not 1 <= args.units_per_port <= 247:
        parser.error("--units-per-port must be 1..247")
    return args


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # run the clean-up of every ExitStack on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    if args.susee_src is not None:
        sys.path.insert(0, str(args.susee_src.resolve()))  # check the plan of the susee under test
    check_plan()
    soft, _ = raise_open_files_limit()
    mariadb_pid = find_mariadbd()
    server = fleet_server(args.fleet)
    print(machine(mariadb_pid))
    print(describe_susee(with_susee_src(dict(os.environ), args.susee_src)))
    print(f"fleet server: {server.description}")
    print(f"open files limit {soft}; sample_time 1 s, warm-up {args.warmup} s, window {args.duration} s,"
          f" {args.units_per_port} unit(s) per port", flush=True)
    results: list[Result] = []
    try:
        for meters in args.meters:
            results += bench_meters(meters, args, mariadb_pid, server)
    except KeyboardInterrupt:
        print("interrupted: processes stopped, databases dropped", file=sys.stderr)
        interrupted = True
        if not results:
            return 130
    else:
        interrupted = False
    print()
    print(table(results))
    notes = [f"  {run_name(r, args.workers)}: {note}" for r in results
             for note in ([r.failed] if r.failed else []) + r.notes]
    for workers in args.workers:
        susee = [r for r in results if r.label == "susee" and r.workers == workers and r.rss_kib]
        if len(susee) >= 2:
            slope = (susee[-1].rss_kib - susee[0].rss_kib) / max(susee[-1].meters - susee[0].meters, 1)
            notes.append(f"  susee{f' workers={workers}' if args.workers != [1] else ''} RSS slope"
                         f" N={susee[0].meters}..{susee[-1].meters}: {slope:.1f} KiB per meter")
    if notes:
        print("\nnotes:")
        print("\n".join(notes))
    if interrupted:
        return 130
    return 0 if all(r.failed is None for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
