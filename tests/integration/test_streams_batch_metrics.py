"""The batch engine's /metrics and /healthz, read over HTTP from a real worker process on real
Kafka and InfluxDB."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from parkmon.contracts import kafka_readings_topic
from streams.app import ensure_topics
from tests.support.streams import WorkerProcess, produce, query_windows, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = 1_790_000_040_000 - 1_790_000_040_000 % MIN


def bucket_name(b):
    return b if isinstance(b, str) else getattr(b, "name", None) or b["name"]


def metric(text: str, name: str, **labels: str) -> float | None:
    lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = re.escape(name) + (r"\{" + re.escape(lab) + r"\}" if lab else "") + r" (\S+)"
    m = re.search(r"^" + pat + "$", text, re.M)
    return None if m is None else float(m.group(1))


def test_metrics_count_readings_windows_and_dead_letters(kafka, influx, influx_bucket, tmp_path):
    park = f"sm{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 1)
    good = [("gyproc.power_in", T0 + i * 10_000, 100.0 + i) for i in range(13)]  # 2 windows
    bad = [("no.such_meter", T0, 1.0)]
    produce(kafka.bootstrap, kafka_readings_topic(park), good + bad)
    b = bucket_name(influx_bucket)
    w = WorkerProcess(park, kafka.bootstrap, influx.url, influx.org, b, influx.token,
                      tmp_path / "w.log",
                      extra=["--engine", "batch", "--metrics-port", "0", "--grace-ms", "600000",
                             "--flush-interval-s", "0.3"]).start()
    try:
        m = wait_for(lambda: re.search(r"metrics endpoint on (http://\S+)/metrics",
                                       w.log_text()), 60, 0.3)
        assert m, w.log_text()[-2000:]
        base = m.group(1)
        assert wait_for(lambda: len(query_windows(influx.url, influx.token, influx.org, b,
                                                  park)) >= 2, 90, 0.5), w.log_text()[-2000:]

        def scraped():
            t = httpx.get(base + "/metrics", timeout=5).text
            return t if metric(t, "parkmon_streams_readings_total") == len(good) + len(bad) \
                else None

        text = wait_for(scraped, 30, 0.5)
        assert text, httpx.get(base + "/metrics", timeout=5).text
        assert metric(text, "parkmon_streams_deadlettered_total", reason="unknown_meter") == 1
        assert metric(text, "parkmon_streams_windows_written_total") >= 2
        assert metric(text, "parkmon_streams_engine_total", kind="accepted") == len(good)
        assert metric(text, "parkmon_streams_watermark_ms", partition="0") == good[-1][1]
        h = httpx.get(base + "/healthz", timeout=5)
        assert h.status_code == 200 and h.json()["status"] == "ok"
        assert h.json()["partitions"] == [0]
    finally:
        w.stop()
