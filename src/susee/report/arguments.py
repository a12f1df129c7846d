"""The ``report`` subcommand's options (imported by the cli; nothing heavy here)."""

from __future__ import annotations

import argparse

from susee.report.intervals import EVERY


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's options."""
    parser.add_argument("--from", dest="start", metavar="DATE", help="local date or date-time, e.g. 2026-11-01")
    parser.add_argument("--to", dest="end", metavar="DATE", help="local date or date-time (exclusive)")
    parser.add_argument("--last", metavar="DURATION", help="instead of --from/--to: e.g. 1h, 7d, 2w (up to now)")
    parser.add_argument("--every", default="day", choices=list(EVERY), help="interval length (default day)")
    parser.add_argument("--by", default="device", metavar="device|tag:NAME", help="one row per device (and "
                        "virtual meter) or per value of a device tag")
    parser.add_argument("--devices", metavar="ID1,ID2", help="only these devices or virtual meters")
    parser.add_argument("--params", metavar="P1,P2", help="counters to report (default: the devices' counters)")
    parser.add_argument("--tariff", metavar="arera|FILE", help="tariff bands: arera or a YAML calendar")
    parser.add_argument("--out", metavar="FILE", help="report.csv, report.xlsx or report.png (default CSV on stdout)")
