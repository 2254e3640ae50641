"""Prometheus metrics of `parkmon alerts` (own registry; served with --metrics-port on 127.0.0.1).

    parkmon_alerts_events_total{result="applied|duplicate|rejected"}
    parkmon_alerts_notifications_total
    parkmon_alerts_delivery_attempts_total{endpoint, outcome="delivered|retry|dead"}
    parkmon_alerts_outbox_messages{status="pending|delivered|dead"}   (read from the outbox)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from alerts.delivery.outbox import Outbox
from alerts.delivery.webhook import Outcome
from alerts.service import ServiceCounters


class _ServiceCollector(Collector):
    def __init__(self, counters: ServiceCounters, outbox_factory: Callable[[], Outbox]) -> None:
        self._counters = counters
        self._outbox_factory = outbox_factory
        self._outbox: Outbox | None = None

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self._counters
        ev = CounterMetricFamily("parkmon_alerts_events", "detection events received",
                                 labels=["result"])
        ev.add_metric(["applied"], c.events - c.duplicates - c.rejected)
        ev.add_metric(["duplicate"], c.duplicates)
        ev.add_metric(["rejected"], c.rejected)
        yield ev
        yield CounterMetricFamily("parkmon_alerts_notifications", "notifications enqueued",
                                  value=c.notifications)
        if self._outbox is None:
            self._outbox = self._outbox_factory()
        g = GaugeMetricFamily("parkmon_alerts_outbox_messages", "outbox rows by status",
                              labels=["status"])
        for status, n in sorted(self._outbox.counts().items()):
            g.add_metric([status], n)
        yield g


class AlertMetrics:
    def __init__(self, counters: ServiceCounters, outbox_factory: Callable[[], Outbox]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ServiceCollector(counters, outbox_factory))
        self.attempts = Counter("parkmon_alerts_delivery_attempts", "webhook delivery attempts",
                                ["endpoint", "outcome"], registry=self.registry)

    def on_result(self, endpoint: str, outcome: Outcome) -> None:
        self.attempts.labels(endpoint, outcome.value).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)
