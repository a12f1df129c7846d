"""Command line: parse arguments, set up logging, build settings, hand over."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from susee import __version__, commands, legacy, profile_commands
from susee.config import ConfigError, StartError

EXIT_CONFIG = 2
COMMANDS = ("run", "check", "migrate", "read", "last", "simulate", "profile", "import-legacy")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a value given before the subcommand is not overwritten by the default.
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help="site YAML file")
    common.add_argument("--log-level", default=argparse.SUPPRESS, type=str.upper,
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override the config's log_level")

    parser = argparse.ArgumentParser(prog="susee", parents=[common],
                                     description="Clock-aligned Modbus energy meter acquisition into MariaDB.")
    parser.add_argument("--version", action="version", version=f"susee {__version__}")
    parser.add_argument("--duration", type=float, default=argparse.SUPPRESS, help="stop cleanly after SECONDS")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the acquisition service (the default)")
    run.add_argument("--duration", type=float, default=argparse.SUPPRESS, help="stop cleanly after SECONDS")
    # Set by the parent process of a site with ``workers`` > 1: poll share K of N (see susee.workers).
    run.add_argument("--worker", type=_worker_share, default=None, help=argparse.SUPPRESS)
    sub.add_parser("check", parents=[common], help="validate, show the plan, try each device and the database")
    sub.add_parser("migrate", parents=[common], help="create or upgrade the database tables")
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
    legacy_import = sub.add_parser("import-legacy", help="convert the original susee's etl_data.py to site YAML")
    legacy_import.add_argument("file", metavar="ETL_DATA_PY", help="read as data, never executed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = args.command or "run"
    level = getattr(args, "log_level", None)
    worker = getattr(args, "worker", None)
    setup_logging(level or "INFO", f"worker {worker[0]}/{worker[1]} " if worker else "")
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
            return run_async(commands.migrate(site))
        if command == "last":
            return run_async(commands.last(site, args.raw))
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


def _worker_share(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N) with 0 <= K < N."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"{text!r} is not K/N with 0 <= K < N")
    return int(index), int(count)


def setup_logging(level: str, tag: str = "") -> None:
    """Log to stderr; ``tag`` (e.g. "worker 1/4 ") marks each line of a worker process."""
    logging.basicConfig(
        level=level,
        # ISO 8601 with Z: the time is UTC (like the Date column), and says so.
        format=f"%(asctime)s.%(msecs)03dZ %(levelname)-7s {tag}%(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )
    logging.Formatter.converter = __import__("time").gmtime  # log times in UTC, like the Date column
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its errors are ours to report, as codes


def run_async(coroutine: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where installed (faster timers and sockets), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
