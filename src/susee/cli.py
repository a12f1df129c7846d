"""Command line: parse arguments, set up logging, build settings, hand over."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from susee import __version__, commands, legacy, logs, profile_commands, storage_commands
from susee.config import ConfigError, StartError
from susee.report.arguments import add_arguments as report_arguments

EXIT_CONFIG = 2
COMMANDS = ("run", "check", "migrate", "rollup", "read", "last", "simulate", "profile", "import-legacy", "report")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a value given before the subcommand is not overwritten by the default.
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help="site YAML file")
    common.add_argument("--log-level", default=argparse.SUPPRESS, type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override the config's log_level")
    common.add_argument("--version", action="version", version=f"susee {__version__}")
    common.add_argument("--log-format", default=argparse.SUPPRESS, choices=logs.FORMATS,
                        help=f"text (default) or json: one object per line (or set {logs.FORMAT_ENV})")

    parser = argparse.ArgumentParser(prog="susee", parents=[common],
                                     description="Clock-aligned Modbus energy meter acquisition into MariaDB.")
    parser.add_argument("--duration", type=float, default=argparse.SUPPRESS, help="stop cleanly after SECONDS")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the acquisition service (the default)")
    run.add_argument("--duration", type=float, default=argparse.SUPPRESS, help="stop cleanly after SECONDS")
    # Set by the parent process of a site with ``workers`` > 1: poll share K of N (see susee.workers).
    run.add_argument("--worker", type=_worker_share, default=None, help=argparse.SUPPRESS)
    sub.add_parser("check", parents=[common], help="validate, show the plan, try each device and the database")
    migrate = sub.add_parser("migrate", parents=[common], help="create or upgrade the database tables")
    migrate.add_argument("--compact", action="store_true",
                         help="then copy Raw into the compact layout (MariaDB; resumable, the service may run)")
    rollup = sub.add_parser("rollup", parents=[common], help="recompute the 15-minute rollups of a range from Raw")
    rollup.add_argument("--from", dest="start", metavar="UTC", help="first day or time (default: oldest row)")
    rollup.add_argument("--to", dest="end", metavar="UTC", help="end, exclusive (default: after the newest row)")
    rollup.add_argument("--connections", type=_positive, metavar="N",
                        help="MariaDB connections working at once (default: one per CPU, at most 4; SQLite: 1)")
    read = sub.add_parser("read", parents=[common], help="read one device now and print the values")
    read.add_argument("--device", "-d", required=True, help="device id")
    last = sub.add_parser("last", parents=[common], help="print the newest value of every param (or raw rows)")
    last.add_argument("--raw", type=int, metavar="N", help="print the N newest rows of the Raw table instead")
    simulate = sub.add_parser("simulate", parents=[common], help="run a PAC3200 simulator (Modbus TCP)")
    simulate.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    simulate.add_argument("--port", type=int, default=5020, help="TCP port (default 5020)")
    simulate.add_argument("--units", default="1-3", help="unit ids, e.g. 1-3 or 1,4,7 (default 1-3)")
    simulate.add_argument("--fault", action="append", default=[], metavar="UNIT=FAULT",
                          help="inject a fault: timeout, illegal_address, gateway_no_response, nan, short")
    profile = sub.add_parser("profile", help="show a device profile, or check a profile file")
    profile_actions = profile.add_subparsers(dest="profile_action", metavar="ACTION", required=True)
    profile_actions.add_parser("show", help="print a profile as a table").add_argument("profile", metavar="NAME|FILE")
    profile_actions.add_parser("check", help="validate a profile file").add_argument("profile", metavar="FILE")
    report = sub.add_parser("report", parents=[common], help="consumption, peaks, tariff bands and completeness")
    report_arguments(report)
    legacy_import = sub.add_parser("import-legacy", help="convert the original susee's etl_data.py to site YAML")
    legacy_import.add_argument("file", metavar="ETL_DATA_PY", help="read as data, never executed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    level = getattr(args, "log_level", None)
    worker = getattr(args, "worker", None)
    log_format = getattr(args, "log_format", None) or os.environ.get(logs.FORMAT_ENV) or "text"
    if log_format not in logs.FORMATS:
        print(f"susee: {logs.FORMAT_ENV}={log_format!r} is not one of {', '.join(logs.FORMATS)}", file=sys.stderr)
        return EXIT_CONFIG
    if command == "run":
        os.environ[logs.FORMAT_ENV] = log_format  # its worker processes (workers: N) log the same way
    logs.setup(level or "INFO", log_format, worker)
    try:
        if command == "simulate":
            return run_async(commands.simulate(args.host, args.port, args.units, args.fault))
        if command == "profile":
            action = profile_commands.show if args.profile_action == "show" else profile_commands.check
            return action(args.profile)
        if command == "import-legacy":
            return legacy.main(args.file)
        if not hasattr(args, "config"):
            print(f"susee {command}: --config is required", file=sys.stderr)
            return EXIT_CONFIG
        site = commands.load_site(args.config)
        if level is None:
            # The service logs at the configured level; one-shot commands print
            # their results and only log what went wrong.
            logging.getLogger().setLevel(site.settings.log_level if command == "run" else "WARNING")
            if command != "run":  # one-shot commands print the database's errors themselves: once
                logging.getLogger("susee.sinks").setLevel("ERROR")
        if command == "run":
            return run_async(commands.run(site, getattr(args, "duration", None), worker, level))
        if command == "check":
            return run_async(commands.check(site))
        if command == "migrate":
            if args.compact:
                return run_async(storage_commands.migrate_compact(site))
            return run_async(commands.migrate(site))
        if command == "rollup":
            return run_async(storage_commands.rollup(site, args.start, args.end, args.connections))
        if command == "last":
            return run_async(commands.last(site, args.raw))
        if command == "report":
            return _report(site, args)
        return run_async(commands.read(site, args.device))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StartError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # output piped into head & co.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 0


def _report(site: commands.Site, args: argparse.Namespace) -> int:
    try:
        from susee.report.command import run
    except ImportError as exc:  # numpy, matplotlib & co. come with the extra
        print(f"susee report needs the 'report' extra: pip install 'susee[report]' ({exc})", file=sys.stderr)
        return EXIT_CONFIG
    return run(site.settings, site.plans, site.path, args)


def _worker_share(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N) with 0 <= K < N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 0 <= K < N")
    return int(index), int(count)


def _positive(text: str) -> int:
    """A whole number of at least 1."""
    if not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def run_async(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where installed (faster timers and sockets), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(stop_on_sigterm(coroutine))
    return uvloop.run(stop_on_sigterm(coroutine))


async def stop_on_sigterm(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run ``coroutine``; SIGTERM cancels it as Ctrl-C would, and that is a clean stop (0).

    Needed because the kernel drops a signal to PID 1 (a container's first
    process) that has no handler: ``docker stop`` would wait, then kill.
    A command that stops on signals its own way (the service) replaces this
    handler with its own while it runs.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
        pass
    try:
        return await coroutine
    except asyncio.CancelledError:
        if terminated:
            return 0
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
