"""`parkmon alerts` consuming the real Kafka topic: events in, signed notifications out, offsets
committed after the outbox commit (a restart resumes after the last applied event)."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from alerts.model import DetectionEvent, DetectionKind
from tests.support.alerts import toy_park_data

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"kafka-integration-secret-0123456").decode()
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def kafka_bootstrap() -> str:
    from parkmon import devservices

    return str(devservices.ensure("kafka", quiet=True).bootstrap)  # type: ignore[attr-defined]


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def produce(bootstrap: str, topic: str, events: list[DetectionEvent | bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for ev in events:
        p.produce(topic, value=ev if isinstance(ev, bytes) else ev.to_json())
    assert p.flush(30) == 0


def dead_letters_of(bootstrap: str, source_topic: str) -> list[dict]:
    from confluent_kafka import Consumer

    from alerts.cli import alerts_deadletter_topic

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dl-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([alerts_deadletter_topic("toy")])
    out: list[dict] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not out:
        for m in c.consume(num_messages=500, timeout=1.0):
            if m.error() is None:
                rec = json.loads(m.value())
                if rec["topic"] == source_topic:
                    out.append(rec)
    c.close()
    return out


def test_kafka_source_delivers_and_resumes_after_restart(tmp_path: Path, kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"parkmon.toy.alerts.test-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    park = tmp_path / "park.yaml"
    park.write_text(yaml.safe_dump(toy_park_data()))
    received = tmp_path / "received.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_ALERTS_")}
    env.update({
        "PYTHONPATH": str(REPO), "PARKMON_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PARKMON_ALERTS_KAFKA_GROUP": f"alerts-test-{uuid.uuid4().hex[:8]}",
        "PARKMON_ALERTS_ENDPOINTS": json.dumps([{"name": "ops", "url": f"http://127.0.0.1:{port}/h"}]),
        "PARKMON_ALERTS_SECRET_OPS": SECRET, "PARKMON_ALERTS_ALLOW_LOOPBACK": "1",
        "PARKMON_ALERTS_GROUP_WAIT_MS": "1000", "PARKMON_ALERTS_GROUP_INTERVAL_MS": "1000",
        "PARKMON_ALERTS_BACKOFF_MAX_MS": "2000",
    })
    receiver = subprocess.Popen([sys.executable, "-m", "tests.support.alerts", "receive", "--port",
                                 str(port), "--out", str(received)], env=env,
                                stdout=subprocess.PIPE, start_new_session=True)
    procs: list[subprocess.Popen[bytes]] = [receiver]

    def start(n: int) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, "-m", "apps.cli", "alerts", "run", "--park",
                              str(park), "--db", str(tmp_path / "a.sqlite"), "--topic", topic],
                             env=env, stdout=subprocess.DEVNULL,
                             stderr=open(tmp_path / f"svc{n}.log", "wb"),  # noqa: SIM115
                             start_new_session=True)
        procs.append(p)
        return p

    def records() -> list[dict]:
        return [json.loads(x) for x in received.read_text().splitlines()] if received.exists() else []

    try:
        assert receiver.stdout is not None and b"listening" in receiver.stdout.readline()
        now = int(time.time() * 1000)
        produce(kafka_bootstrap, topic, [
            b'{"kind": "supply_drop", "ts_ms": 1}',  # no exchange: rejected, dead-lettered
            DetectionEvent(kind=DetectionKind.SUPPLY_DROP, exchange_id="steam", ts_ms=now, magnitude=1.0),
            DetectionEvent(kind=DetectionKind.SUPPLY_DROP, exchange_id="gypsum", ts_ms=now, magnitude=1.0),
            DetectionEvent(kind=DetectionKind.DATA_QUALITY, meter_id="farm.sludge_in", ts_ms=now,
                           dq_kind="silent"),
        ])
        first = start(1)
        wait_for(lambda: len(records()) >= 2, 90, "two notifications")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        produce(kafka_bootstrap, topic, [DetectionEvent(
            kind=DetectionKind.RESOLVED, exchange_id="steam", ts_ms=now + 60_000,
            resolves=DetectionKind.SUPPLY_DROP)])
        second = start(2)
        wait_for(lambda: len(records()) >= 3, 90, "the resolved notification")
        time.sleep(2)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()

    recs = records()
    ids = [r["headers"]["webhook-id"] for r in recs]
    assert len(ids) == len(set(ids)) == 3
    bodies = [Webhook(SECRET).verify(r["body"], r["headers"]) for r in recs]
    assert sorted((b["group_key"], b["sequence"]) for b in bodies) == [
        ("toy/data_quality/farm", 1), ("toy/supply/power", 1), ("toy/supply/power", 2)]
    trip, update = sorted((b for b in bodies if b["group_key"] == "toy/supply/power"),
                          key=lambda b: b["sequence"])
    assert {a["labels"]["exchange"] for a in trip["alerts"]} == {"steam", "gypsum"}
    # gypsum still fires, steam is back: the update carries both states
    assert sorted((a["labels"]["exchange"], a["state"]) for a in update["alerts"]) == [
        ("gypsum", "firing"), ("steam", "resolved")]
    [dl] = dead_letters_of(kafka_bootstrap, topic)
    assert dl["reason"] == "schema" and json.loads(dl["payload"]) == {"kind": "supply_drop", "ts_ms": 1}
    # the restarted service resumed after the committed offset: it read only the new event
    log2 = (tmp_path / "svc2.log").read_text()
    m = re.search(r"stopped: (\d+) events \((\d+) duplicates", log2)
    assert m is not None and (int(m.group(1)), int(m.group(2))) == (1, 0), log2[-2000:]
