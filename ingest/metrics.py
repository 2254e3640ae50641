"""Prometheus metrics of the gateway and the HTTP endpoint serving /metrics and /healthz.

Every gateway owns its own CollectorRegistry (no process-global state), so tests and benchmarks
can run several gateways in one process.
"""

from __future__ import annotations

import bisect
import json
import math
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from parkmon.contracts import Reason

#: buckets of the produce-latency histogram (seconds)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0)


class GatewayMetrics:
    """The gateway's counters as plain integers, exported by a collector at scrape time.

    prometheus_client's Counter.inc costs microseconds (locks, checks); at tens of thousands of
    messages per second that was a tenth of the gateway's CPU. Here the hot path adds to ints:
    fields written on the MQTT thread are written by that thread only; completion (acks, latency)
    can happen on two threads and goes through `complete()`, under a lock, once per message.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # MQTT thread only
        self.messages_received = 0
        self.readings_received = 0
        self.readings_accepted = 0
        self.duplicates = 0
        self.counter_resets = 0
        self.readings_uncertain = 0
        self.rejected: dict[str, int] = {r.value: 0 for r in Reason}
        # any thread, under the lock
        self._lock = threading.Lock()
        self.messages_completed = 0
        self.messages_acked = 0
        self.delivery_failures = 0
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        # set rarely
        self.mqtt_connected = 0
        self.replayed = 0
        self.registry = registry or CollectorRegistry()
        self.registry.register(_Collector(self))

    def complete(self, acked: bool, latency_s: float) -> None:
        i = bisect.bisect_left(LATENCY_BUCKETS, latency_s)
        with self._lock:
            self.messages_completed += 1
            if acked:
                self.messages_acked += 1
            self._latency_counts[i] += 1
            self._latency_sum += latency_s

    def delivery_failed(self) -> None:
        with self._lock:
            self.delivery_failures += 1

    @property
    def inflight(self) -> int:
        return self.messages_received - self.messages_completed

    def latency(self) -> tuple[list[tuple[str, float]], float]:
        with self._lock:
            counts, total = list(self._latency_counts), self._latency_sum
        cum, out = 0, []
        for bound, c in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
            cum += c
            out.append(("+Inf" if bound == math.inf else repr(bound), float(cum)))
        return out, total


class _Collector(Collector):
    def __init__(self, m: GatewayMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m, p = self.m, "parkmon_gateway_"

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(p + name, doc, value=value)

        yield counter("messages_received", "MQTT messages received", m.messages_received)
        yield counter("messages_acked", "MQTT messages acknowledged after Kafka delivery",
                      m.messages_acked)
        yield counter("readings_received",
                      "readings received (a message rejected whole counts 1)", m.readings_received)
        yield counter("readings_accepted", "readings produced to the readings topic",
                      m.readings_accepted)
        rej = CounterMetricFamily(p + "readings_rejected", "readings sent to the dead-letter topic",
                                  labels=["reason"])
        for reason, n in list(m.rejected.items()):
            rej.add_metric([reason], n)
        yield rej
        yield counter("duplicates", "readings recognised as duplicates (same meter and seq or "
                      "ts_ms) and not produced again", m.duplicates)
        yield counter("readings_uncertain", "readings produced with the device's quality flag "
                      "\"uncertain\" (kept in the Kafka value; included in readings_accepted)",
                      m.readings_uncertain)
        yield counter("counter_resets", "counter readings accepted as a reset or roll-over",
                      m.counter_resets)
        yield counter("kafka_delivery_failures", "records Kafka did not accept (the gateway then "
                      "stops without acknowledging)", m.delivery_failures)
        yield counter("replayed_readings",
                      "readings re-read from Kafka at start to rebuild dedup memory", m.replayed)
        buckets, total = m.latency()
        yield HistogramMetricFamily(
            p + "kafka_produce_latency_seconds",
            "time from producing the first record of an MQTT message to Kafka's acknowledgement "
            "of its last one", buckets=buckets, sum_value=total)
        yield GaugeMetricFamily(p + "inflight_messages",
                                "MQTT messages received and not yet acknowledged", value=m.inflight)
        yield GaugeMetricFamily(p + "mqtt_connected", "1 while connected to the broker",
                                value=m.mqtt_connected)


class HealthServer:
    """Serves GET /metrics (Prometheus text) and GET /healthz (JSON, 200 healthy / 503 not)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 health: Callable[[], tuple[bool, dict[str, Any]]]) -> None:
        registry_ = registry
        health_ = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(registry_)
                    self._send(200, CONTENT_TYPE_LATEST, body)
                elif path in ("/healthz", "/health"):
                    ok, detail = health_()
                    body = json.dumps({"status": "ok" if ok else "unhealthy", **detail}).encode()
                    self._send(200 if ok else 503, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found: try /metrics or /healthz\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
