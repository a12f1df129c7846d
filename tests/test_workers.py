"""Worker processes: how buses are shared out, which spools are orphans, ``--worker`` and ``workers``.

Pure functions on plans and folders, the argument parser in process, and the
config errors through the real CLI. tests/integration/test_workers.py runs
the workers themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from susee.cli import build_parser
from susee.config import DeviceSettings, Settings
from susee.devices import DevicePlan
from susee.sample import Sample
from susee.spool import Spool
from susee.workers import bus_of, orphan_spools, partition, spool_folder, worker_count, worker_settings

EXIT_CONFIG = 2
CLI_TIMEOUT_S = 30  # generous: the processes run in parallel on a busy CI box
TICK_S = 1613644200.0  # 2021-02-18 10:30:00 UTC
SPOOL_MAX_BYTES = 10 * 1024 * 1024


# --- plans -------------------------------------------------------------------------


def plan(device_id: str, bus: str) -> DevicePlan:
    """A device on ``bus``: "host:port" for Modbus TCP, "/dev/..." for a serial line."""
    if bus.startswith("/dev/"):
        settings = DeviceSettings(id=device_id, serial=bus)
    else:
        host, _, port = bus.partition(":")
        settings = DeviceSettings(id=device_id, host=host, port=int(port))
    return DevicePlan(settings, None, ())


def plans_of(layout: list[tuple[str, str]]) -> list[DevicePlan]:
    return [plan(device_id, bus) for device_id, bus in layout]


A, B, C, D = "10.0.0.1:502", "10.0.0.2:502", "10.0.0.1:503", "10.0.0.3:502"  # same host, other port: other bus
TTY0, TTY1 = "/dev/ttyUSB0", "/dev/ttyUSB1"

# (case id, devices in config order as (id, bus), worker count, expected ids per worker)
PARTITIONS = [
    ("one-worker-takes-all", [("a1", A), ("b1", B), ("a2", A)], 1, [["a1", "b1", "a2"]]),
    (
        "largest-bus-first-then-the-lightest-worker",
        [("a1", A), ("a2", A), ("a3", A), ("b1", B), ("b2", B), ("c1", C)],
        2,
        [["a1", "a2", "a3"], ["b1", "b2", "c1"]],
    ),
    (
        "equal-buses-alternate-lowest-index-on-ties",
        [("a1", A), ("b1", B), ("c1", C), ("d1", D)],
        2,
        [["a1", "c1"], ["b1", "d1"]],
    ),
    (
        "a-big-bus-is-never-split",
        [("a1", A), ("a2", A), ("a3", A), ("a4", A), ("a5", A), ("b1", B), ("c1", C), ("d1", D)],
        2,
        [["a1", "a2", "a3", "a4", "a5"], ["b1", "c1", "d1"]],
    ),
    (
        "config-order-kept-within-a-worker",
        [("a1", A), ("b1", B), ("a2", A), ("c1", C), ("b2", B)],
        2,
        [["a1", "a2", "c1"], ["b1", "b2"]],
    ),
    (
        "one-bus-each",
        [("a1", A), ("b1", B), ("b2", B), ("c1", C), ("c2", C), ("c3", C)],
        3,
        [["c1", "c2", "c3"], ["b1", "b2"], ["a1"]],
    ),
    (
        "serial-lines-are-buses-too",
        [("s1", TTY0), ("s2", TTY0), ("t1", TTY1), ("a1", A), ("s3", TTY0)],
        2,
        [["s1", "s2", "s3"], ["t1", "a1"]],
    ),
]


@pytest.mark.parametrize(("case_id", "layout", "count", "expected"), PARTITIONS, ids=[c[0] for c in PARTITIONS])
def test_partition_balances_devices_keeps_buses_whole_and_config_order(case_id, layout, count, expected) -> None:
    plans = plans_of(layout)

    shares = partition(plans, count)

    assert [[p.id for p in share] for share in shares] == expected
    owner = {p.id: k for k, share in enumerate(shares) for p in share}
    assert sorted(owner) == sorted(p.id for p in plans), "every device exactly once"
    buses: dict[str, set[int]] = {}
    for p in plans:
        buses.setdefault(bus_of(p), set()).add(owner[p.id])
    assert all(len(workers) == 1 for workers in buses.values()), buses
    loads = [len(share) for share in shares]
    largest_bus = max(sum(1 for p in plans if bus_of(p) == bus) for bus in buses)
    assert max(loads) - min(loads) <= largest_bus, loads


def test_partition_is_deterministic_for_equal_configurations() -> None:
    layout = [(f"m{n:03d}", f"10.0.{n % 7}.1:{502 + n % 3}") for n in range(60)]

    first = partition(plans_of(layout), 4)
    again = partition(plans_of(layout), 4)

    assert [[p.id for p in share] for share in first] == [[p.id for p in share] for share in again]


# The parent and each worker compute the split on their own (the parent passes
# only K/N): it must not depend on anything per-process, such as string hashing.
SPLIT_SCRIPT = """
from susee.config import DeviceSettings
from susee.devices import DevicePlan
from susee.workers import partition
plans = [DevicePlan(DeviceSettings(id=f"m{n:03d}", host=f"10.0.{n % 7}.1", port=502 + n % 3), None, ())
         for n in range(60)]
