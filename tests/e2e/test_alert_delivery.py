"""End-to-end delivery: the real `parkmon alerts` process, a real HTTP receiver on 127.0.0.1.

- receiver down for PARKMON_E2E_RECEIVER_DOWNTIME_S (default 300 s = the issue's five minutes)
  while incidents fire and resolve: afterwards every notification is delivered, in order, each
  signature verifies with the standardwebhooks library, each webhook-id once;
- kill -9 of `parkmon alerts` with undelivered notifications: delivered after restart, once per id;
- one supplier trip (detected by detect from synthetic readings) -> one grouped notification
  listing every affected consumer; a silent meter -> a data-quality alert only.

Events reach the service through its JSON-lines source (`--events-file --follow`); the Kafka source
shares the same code path after decoding.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from alerts.model import DetectionEvent, DetectionKind
from tests.support.alerts import toy_park, toy_park_data

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(b"e2e-secret-for-parkmon-alerts!!!").decode()
DOWNTIME_S = float(os.environ.get("PARKMON_E2E_RECEIVER_DOWNTIME_S", "300"))
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.db = tmp / "alerts.sqlite"
        self.events = tmp / "events.jsonl"
        self.events.touch()
        self.received = tmp / "received.jsonl"
        self.park = tmp / "park.yaml"
        self.park.write_text(yaml.safe_dump(toy_park_data(), sort_keys=False))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.receiver: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_ALERTS_")}
        env.update({
            "PYTHONPATH": str(REPO),
            "PARKMON_ALERTS_ENDPOINTS": json.dumps(
                [{"name": "ops", "url": f"http://127.0.0.1:{self.port}/hooks/parkmon",
                  "timeout_s": 5}]),
            "PARKMON_ALERTS_SECRET_OPS": SECRET,
            "PARKMON_ALERTS_ALLOW_LOOPBACK": "1",
            "PARKMON_ALERTS_GROUP_WAIT_MS": "1000",
            "PARKMON_ALERTS_GROUP_INTERVAL_MS": "2000",
            "PARKMON_ALERTS_BACKOFF_INITIAL_MS": "250",
            "PARKMON_ALERTS_BACKOFF_MAX_MS": "4000",
        })
        return env

    def start_service(self) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "alerts", "run", "--park", str(self.park),
             "--db", str(self.db), "--events-file", str(self.events), "--follow"],
            env=self.env(), cwd=self.tmp, stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"service-{len(self.procs)}.log", "wb"),  # noqa: SIM115
            start_new_session=True)
        self.procs.append(p)
        wait_for(self.db.exists, 30, "the outbox database")
        return p

    def start_receiver(self) -> None:
        self.receiver = subprocess.Popen(
            [sys.executable, "-m", "tests.support.alerts", "receive", "--port", str(self.port),
             "--out", str(self.received)], env=self.env(), stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
        assert self.receiver.stdout is not None
        assert b"listening" in self.receiver.stdout.readline()

    def emit(self, *events: DetectionEvent) -> None:
        with open(self.events, "ab") as fh:
            for ev in events:
                fh.write(ev.to_json() + b"\n")

    def outbox(self) -> list[dict[str, Any]]:
        if not self.db.exists():
            return []
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute(
                "SELECT seq, webhook_id, notification_key, status, attempts FROM outbox "
                "WHERE endpoint='ops' ORDER BY seq")]
        except sqlite3.OperationalError:  # schema not created yet
            return []
        finally:
            con.close()

    def received_records(self) -> list[dict[str, Any]]:
        if not self.received.exists():
            return []
        return [json.loads(line) for line in self.received.read_text().splitlines() if line]

    def all_delivered(self) -> bool:
        rows = self.outbox()
        return bool(rows) and all(r["status"] == "delivered" for r in rows) and \
            len(self.received_records()) >= len(rows)

    def close(self) -> None:
        for p in [*self.procs, *([self.receiver] if self.receiver else [])]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()


@pytest.fixture()
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def check_delivery(h: Harness) -> list[dict[str, Any]]:
    """Every outbox row delivered, received in outbox order, each id once, signatures verify."""
    rows = h.outbox()
    recs = h.received_records()
    ids = [r["headers"]["webhook-id"] for r in recs]
    assert len(ids) == len(set(ids)), "a webhook-id arrived twice"
    assert ids == [r["webhook_id"] for r in rows], "not delivered in enqueue order"
    wh = Webhook(SECRET)
    bodies = []
    for rec in recs:
        bodies.append(wh.verify(rec["body"], rec["headers"]))  # raises when it does not verify
        assert rec["path"] == "/hooks/parkmon"
    for key in {b["group_key"] for b in bodies}:
        seqs = [b["sequence"] for b in bodies if b["group_key"] == key]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    return bodies


def drop(exchange: str, magnitude: float = 1.0) -> DetectionEvent:
    now = int(time.time() * 1000)
    return DetectionEvent(kind=DetectionKind.SUPPLY_DROP, exchange_id=exchange, ts_ms=now,
                          start_ms=now - 20_000, magnitude=magnitude)


def resolved(exchange: str | None = None, meter: str | None = None,
             kind: DetectionKind = DetectionKind.SUPPLY_DROP) -> DetectionEvent:
    return DetectionEvent(kind=DetectionKind.RESOLVED, exchange_id=exchange, meter_id=meter,
                          ts_ms=int(time.time() * 1000), resolves=kind)


def silent(meter: str) -> DetectionEvent:
    now = int(time.time() * 1000)
    return DetectionEvent(kind=DetectionKind.DATA_QUALITY, meter_id=meter, ts_ms=now,
                          start_ms=now - 60_000, dq_kind="silent")


def test_receiver_down_for_minutes_then_everything_arrives_in_order_once(h: Harness) -> None:
    h.start_service()
    step = DOWNTIME_S / 6
    script: list[list[DetectionEvent]] = [
        [drop("steam"), drop("gypsum")],           # power trips
        [drop("gas", 0.4)],                        # refinery cuts gas
        [silent("farm.sludge_in")],                # a dead meter
        [resolved("steam"), resolved("gypsum")],   # power back
        [resolved("gas"), resolved(meter="farm.sludge_in", kind=DetectionKind.DATA_QUALITY)],
        [drop("sludge", 0.5)],                     # one more incident just before the receiver returns
    ]
    t_start = time.monotonic()
    for i, batch in enumerate(script):
        wait_for(lambda i=i: time.monotonic() - t_start >= i * step, step + 5, "the next step")
        h.emit(*batch)
    wait_for(lambda: time.monotonic() - t_start >= DOWNTIME_S, step + 5, "the end of the outage")
    rows = h.outbox()
    assert len(rows) >= 5 and all(r["status"] == "pending" for r in rows)
    assert rows[0]["attempts"] >= 3, "the service should have kept retrying during the outage"
    assert h.received_records() == []
    h.start_receiver()
    wait_for(h.all_delivered, 60, "delivery after the receiver came back")
    time.sleep(3)  # nothing more may arrive (no duplicate retries)
    bodies = check_delivery(h)
    assert len(bodies) == len(h.outbox())
    fired = {a["fingerprint"] for b in bodies for a in b["alerts"] if a["state"] == "firing"}
    ended = {a["fingerprint"] for b in bodies for a in b["alerts"] if a["state"] == "resolved"}
    sludge = {a["fingerprint"] for b in bodies for a in b["alerts"]
              if a["labels"].get("exchange") == "sludge"}
    assert fired - sludge <= ended  # every resolved incident was delivered as resolved
    power = [b for b in bodies if b["group_key"] == "toy/supply/power"]
    assert [(b["status"], len(b["alerts"])) for b in power] == [("firing", 2), ("resolved", 2)]


def test_kill_minus_9_with_undelivered_alerts_then_restart(h: Harness) -> None:
    first = h.start_service()
    h.emit(drop("steam"), drop("gas", 0.5), silent("farm.sludge_in"))
    # strict order per endpoint: only the head is being retried, the others wait behind it
    wait_for(lambda: len(h.outbox()) == 3 and h.outbox()[0]["attempts"] >= 2, 30,
             "three undelivered notifications, the first being retried")
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    before = h.outbox()
    assert all(r["status"] == "pending" for r in before)
    h.start_receiver()
    h.start_service()  # replays the whole events file: every event is a counted duplicate
    wait_for(h.all_delivered, 60, "delivery after the restart")
    time.sleep(3)
    bodies = check_delivery(h)
    assert [r["webhook_id"] for r in h.outbox()] == [r["webhook_id"] for r in before]
    assert sorted(b["group_key"] for b in bodies) == [
        "toy/data_quality/farm", "toy/supply/power", "toy/supply/refinery"]


def detector_events(trip: bool, silent_meter: str | None) -> list[DetectionEvent]:
    """Run the real detectors (detect.ParkMonitor) over synthetic 10 s readings of the toy
    park: normal operation long enough for the detectors' warm-up, then the power station trips
    and/or a meter falls silent, then 40 minutes more."""
    import detect as detect
    cfg = detect.DetectorConfig()
    period_ms = 10_000
    history = int((cfg.warmup_samples + cfg.learn_delay_samples) * 1.5) + 60
    n = history + 40 * 6
    park = toy_park()
    mon = detect.ParkMonitor(park, cfg)
    rng = random.Random(11)
    t0 = int(time.time() * 1000) - n * period_ms
    at = t0 + history * period_ms
    tripped = {"power.steam_out", "power.gypsum_out", "refinery.steam_in", "biotech.steam_in",
               "plaster.gypsum_in"}
    out = []
    for i in range(n):
        t = t0 + i * period_ms
        for m in park.meters:
            if m.id == silent_meter and t >= at:
                continue
            nominal = m.nominal or 0.0
            v = nominal * (0.02 if trip and t >= at and m.id in tripped else 1.0)
            out += mon.observe(m.id, t, v * (1 + rng.gauss(0, 0.01)))
        out += mon.tick(t)
    return [detect.to_detection_event(e) for e in out]


def test_one_trip_one_grouped_notification_and_a_silent_meter_is_data_quality_only(h: Harness) -> None:
    events = detector_events(trip=True, silent_meter="biotech.sludge_out")
    kinds = sorted((e.kind.value, e.exchange_id or "", e.meter_id or "") for e in events)
    assert {("supply_drop", "steam"), ("supply_drop", "gypsum")} <= {(k, x) for k, x, _ in kinds}
    assert ("data_quality", "sludge", "biotech.sludge_out") in kinds
    assert not any(k == "supply_drop" and x == "sludge" for k, x, _ in kinds)
    h.start_receiver()
    h.start_service()
    h.emit(*events)
    wait_for(h.all_delivered, 60, "the notifications")
    time.sleep(4)  # longer than group_wait + group_interval: nothing else may follow
    bodies = check_delivery(h)
    supply = [b for b in bodies if b["group_key"] == "toy/supply/power"]
    assert len(supply) == 1, "one supplier trip must give one notification"
    [trip] = supply
    assert {a["labels"]["exchange"] for a in trip["alerts"]} == {"steam", "gypsum"}
    assert set(trip["affected_consumers"]) == {"refinery", "biotech", "plaster"}
    dq = [b for b in bodies if b["group_key"] == "toy/data_quality/biotech"]
    assert len(dq) == 1
    assert [(a["name"], a["labels"]["meter"]) for a in dq[0]["alerts"]] == [
        ("data_quality", "biotech.sludge_out")]
    assert not any(a["labels"].get("exchange") == "sludge" for b in bodies for a in b["alerts"])
    assert len(bodies) == 2
