"""Prometheus metrics of edge mode (/metrics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from apps.edge.service import EdgeService


class EdgeMetrics:
    def __init__(self, service: EdgeService) -> None:
        r = self.registry = CollectorRegistry()
        p = "parkmon_edge_"
        self.checkpoints = Counter(p + "checkpoints", "checkpoints taken", registry=r)
        self.checkpoint_seconds = Histogram(
            p + "checkpoint_seconds", "InfluxDB write + state persist + ack of one checkpoint",
            registry=r, buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30))
        self.points_written = Counter(p + "points_written", "points written to InfluxDB",
                                      registry=r)
        self.messages_acked = Counter(p + "messages_acked",
                                      "MQTT messages acknowledged after a checkpoint", registry=r)
        self.influx_failures = Counter(p + "influx_failures",
                                       "checkpoints that failed to write to InfluxDB", registry=r)
        self.unacked = Gauge(p + "unacked_messages", "MQTT messages fed, not yet acknowledged",
                             registry=r)
        self.mqtt_connected = Gauge(p + "mqtt_connected", "1 while connected to the broker",
                                    registry=r)
        self.watermark = Gauge(p + "watermark_ms", "event-time watermark (epoch ms)", registry=r)
        r.register(_PipelineCollector(service))


class _PipelineCollector:
    """The pipeline's own counters (restored with a checkpoint), read at scrape time."""

    def __init__(self, service: EdgeService) -> None:
        self._svc = service

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        view = self._svc.stats_view
        p = "parkmon_edge_"
        for name, help_text in (("messages", "MQTT messages fed to the pipeline"),
                                ("readings", "readings received"),
                                ("accepted", "readings accepted (valid, not duplicates)"),
                                ("duplicates", "readings recognised as duplicates"),
                                ("late_beyond_grace", "readings later than the grace period"),
                                ("window_results", "meter window results (incl. corrections)"),
                                ("kpi_results", "indicator results"),
                                ("detector_events", "detector events"),
                                ("notifications", "alert notifications")):
            yield CounterMetricFamily(p + name, help_text, value=view.get(name, 0))
        rej = CounterMetricFamily(p + "rejected", "readings rejected, by reason",
                                  labels=["reason"])
        for reason, n in sorted(view.get("rejected", {}).items()):
            rej.add_metric([reason], n)
        yield rej
        yield GaugeMetricFamily(p + "queue", "MQTT messages received, not yet fed",
                                value=self._svc.inbox.qsize())