print([[p.id for p in share] for share in partition(plans, 4)])
"""


def test_partition_is_the_same_in_processes_with_other_hash_seeds() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-c", SPLIT_SCRIPT], env=os.environ | {"PYTHONHASHSEED": seed},
            capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    layout = [(f"m{n:03d}", f"10.0.{n % 7}.1:{502 + n % 3}") for n in range(60)]

    assert outputs == {repr([[p.id for p in share] for share in partition(plans_of(layout), 4)]) + "\n"}


# (case id, workers setting, number of buses, CPUs this process may use (None: the
# platform cannot tell, as off Linux), os.cpu_count(), expected worker count)
WORKER_COUNTS = [
    ("one", 1, 3, 8, 8, 1),
    ("as-asked", 2, 3, 8, 8, 2),
    ("capped-at-the-buses", 8, 3, 8, 8, 3),
    ("no-devices-still-one", 4, 0, 8, 8, 1),
    ("auto-one-per-cpu", "auto", 6, 4, 4, 4),
    ("auto-capped-at-the-buses", "auto", 3, 16, 16, 3),
    ("auto-a-cpu-limit-beats-the-host-count", "auto", 6, 2, 16, 2),
    ("auto-without-affinity-the-host-count", "auto", 6, None, 4, 4),
    ("auto-unknown-cpu-count", "auto", 3, None, None, 1),
]


@pytest.mark.parametrize(("case_id", "setting", "buses", "usable", "cpus", "expected"), WORKER_COUNTS,
                         ids=[c[0] for c in WORKER_COUNTS])
def test_worker_count_is_the_setting_or_cpus_capped_at_the_buses(
    monkeypatch, case_id, setting, buses, usable, cpus, expected
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    if usable is None:
        monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    else:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(usable)), raising=False)
    plans = [plan(f"m{bus}{n}", f"10.0.0.{bus + 1}:502") for bus in range(buses) for n in range(2)]

    assert worker_count(setting, plans) == expected


def test_more_workers_than_buses_leaves_no_worker_empty() -> None:
    plans = plans_of([("a1", A), ("a2", A), ("b1", B)])

    shares = partition(plans, worker_count(5, plans))

    assert [[p.id for p in share] for share in shares] == [["a1", "a2"], ["b1"]]


@pytest.mark.parametrize(
    ("index", "count", "expected"),
    [(0, 1, "."), (0, 2, "worker-0"), (1, 2, "worker-1"), (11, 12, "worker-11")],
)
def test_spool_folder_is_the_root_alone_or_one_per_worker(tmp_path, index, count, expected) -> None:
    assert spool_folder(tmp_path, index, count) == (tmp_path / expected if expected != "." else tmp_path)


# --- orphan spools -----------------------------------------------------------------


def device_tick(device_id: str, tick_index: int = 0) -> list[Sample]:
    return [Sample(device_id, str(101 + n), TICK_S + tick_index, 230.0 + n, 1.5, 0) for n in range(8)]


def fill(folder: Path, state: str) -> None:
    """``folder`` as a spool in ``state``: "rows" pending, "drained" (all acked), "bare" (no spool files)."""
    if state == "bare":
        folder.mkdir(parents=True, exist_ok=True)
        return
    spool = Spool(folder, SPOOL_MAX_BYTES, "stop_polling")
    spool.open()
    try:
        spool.append(device_tick("d01"))
        spool.append(device_tick("d02", 1))
        if state == "drained":
            spool.ack(spool.read(10**6))
    finally:
        spool.close()


ROWS, DRAINED, BARE = "rows", "drained", "bare"

# (case id, {folder under the spool root ("." is the root): state}, worker count, expected orphans)
ORPHANS = [
    ("nothing-there", {}, 2, []),
    ("root-of-a-single-process-is-its-own", {".": ROWS}, 1, []),
    ("root-left-by-a-single-process-run", {".": ROWS}, 2, ["."]),
    ("own-worker-folders", {"worker-0": ROWS, "worker-1": ROWS}, 2, []),
    ("fewer-workers-than-before", {"worker-0": ROWS, "worker-1": ROWS, "worker-2": ROWS, "worker-3": ROWS}, 2,
     ["worker-2", "worker-3"]),
    ("back-to-one-process-every-worker-folder", {".": ROWS, "worker-0": ROWS, "worker-1": ROWS}, 1,
     ["worker-0", "worker-1"]),
    ("a-far-worker", {"worker-5": ROWS}, 2, ["worker-5"]),
    ("two-digit-index-owned", {"worker-10": ROWS, "worker-2": ROWS}, 11, []),
    ("two-digit-index-orphaned", {"worker-10": ROWS, "worker-2": ROWS}, 3, ["worker-10"]),
    ("root-and-workers-beyond-the-count", {".": ROWS, "worker-0": ROWS, "worker-3": ROWS}, 3, [".", "worker-3"]),
    ("drained-folders-are-no-orphans", {".": DRAINED, "worker-4": DRAINED}, 2, []),
    ("bare-folders-are-no-orphans", {"worker-4": BARE, "worker-0": BARE}, 1, []),
    ("not-worker-folders", {"worker-x": ROWS, "worker-": ROWS, "workers-3": ROWS, "old-worker-3": ROWS}, 1, []),
]


@pytest.mark.parametrize(("case_id", "layout", "count", "expected"), ORPHANS, ids=[c[0] for c in ORPHANS])
def test_orphan_spools_are_folders_with_rows_no_process_of_this_run_owns(
    tmp_path, case_id, layout, count, expected
) -> None:
    root = tmp_path / "spool"
    for name, state in layout.items():
        fill(root / name, state)

    orphans = orphan_spools(root, count)

    assert sorted(orphans) == sorted(root / name for name in expected)
    assert len(set(orphans)) == len(orphans)


def test_a_file_named_like_a_worker_folder_is_ignored(tmp_path) -> None:
    root = tmp_path / "spool"
    fill(root / "worker-1", ROWS)
    (root / "worker-7").write_text("not a spool", encoding="utf-8")

    assert orphan_spools(root, 1) == [root / "worker-1"]


def test_orphan_spools_of_a_missing_root_is_empty(tmp_path) -> None:
    assert orphan_spools(tmp_path / "never-created", 1) == []
    assert orphan_spools(tmp_path / "never-created", 4) == []


# --- --worker K/N ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("0/1", (0, 1)), ("0/2", (0, 2)), ("1/2", (1, 2)), ("15/16", (15, 16))])
def test_worker_option_reads_k_of_n(text, expected) -> None:
    args = build_parser().parse_args(["run", "--config", "site.yaml", "--worker", text])

    assert args.worker == expected


def test_run_without_worker_option_is_not_a_worker() -> None:
    assert build_parser().parse_args(["run", "--config", "site.yaml"]).worker is None


@pytest.mark.parametrize("text", ["2/2", "3/2", "0/0", "1", "1/", "/2", "a/2", "1/b", "1/2/3", "-1/2", "1.0/2", ""])
def test_worker_option_not_k_of_n_with_k_below_n_exits_2(capsys, text) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "--config", "site.yaml", "--worker", text])

    assert exited.value.code == EXIT_CONFIG
    assert "--worker" in capsys.readouterr().err


def test_worker_option_is_hidden_from_help(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "--help"])

    shown = capsys.readouterr().out
    assert exited.value.code == 0
    assert "--duration" in shown
    assert "--worker" not in shown


# The workers setting itself (bad values, defaults) is tested with the other settings in test_config.


def test_worker_settings_are_a_copy_with_the_workers_spool_and_no_simulator(tmp_path) -> None:
    site = Settings(database={"url": "mysql://root@127.0.0.1"}, workers=2, simulator={"enabled": True},
                    spool={"path": str(tmp_path / "spool")})

    worker = worker_settings(site, 1, 2)

    assert (worker.spool.path, worker.simulator) == (tmp_path / "spool" / "worker-1", None)
    assert (site.spool.path, site.simulator.enabled) == (tmp_path / "spool", True), "the site's settings are unchanged"
    assert worker.database == site.database and worker.workers == 2
