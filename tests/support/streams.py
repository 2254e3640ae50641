"""Test and benchmark helpers for the streams stage against the real services.

- `produce(bootstrap, topic, readings)`: idempotent producer, key meter id, value Reading JSON.
- `WorkerProcess`: `parkmon streams worker` as a child process (start, kill -9, terminate).
- `recount(readings, kinds, size_ms)`: expected window quantities computed straight from the
  input, independently of the engine (counter: value - previous value, attributed to the window
  of the later reading; rate: trapezoid), duplicates removed by (meter, ts).
- `query_windows(...)`: the `meter_window` points of a bucket as {(meter, start_ms): quantity}.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from parkmon.contracts import Reading


def produce(bootstrap: str, topic: str, readings: Iterable[tuple[str, int, float]]) -> int:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5})
    n = 0
    for meter, ts, v in readings:
        p.produce(topic, key=meter.encode(), value=Reading(meter, ts, v).to_json())
        n += 1
        if n % 1000 == 0:
            p.poll(0)
    left = p.flush(30)
    if left:
        raise RuntimeError(f"{left} readings not delivered to {topic}")
    return n


def recount(readings: Iterable[tuple[str, int, float]], kinds: Mapping[str, str],
            size_ms: int, max_gap_ms: int = 300_000) -> dict[tuple[str, int], float]:
    by_meter: dict[str, dict[int, float]] = defaultdict(dict)
    for m, t, v in readings:
        by_meter[m].setdefault(t, v)
    out: dict[tuple[str, int], float] = defaultdict(float)
    for m, series in by_meter.items():
        pts = sorted(series.items())
        for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False):
            if kinds[m] == "counter":
                q = v1 - v0 if v1 >= v0 else v1
            else:
                q = (v0 + v1) / 2 * (t1 - t0) / 3_600_000 if t1 - t0 <= max_gap_ms else 0.0
            out[(m, t1 - t1 % size_ms)] += q
        if pts:  # the first reading's window exists with quantity 0
            first = pts[0][0]
            out.setdefault((m, first - first % size_ms), 0.0)
    return dict(out)


class WorkerProcess:
    """`parkmon streams worker` in a child process with its output in a log file."""

    def __init__(self, park_id: str, bootstrap: str, influx_url: str, influx_org: str,
                 influx_bucket: str, influx_token: str, log_path: Path, *,
                 app_id: str | None = None, extra: list[str] | None = None) -> None:
        self.args = [sys.executable, "-m", "apps.cli", "streams", "worker",
                     "--park-id", park_id, "--bootstrap", bootstrap,
                     "--influx-url", influx_url, "--influx-org", influx_org,
                     "--influx-bucket", influx_bucket, "--loglevel", "info",
                     *(["--app-id", app_id] if app_id else []), *(extra or [])]
        self.env = dict(os.environ, PARKMON_INFLUX_TOKEN=influx_token, PYTHONUNBUFFERED="1")
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115  (kept open by the child)
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=Path(__file__).resolve().parents[2])
        log.close()
        return self

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def query_windows(url: str, token: str, org: str, bucket: str, park: str,
                  field: str = "quantity") -> dict[tuple[str, int], float]:
    from influxdb_client import InfluxDBClient

    flux = f'''
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "meter_window" and r.park == "{park}"
                       and r._field == "{field}")
'''
    with InfluxDBClient(url=url, token=token, org=org, timeout=30_000) as c:
        tables = c.query_api().query(flux)
    out: dict[tuple[str, int], float] = {}
    for t in tables:
        for r in t.records:
            out[(r.values["meter"], int(r.get_time().timestamp() * 1000))] = float(r.get_value())
    return out


def query_kpi(url: str, token: str, org: str, bucket: str, park: str, scope: str, entity: str,
              view: str, field: str) -> dict[int, Any]:
    from influxdb_client import InfluxDBClient

    flux = f'''
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "kpi" and r.park == "{park}" and r.scope == "{scope}"
                       and r.entity == "{entity}" and r.view == "{view}" and r._field == "{field}")
'''
    with InfluxDBClient(url=url, token=token, org=org, timeout=30_000) as c:
        tables = c.query_api().query(flux)
    return {int(r.get_time().timestamp() * 1000): r.get_value() for t in tables for r in t.records}


def wait_for(check: Any, timeout_s: float, interval_s: float = 1.0) -> Any:
    """Poll `check()` until it returns a truthy value; return it (or the last falsy value)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    return last
