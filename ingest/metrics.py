"""Prometheus metrics of the gateway and the HTTP endpoint serving /metrics and /healthz.

Every gateway owns its own CollectorRegistry (no process-global state), so tests and benchmarks
can run several gateways in one process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from parkmon.contracts import Reason


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "parkmon_gateway_"
        self.messages_received = Counter(p + "messages_received", "MQTT messages received",
                                         registry=r)
        self.messages_acked = Counter(p + "messages_acked",
                                      "MQTT messages acknowledged after Kafka delivery", registry=r)
        self.readings_received = Counter(p + "readings_received",
                                         "readings received (a message rejected whole counts 1)",
                                         registry=r)
        self.readings_accepted = Counter(p + "readings_accepted",
                                         "readings produced to the readings topic", registry=r)
        self.readings_rejected = Counter(p + "readings_rejected",
                                         "readings sent to the dead-letter topic", ["reason"],
                                         registry=r)
        self.duplicates = Counter(p + "duplicates", "readings recognised as duplicates "
                                  "(same meter and seq or ts_ms) and not produced again",
                                  registry=r)
        self.counter_resets = Counter(p + "counter_resets",
                                      "counter readings accepted as a reset or roll-over",
                                      registry=r)
        self.delivery_failures = Counter(p + "kafka_delivery_failures",
                                     "records Kafka did not accept (the gateway then stops "
                                     "without acknowledging)", registry=r)
        self.produce_latency = Histogram(
            p + "kafka_produce_latency_seconds",
            "time from producing the first record of an MQTT message to Kafka's acknowledgement "
            "of its last one", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.inflight = Gauge(p + "inflight_messages",
                              "MQTT messages received and not yet acknowledged", registry=r)
        self.mqtt_connected = Gauge(p + "mqtt_connected", "1 while connected to the broker",
                                    registry=r)
        self.replayed = Counter(p + "replayed_readings",
                                "readings re-read from Kafka at start to rebuild dedup memory",
                                registry=r)
        for reason in Reason:  # every reason visible from the start (0 is a value)
            self.readings_rejected.labels(reason=reason.value)


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
