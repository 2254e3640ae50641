"""Test helpers for `parkmon detect` against the real services (shipped like tests/support/ingest.py):

- `scenario(...)`: a short labelled scenario (a trip or data-quality faults at chosen times);
- `canonical_readings(park, scenario, start_ms)`: the simulator's payloads turned into canonical
  `Reading`s exactly as the gateway does (ingest.validate.Validator, then deduplication);
- `DetectProcess`: `parkmon detect` as a child process (start, SIGTERM, kill -9);
- `read_events(bootstrap, topic)`: the DetectionEvents on an alerts topic, in topic order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from alerts.model import DetectionEvent
from ingest.dedup import Deduplicator
from ingest.validate import Validator
from parkmon.contracts import Reading, mqtt_topic
from simulators.fleet import SimReading, run_scenario
from simulators.scenarios import Label, Scenario, parse_scenario

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (not tests/)


def scenario(events: list[dict[str, Any]], duration: str, seed: int = 11,
             park: str = "kalundborg", name: str = "detect-test") -> Scenario:
    return parse_scenario({"name": name, "park": park, "duration": duration, "seed": seed,
                           "events": events})


def simulate(park: Any, sc: Scenario, start_ms: int) -> tuple[list[SimReading], list[Label]]:
    it, labels = run_scenario(park, sc, start_ms=start_ms)
    sims = list(it)
    return sims, labels


def canonical_readings(park: Any, sims: list[SimReading], now_ms: Callable[[], int]
                       ) -> list[Reading]:
    """Validate + normalise + deduplicate the simulated payloads like `parkmon gateway`."""
    v = Validator(park, now_ms=now_ms)
    dedup = Deduplicator(65_536)
    out: list[Reading] = []
    for r in sims:
        payload = r.raw if r.raw is not None else json.dumps(r.payload()).encode()
        res = v.validate(mqtt_topic(park.id, r.enterprise), payload)
        fresh = [a for a in res.accepted if not dedup.seen_or_add(a.meter, a.idempotency_key[1])]
        v.observe_accepted(fresh)
        out.extend(fresh)
    return out


def produce_readings(bootstrap: str, topic: str, readings: list[Reading],
                     extra: Sequence[bytes] = ()) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5})
    for i, r in enumerate(readings):
        p.produce(topic, key=r.meter.encode(), value=r.to_json())
        if i % 1000 == 0:
            p.poll(0)
    for raw in extra:
        p.produce(topic, key=b"garbage", value=raw)
    left = p.flush(30)
    if left:
        raise RuntimeError(f"{left} readings not delivered to {topic}")


def read_events(bootstrap: str, topic: str) -> list[DetectionEvent]:
    from tests.support.ingest import read_topic

    return [DetectionEvent.from_json(v) for _k, v in read_topic(bootstrap, topic, timeout_s=30)]


class DetectProcess:
    """`parkmon detect` in a child process; its JSON log lines go to `log_path`."""

    def __init__(self, park_file: Path, bootstrap: str, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.args = [sys.executable, "-m", "apps.cli", "detect", "--park", str(park_file)]
        base = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_")}
        self.env = {**base, "PARKMON_KAFKA_BOOTSTRAP": bootstrap, "PYTHONPATH": str(REPO_ROOT),
                    "PYTHONUNBUFFERED": "1", "PARKMON_DETECT_METRICS_PORT": "0", **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> DetectProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open by the child
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                     env={**self.env, **(env or {})}, cwd=str(REPO_ROOT))
        log.close()
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics_port(self) -> int | None:
        """The port of /metrics and /healthz, from the process's "metrics endpoint" log line."""
        ports = [rec["port"] for rec in self.log_lines() if rec.get("event") == "http"]
        return int(ports[-1]) if ports else None

    def get(self, path: str) -> tuple[int, bytes]:
        import urllib.error
        import urllib.request

        port = self.metrics_port()
        if port is None:
            raise RuntimeError("no metrics endpoint logged yet")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return int(r.status), bytes(r.read())
        except urllib.error.HTTPError as e:
            return int(e.code), bytes(e.read())

    def log_lines(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
