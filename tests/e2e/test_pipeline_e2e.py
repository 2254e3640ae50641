"""The whole scaled pipeline, each stage its own process as in production, on the real services:

    publisher --MQTT--> Mosquitto --> `parkmon gateway` --Kafka parkmon.<park>.readings--+
        +--> `parkmon streams worker` (Faust) --> InfluxDB (per-minute meter windows)
        +--> `parkmon detect` --Kafka parkmon.<park>.alerts--> `parkmon alerts` --> webhook

A simulated Kalundborg run (3.5 h of event time, published accelerated in ~20 s) with a trip of the
gypsum exchange. Asserted: (a) every per-minute window quantity in InfluxDB (Flux) equals a
recount made here from the published payloads; (b) the webhook receiver (its own process on
127.0.0.1) got a notification for the trip, signed per Standard Webhooks (verified with the
`standardwebhooks` library), naming the affected consumers.

The park gets a unique id (so its MQTT and Kafka topics and Influx tags are this test's alone on
the shared services).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from parkmon.park import example_park_path, load_park
from simulators.scenarios import parse_scenario
from tests.support.detect import DetectProcess
from tests.support.edge import drop_session, fleet_messages
from tests.support.edge import recount_messages as recount
from tests.support.ingest import GatewayProcess, Publisher, free_port
from tests.support.streams import WorkerProcess, query_windows

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
MIN = 60_000
RUN_MIN = 210
TRIP_AT_MIN = 150
SECRET = "whsec_" + base64.b64encode(b"pipeline-e2e-secret-0123456789ab").decode()


def wait_for(check: Callable[[], Any], timeout_s: float, what: str,
             logs: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{logs()}")


def unique_park_file(tmp: Path) -> tuple[Path, str]:
    data = yaml.safe_load(example_park_path("kalundborg").read_text())
    park_id = f"e2e{uuid.uuid4().hex[:10]}"
    data["park"]["id"] = park_id
    path = tmp / f"{park_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, park_id


class Procs:
    def __init__(self) -> None:
        self.popen: list[subprocess.Popen[bytes]] = []
        self.stoppers: list[Callable[[], Any]] = []

    def close(self) -> None:
        for stop in reversed(self.stoppers):
            try:
                stop()
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        for p in self.popen:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout:
                p.stdout.close()


@pytest.fixture()
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.close()


def test_mqtt_to_influx_windows_and_signed_trip_webhook(
        mosquitto: Any, kafka: Any, influx: Any, influx_bucket: Any, tmp_path: Path,
        procs: Procs) -> None:
    t_start = time.monotonic()
    park_file, park_id = unique_park_file(tmp_path)
    park = load_park(park_file)
    scenario = parse_scenario({
        "name": "pipeline_e2e", "park": park_id, "duration": f"{RUN_MIN}m", "seed": 11,
        # still tripped at the end of the run: the replay is faster than the alert group wait
        "events": [{"kind": "trip", "exchange": "gypsum", "at": f"{TRIP_AT_MIN}m",
                    "duration": "3h"}]})
    now = int(time.time() * 1000)
    start = (now - (RUN_MIN + 10) * MIN) // MIN * MIN
    messages, labels = fleet_messages(park, scenario, start_ms=start, duration_ms=RUN_MIN * MIN)
    trip = next(lb for lb in labels if lb.kind == "trip")
    expected = recount(park, messages)
    n_readings = sum(len(m.readings or ()) for m in messages)
    tag = park_id

    # the webhook receiver: its own process on 127.0.0.1, recording raw bodies and headers
    port = free_port()
    received = tmp_path / "received.jsonl"
    env_base = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_")}
    env_base["PYTHONPATH"] = str(REPO)
    recv = subprocess.Popen([sys.executable, "-m", "tests.support.alerts", "receive", "--port",
                             str(port), "--out", str(received)], env=env_base,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    procs.popen.append(recv)
    assert recv.stdout is not None and b"listening" in recv.stdout.readline()

    # 1. gateway (creates parkmon.<park>.readings with 3 partitions)
    gw_client = f"gw-{tag}"
    gw = GatewayProcess(park_file, mosquitto.host, mosquitto.port, kafka.bootstrap, gw_client,
                        tmp_path / "gateway.log")
    procs.stoppers.append(lambda: drop_session(mosquitto.host, mosquitto.port, gw_client))
    procs.stoppers.append(lambda: gw.terminate(30) if gw.alive() else None)
    gw.start(wait_healthy_s=60)

    # 2. streams worker, detect, alerts: each its own process
    worker = WorkerProcess(park_id, kafka.bootstrap, influx_bucket.url, influx_bucket.org,
                           influx_bucket.name, influx_bucket.token, tmp_path / "streams.log",
                           app_id=f"parkmon-streams-{tag}",
                           extra=["--park", str(park_file), "--grace-ms", "120000",
                                  "--idle-close-ms", "5000", "--flush-interval-s", "0.5"])
    procs.stoppers.append(worker.stop)
    worker.start()
    det = DetectProcess(park_file, kafka.bootstrap, tmp_path / "detect.log", {
        "PARKMON_DETECT_CHECKPOINT": str(tmp_path / "detect.ckpt"),
        "PARKMON_DETECT_IDLE_TICK_S": "0",  # a replay's event time is not the wall clock's
    })
    procs.stoppers.append(det.stop)
    det.start()
    alerts_env = {
        **env_base, "PARKMON_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "PARKMON_ALERTS_KAFKA_GROUP": f"parkmon-alerts-{tag}",
        "PARKMON_ALERTS_ENDPOINTS": json.dumps(
            [{"name": "ops", "url": f"http://127.0.0.1:{port}/hooks/parkmon", "timeout_s": 5}]),
        "PARKMON_ALERTS_SECRET_OPS": SECRET, "PARKMON_ALERTS_ALLOW_LOOPBACK": "1",
        "PARKMON_ALERTS_GROUP_WAIT_MS": "1000", "PARKMON_ALERTS_GROUP_INTERVAL_MS": "2000",
        "PARKMON_ALERTS_BACKOFF_INITIAL_MS": "250",
    }
    alerts_log = tmp_path / "alerts.log"
    with open(alerts_log, "wb") as fh:
        alerts = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "alerts", "run", "--park", str(park_file),
             "--db", str(tmp_path / "alerts.sqlite")], env=alerts_env, cwd=tmp_path,
            stdout=fh, stderr=subprocess.STDOUT)
    procs.popen.append(alerts)

    def logs() -> str:
        parts = []
        for name in ("gateway.log", "streams.log", "detect.log", "alerts.log"):
            p = tmp_path / name
            text = p.read_text(errors="replace") if p.exists() else ""
            parts.append(f"--- {name}\n" + "\n".join(text.splitlines()[-15:]))
        return "\n".join(parts)

    # 3. publish over MQTT, accelerated (~12 simulated minutes per second)
    t_pub = time.monotonic()
    pub = Publisher(mosquitto.host, mosquitto.port, client_id=f"pub-{tag}")
    try:
        assert pub.wait_connected(10)
        pace = 20.0 / len(messages)
        for i, msg in enumerate(messages):
            pub.publish(msg.topic, msg.payload)
            delay = t_pub + i * pace - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        assert pub.wait_all(60), "broker did not acknowledge every message"
    finally:
        pub.close()
    published_s = time.monotonic() - t_pub

    # (b) a signed notification for the trip, naming the affected consumers
    wh = Webhook(SECRET)

    def trip_notes() -> list[tuple[dict[str, Any], dict[str, Any]]]:
        if not received.exists():
            return []
        out = []
        for line in received.read_text().splitlines():
            rec = json.loads(line)
            body = wh.verify(rec["body"], rec["headers"])  # raises if the signature is wrong
            for a in body.get("alerts", []):
                if a["name"] == "supply_drop" and a["labels"].get("exchange") == "gypsum" \
                        and a["state"] == "firing":
                    out.append((body, a))
        return out

    notes = wait_for(trip_notes, 90, "the signed trip notification", logs)
    t_webhook = time.monotonic() - t_pub
    body, alert = notes[0]
    assert body["park"] == park_id and body["status"] == "firing"
    for consumer in trip.details["consumer_enterprises"]:
        assert consumer in body["affected_consumers"]
        assert consumer in alert["summary"]
    assert {c["meter"] for c in alert["impact"]["consumers"]} >= set(trip.details["consumers"])
    assert trip.start_ms - 2 * MIN <= alert["starts_at_ms"] <= trip.start_ms + 5 * MIN
    # no other supply incident was notified (the run has only the gypsum trip)
    for line in received.read_text().splitlines():
        b = json.loads(json.loads(line)["body"])
        for a in b["alerts"]:
            if a["name"] in ("supply_drop", "supply_decline"):
                assert a["labels"].get("exchange") == "gypsum", a

    # (a) per-minute windows in InfluxDB == the recount
    def windows_complete() -> dict[tuple[str, int], float] | None:
        got = query_windows(influx_bucket.url, influx_bucket.token, influx_bucket.org,
                            influx_bucket.name, park_id)
        return got if set(got) >= set(expected) else None

    got = wait_for(windows_complete, 120, "every window in InfluxDB", logs)
    t_windows = time.monotonic() - t_pub
    assert set(got) == set(expected)
    wrong = {k: (got[k], v) for k, v in expected.items()
             if got[k] != pytest.approx(v, rel=1e-9, abs=1e-9)}
    assert not wrong, f"{len(wrong)} of {len(expected)} windows differ: {list(wrong.items())[:5]}"
    # (a') benefit sharing from the scaled worker: credits per enterprise add up to the park's
    from tests.support.edge import credits_add_up, query_points

    kpis = query_points(influx_bucket.url, influx_bucket.token, influx_bucket.org,
                        influx_bucket.name, now - 24 * 60 * MIN, ("kpi",))
    kpis = {k: f for k, f in kpis.items() if dict(k[1]).get("park") == park_id}
    assert credits_add_up(kpis) > 0, logs()

    # every stage still up, and each stops cleanly on SIGTERM
    assert gw.alive() and worker.alive() and det.alive() and alerts.poll() is None, logs()
    assert det.stop() == 0, logs()
    assert all("raw" not in rec for rec in det.log_lines()), "parkmon detect logs JSON lines only"
    alerts.send_signal(signal.SIGTERM)
    assert alerts.wait(30) == 0, logs()
    assert gw.terminate(60) == 0, logs()
    print(f"\npipeline e2e: {n_readings} readings in {len(messages)} MQTT messages published in "
          f"{published_s:.1f} s; all {len(expected)} windows in InfluxDB after {t_windows:.1f} s; "
          f"trip webhook after {t_webhook:.1f} s; test {time.monotonic() - t_start:.1f} s")
