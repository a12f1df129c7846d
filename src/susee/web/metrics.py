"""Prometheus metrics: a collector that reads the site's snapshots at scrape time.

Nothing is instrumented on the hot path: a scrape takes one ``SiteView`` and
one list of ``DeviceView`` (see ``susee.web.state``) and turns them into
metric families. Per-device series are kept to what a per-device view needs
(polls, failures by Code bit, last good sample time); everything else is one
series for the site, so a 5,000-device site stays a normal scrape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from susee.quality import Code
from susee.web.state import STATUSES, Fleet, Histogram

CODE_BITS = tuple(bit for bit in Code if bit)


class SiteCollector:
    """Turns snapshots into metric families; ``rollup_lag`` gives the last known lag (None: unknown)."""

    def __init__(self, state: Fleet, rollup_lag: Callable[[], float | None]) -> None:
        self.state = state
        self.rollup_lag = rollup_lag

    def describe(self) -> list:
        return []  # computed at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        site = self.state.site()
        devices = self.state.devices()
        yield from _site_metrics(site, self.rollup_lag())
        yield from _device_metrics(devices)
        worker_cpu = getattr(self.state, "worker_cpu_s", None)  # with workers: the parent's process metrics are its own
        if worker_cpu is not None:
            cpu = CounterMetricFamily("susee_worker_cpu_seconds", "CPU time of each worker process",
                                      labels=["worker"])
            for index, seconds in enumerate(worker_cpu()):
                if seconds is not None:
                    cpu.add_metric([str(index)], seconds)
            yield cpu


def _site_metrics(site, rollup_lag: float | None) -> Iterator[Metric]:
    info = GaugeMetricFamily("susee_info", "Version of the running susee", labels=["version"])
    info.add_metric([site.version], 1)
    yield info
    yield GaugeMetricFamily("susee_start_time_seconds", "When the service started (Unix time)", value=site.started_s)
    yield GaugeMetricFamily("susee_devices", "Configured and enabled devices", value=site.devices)
    yield GaugeMetricFamily("susee_queue_rows", "Rows waiting in memory for the database", value=site.queue_rows)
    for name, value, text in (
        ("susee_rows_written", site.rows_written, "Rows committed to the database (live and replayed)"),
        ("susee_rows_spooled", site.rows_spooled, "Rows that went to the spool"),
        ("susee_rows_replayed", site.rows_replayed, "Rows replayed from the spool into the database"),
        ("susee_rows_dropped", site.rows_dropped, "Rows dropped (spool full with drop_oldest, or shutdown)"),
    ):
        yield CounterMetricFamily(name, text, value=value)
    yield GaugeMetricFamily("susee_database_online", "1 while the database takes rows, 0 during an outage",
                            value=1 if site.online else 0)
    outage = 0.0 if site.outage_since_s is None else max(0.0, site.now_s - site.outage_since_s)
    yield GaugeMetricFamily("susee_database_outage_seconds", "Length of the current database outage (0 when online)",
                            value=outage)
    yield GaugeMetricFamily("susee_spool_bytes", "Size of the spool on disk", value=site.spool_bytes)
    yield GaugeMetricFamily("susee_spool_rows", "Rows in the spool waiting for the database", value=site.spool_rows)
    yield GaugeMetricFamily("susee_rollup_lag_seconds",
                            "Time since the end of the newest 15-minute rollup bucket (NaN: no rollups yet)",
                            value=math.nan if rollup_lag is None else rollup_lag)
    yield _histogram("susee_write_seconds", "Time to store one batch in the database", site.write_latency)
    yield _histogram("susee_delay_seconds", "Delay of each device-tick: from the tick to its last answer",
                     site.delay)


def _device_metrics(devices) -> Iterator[Metric]:
    polls = CounterMetricFamily("susee_device_polls", "Ticks polled, per device", labels=["device"])
    failures = CounterMetricFamily("susee_device_failures", "Failed reads per device and Code bit (only bits seen)",
                                   labels=["device", "code"])
    last_good = GaugeMetricFamily("susee_device_last_good_timestamp_seconds",
                                  "Tick of the newest all-good sample of the device (Unix time)", labels=["device"])
    by_code = dict.fromkeys(CODE_BITS, 0)
    by_status = dict.fromkeys(STATUSES, 0)
    missed = skipped = 0
    names = {int(bit): bit.name.lower() for bit in CODE_BITS}
    for device in devices:
        polls.add_metric([device.id], device.polls)
        for bit, count in device.failures.items():
            failures.add_metric([device.id, names[bit]], count)
            by_code[Code(bit)] += count
        if device.last_good_s is not None:
            last_good.add_metric([device.id], device.last_good_s)
        by_status[device.status] += 1
        missed += device.missed_ticks
        skipped += device.skipped_polls
    yield polls
    yield failures
    yield last_good
    fleet = CounterMetricFamily("susee_failures", "Failed reads of all devices per Code bit", labels=["code"])
    for bit, count in by_code.items():
        fleet.add_metric([bit.name.lower()], count)
    yield fleet
    yield CounterMetricFamily("susee_missed_ticks", "Ticks skipped because a poll overran, all devices", value=missed)
    yield CounterMetricFamily("susee_skipped_polls", "Ticks not read while backing off silent devices",
                              value=skipped)
    status = GaugeMetricFamily("susee_devices_status", "Devices per status of their last tick", labels=["status"])
    for name, count in by_status.items():
        status.add_metric([name], count)
    yield status


def _histogram(name: str, text: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets, running = [], 0
    for bound, count in zip(histogram.bounds, histogram.counts):
        running += count
        buckets.append((repr(float(bound)), running))
    running += histogram.counts[-1]
    buckets.append(("+Inf", running))
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=histogram.total)


def site_registry(state: Fleet, rollup_lag: Callable[[], float | None]) -> CollectorRegistry:
    """A registry of its own (never the global one): the site's collector and process CPU and memory."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SiteCollector(state, rollup_lag))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format of everything in ``registry``."""
    return generate_latest(registry)
