"""Prometheus metrics and health of `parkmon streams worker` (both engines).

GET /metrics and /healthz on `--metrics-port` (ingest.metrics.HealthServer). The hot path only
adds to the plain integers of `WorkerStats`; this collector turns them into metric families at
scrape time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streams.app import WorkerStats


class StreamsCollector:
    def __init__(self, stats: WorkerStats, engine_stats: Callable[[], dict[str, int]],
                 sink_stats: Callable[[], dict[str, Any]],
                 partitions: Callable[[], dict[int, int | None]]) -> None:
        self.stats = stats
        self.engine_stats = engine_stats
        self.sink_stats = sink_stats
        self.partitions = partitions

    def collect(self) -> Iterator[Metric]:
        s = self.stats

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"parkmon_streams_{name}", doc, value=value)

        yield counter("readings", "readings taken from the readings topic", s.readings)
        yield counter("replayed", "redelivered readings skipped (already in the saved state)",
                      s.replayed)
        yield counter("late", "readings later than the grace period (dead-lettered)", s.late)
        yield counter("windows_written", "meter window points accepted by InfluxDB",
                      s.windows_written)
        yield counter("kpi_points_written", "indicator points accepted by InfluxDB",
                      s.kpi_points_written)
        yield counter("flushes", "batches completed (written, saved, committed)", s.flushes)
        yield counter("sink_failures", "InfluxDB writes that failed and were retried",
                      s.sink_failures)
        yield counter("txn_aborts", "batch engine: Kafka transactions aborted (fenced after the "
                      "worker lost its group; the batch is read again)", s.txn_aborts)
        dl = CounterMetricFamily("parkmon_streams_deadlettered",
                                 "readings sent to the streams dead-letter topic, by reason",
                                 labels=["reason"])
        for reason, n in sorted(s.by_reason.items()):
            dl.add_metric([reason], n)
        yield dl
        eng = CounterMetricFamily("parkmon_streams_engine",
                                  "window engine counters (accepted, duplicates, corrections...)",
                                  labels=["kind"])
        for k, v in sorted(self.engine_stats().items()):
            eng.add_metric([k], v)
        yield eng
        lat = sorted(s.close_to_stored_s)
        g = GaugeMetricFamily("parkmon_streams_close_to_stored_seconds",
                              "window close -> InfluxDB accepted, over the last 10 000 windows",
                              labels=["quantile"])
        for q in (0.5, 0.99):
            if lat:
                g.add_metric([str(q)], lat[min(len(lat) - 1, int(q * len(lat)))])
        yield g
        wm = GaugeMetricFamily("parkmon_streams_watermark_ms",
                               "event-time watermark per owned readings partition",
                               labels=["partition"])
        for p, w in sorted(self.partitions().items()):
            if w is not None:
                wm.add_metric([str(p)], w)
        yield wm


def make_registry(collector: StreamsCollector) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(collector)  # type: ignore[arg-type]
    return reg


class LoopHealth:
    """Healthy while the processing loop completed an iteration within `healthy_within_s`."""

    def __init__(self, healthy_within_s: float = 120.0) -> None:
        self.healthy_within_s = healthy_within_s
        self.last_beat: float | None = None
        self.detail: dict[str, Any] = {}

    def beat(self, **detail: Any) -> None:
        self.last_beat = time.monotonic()
        self.detail = detail

    def __call__(self) -> tuple[bool, dict[str, Any]]:
        age = None if self.last_beat is None else time.monotonic() - self.last_beat
        ok = age is not None and age <= self.healthy_within_s
        return ok, {"loop_age_s": None if age is None else round(age, 3), **self.detail}
