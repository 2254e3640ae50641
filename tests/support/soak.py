"""Chaos soak of the whole scaled pipeline (`scripts/soak`; a short run in tests/e2e/test_soak.py).

On PRIVATE service instances (Mosquitto, Kafka, InfluxDB started here, in the work directory):

    simulator --MQTT QoS 1--> Mosquitto --$share--> 2 x `parkmon gateway` --> Kafka
        --> 2 x `parkmon streams worker --engine batch` (one consumer group) --> InfluxDB
        --> `parkmon detect` --> `parkmon alerts` --> a signed-webhook receiver that fails on
            purpose for stretches (503, slow responses, timeouts)

While the simulator publishes the Kalundborg-like park (a supply trip injected) at a steady rate,
a seeded chaos driver, at random intervals: kill -9 any parkmon process and restart it, SIGTERM
one, restart Mosquitto / Kafka / InfluxDB, take InfluxDB away for a stretch, SIGSTOP a streams
worker past its session timeout (it loses its group membership) and SIGCONT it, turn the receiver
bad. Every fault is logged with the time the service took to be healthy again.

After the publisher is done and the pipeline drained, the exact recount:
- every per-minute meter window in InfluxDB equals a recount from the published readings;
- every published reading is in the readings topic or the dead-letter topic (gateway accounting
  closes per meter: accepted + rejected + duplicate = published);
- every supply incident the detectors raise on the uninterrupted stream (DetectCore run here on the
  same readings) reached the receiver, signed (verified with `standardwebhooks`), and no supply
  alert it does not raise; notifications are counted per webhook id (a redelivery after a kill
  between the receiver's 2xx and the outbox update is the at-least-once case, reported).

    python -m tests.support.soak --duration 600 --seed 1 --workdir /tmp/soak
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MIN = 60_000
SECRET = "whsec_" + base64.b64encode(b"parkmon-soak-secret-0123456789abc").decode()


def _free_port(count: int = 1) -> int:
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if all(_port_free(p + i) for i in range(count)):
            return p
    raise RuntimeError("no free port")


def _port_free(p: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
    return True


# -- the receiver --------------------------------------------------------------------------------
class FlakyReceiver:
    """Records every delivery (headers, body, the status it answered); `mode` makes it fail:
    "ok", "503", "slow" (answers 200 after 3 s), "timeout" (holds the request 40 s)."""

    def __init__(self, secret: str) -> None:
        from standardwebhooks.webhooks import Webhook

        self.webhook = Webhook(secret)
        self.mode = "ok"
        self.records: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                mode = outer.mode
                if mode == "timeout":
                    time.sleep(40)
                elif mode == "slow":
                    time.sleep(3)
                status = 503 if mode == "503" else 200
                # verified on receipt, as a real receiver does: Standard Webhooks rejects a
                # timestamp more than 5 minutes from the verifier's clock, so verifying at the
                # end of a soak would fail every early delivery
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload, verify_error = outer.webhook.verify(body.decode(), headers), None
                except Exception as exc:  # noqa: BLE001 - recorded, counted by the check
                    payload, verify_error = None, f"{exc!r} headers={sorted(headers)}"
                with outer.lock:
                    outer.records.append({"headers": headers, "body": body.decode(),
                                          "payload": payload, "verify_error": verify_error,
                                          "status": status, "mode": mode, "at": time.time()})
                try:
                    self.send_response(status)
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.records if r["status"] == 200]

    def close(self) -> None:
        self.server.shutdown()


# -- processes -----------------------------------------------------------------------------------
@dataclass
class Proc:
    """A parkmon process the chaos driver may kill and restart."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    health: Callable[[Proc], bool] = lambda p: p.alive()
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    stopped: bool = False

    def start(self) -> None:
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=REPO, stdout=fh,
                                         stderr=subprocess.STDOUT)
        self.starts += 1
        self.stopped = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        return self.health(self)

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout_s: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.proc.wait(10)

    def log_tail(self, n: int = 25) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _health(port: int, path: str = "/healthz") -> Callable[[Proc], bool]:
    return lambda p: p.alive() and _http_ok(port, path)


def _http_ok(port: int, path: str = "/healthz") -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


@dataclass
class Fault:
    at_s: float
    kind: str
    target: str
    recovered_s: float | None = None
    note: str = ""


@dataclass
class Soak:
    duration_s: float
    seed: int
    workdir: Path
    event_minutes: int
    mean_gap_s: float
    faults: list[Fault] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)
    t0: float = 0.0

    def log(self, msg: str) -> None:
        print(f"[soak {time.monotonic() - self.t0:7.1f}s] {msg}", flush=True)


def run(duration_s: float = 600.0, seed: int = 1, workdir: Path | None = None,
        event_minutes: int | None = None, mean_gap_s: float = 20.0) -> dict[str, Any]:
    """Run the soak; returns the report (also written to workdir/soak-report.json)."""
    import tempfile

    from parkmon import devservices
    from parkmon.park import example_park_path, load_park
    from simulators.scenarios import parse_scenario
    from tests.support.edge import fleet_messages, recount_messages

    wd = Path(workdir or tempfile.mkdtemp(prefix="parkmon-soak-"))
    wd.mkdir(parents=True, exist_ok=True)
    # event time: at least the detectors' 2 h learning time before the trip, published evenly
    ev_min = event_minutes or max(210, int(duration_s * 0.8))
    s = Soak(duration_s, seed, wd, ev_min, mean_gap_s, t0=time.monotonic())
    rng = random.Random(seed)

    # 1. private services
    for name in ("mosquitto", "kafka", "influxdb"):
        port = _free_port(2 if name == "kafka" else 1)
        h = devservices.handle(name, data_dir=wd / f"{name}-{port}", port=port)
        h.ensure(lease=False)
        s.services[name] = h
    mq, kafka, influx = s.services["mosquitto"], s.services["kafka"], s.services["influxdb"]
    s.log(f"services up: mosquitto :{mq.port}, kafka {kafka.bootstrap}, influxdb {influx.url}")
    bucket = influx.create_bucket(f"soak{seed}")["name"]

    # 2. the park and the published stream
    data = yaml.safe_load(example_park_path("kalundborg").read_text())
    park_id = f"soak{seed}x{os.getpid()}"
    data["park"]["id"] = park_id
    park_file = wd / f"{park_id}.yaml"
    park_file.write_text(yaml.safe_dump(data, sort_keys=False))
    park = load_park(park_file)
    trip_at = ev_min - 60
    scenario = parse_scenario({
        "name": "soak", "park": park_id, "duration": f"{ev_min}m", "seed": seed,
        "events": [{"kind": "trip", "exchange": "gypsum", "at": f"{trip_at}m", "duration": "40m"}]})
    now = int(time.time() * 1000)
    start_ms = (now - (ev_min + 30) * MIN) // MIN * MIN
    messages, labels = fleet_messages(park, scenario, start_ms=start_ms, duration_ms=ev_min * MIN)
    expected = recount_messages(park, messages)
    published_readings = {(r.meter, r.seq) for m in messages for r in (m.readings or ())}
    s.log(f"{len(messages)} messages, {len(published_readings)} readings over {ev_min} event "
          f"minutes, to publish in ~{duration_s * 0.75:.0f} s")

    # 3. parkmon processes
    base = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_")}
    base.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
                 "PARKMON_KAFKA_BOOTSTRAP": kafka.bootstrap, "PARKMON_MQTT_HOST": mq.host,
                 "PARKMON_MQTT_PORT": str(mq.port), "PARKMON_INFLUX_URL": influx.url,
                 "PARKMON_INFLUX_ORG": influx.org, "PARKMON_INFLUX_BUCKET": bucket,
                 "PARKMON_INFLUX_TOKEN": influx.token})
    py = [sys.executable, "-m", "apps.cli"]
    recv = FlakyReceiver(SECRET)
    ports: dict[str, int] = {}
    for i in (1, 2):
        ports[f"gateway{i}"] = _free_port()
        s.procs[f"gateway{i}"] = Proc(
            f"gateway{i}", py + ["gateway", "--park", str(park_file), "--metrics-port",
                                 str(ports[f"gateway{i}"]), "--share-group", "soak"],
            {**base, "PARKMON_MQTT_CLIENT_ID": f"{park_id}-gw{i}"}, wd / f"gateway{i}.log",
            health=_health(ports[f"gateway{i}"]))
    for i in (1, 2):
        ports[f"streams{i}"] = _free_port()
        s.procs[f"streams{i}"] = Proc(
            f"streams{i}", py + ["streams", "worker", "--engine", "batch", "--park-id", park_id,
                                 "--park", str(park_file), "--bootstrap", kafka.bootstrap,
                                 "--influx-url", influx.url, "--influx-org", influx.org,
                                 "--influx-bucket", bucket, "--app-id", f"parkmon-streams-{park_id}",
                                 "--grace-ms", "600000", "--idle-close-ms", "5000",
                                 "--metrics-port", str(ports[f"streams{i}"]),
                                 "--session-timeout-s", "10"],
            base, wd / f"streams{i}.log",
            health=_health(ports[f"streams{i}"], "/metrics"))
    ports["detect"] = _free_port()
    s.procs["detect"] = Proc(
        "detect", py + ["detect", "--park", str(park_file)],
        {**base, "PARKMON_DETECT_CHECKPOINT": str(wd / "detect.ckpt"),
         "PARKMON_DETECT_IDLE_TICK_S": "0", "PARKMON_DETECT_METRICS_PORT": str(ports["detect"])},
        wd / "detect.log", health=_health(ports["detect"]))
    s.procs["alerts"] = Proc(
        "alerts", py + ["alerts", "run", "--park", str(park_file), "--db",
                        str(wd / "alerts.sqlite")],
        {**base, "PARKMON_ALERTS_KAFKA_GROUP": f"parkmon-alerts-{park_id}",
         "PARKMON_ALERTS_ENDPOINTS": json.dumps([{"name": "ops", "timeout_s": 5,
                                                   "url": f"http://127.0.0.1:{recv.port}/hook"}]),
         "PARKMON_ALERTS_SECRET_OPS": SECRET, "PARKMON_ALERTS_ALLOW_LOOPBACK": "1",
         "PARKMON_ALERTS_GROUP_WAIT_MS": "1000", "PARKMON_ALERTS_GROUP_INTERVAL_MS": "2000",
         "PARKMON_ALERTS_BACKOFF_INITIAL_MS": "250", "PARKMON_ALERTS_BACKOFF_MAX_MS": "5000"},
        wd / "alerts.log")
    s.procs["gateway1"].start()
    _wait(s.procs["gateway1"].healthy, 60, "gateway1 healthy", s)
    for name, p in s.procs.items():
        if name != "gateway1":
            p.start()
    for name, p in s.procs.items():
        _wait(p.healthy, 90, f"{name} healthy", s)
    s.log("pipeline up")

    # 4. publisher thread
    from tests.support.ingest import Publisher

    pub_done = threading.Event()
    pub_err: list[BaseException] = []
    publish_s = duration_s * 0.75

    def publish() -> None:
        try:
            pub = Publisher(mq.host, mq.port, client_id=f"{park_id}-pub")
            assert pub.wait_connected(30)
            t_pub = time.monotonic()
            pace = publish_s / len(messages)
            for i, m in enumerate(messages):
                pub.publish(m.topic, m.payload)
                d = t_pub + i * pace - time.monotonic()
                if d > 0:
                    time.sleep(d)
            if not pub.wait_all(600):
                raise RuntimeError(f"{len(pub.outstanding)} messages never acknowledged")
            pub.close()
        except BaseException as exc:  # noqa: BLE001 - reported
            pub_err.append(exc)
        finally:
            pub_done.set()

    threading.Thread(target=publish, daemon=True).start()

    # 5. chaos until the publisher is done
    kinds = ["kill9", "kill9", "kill9", "sigterm", "restart_mosquitto", "restart_kafka",
             "restart_influxdb", "influx_outage", "sigstop_worker", "receiver_bad"]
    chaos_end = time.monotonic() + publish_s
    while time.monotonic() < chaos_end and not pub_done.is_set():
        gap = rng.expovariate(1.0 / mean_gap_s) if mean_gap_s > 0 else math.inf
        if pub_done.wait(min(gap, max(0.0, chaos_end - time.monotonic()))) \
                or time.monotonic() >= chaos_end:
            break
        _inject(s, rng.choice(kinds), rng, recv)
    pub_done.wait(900)
    recv.mode = "ok"
    for p in s.procs.values():  # anything still down comes back
        if not p.alive():
            p.start()
    s.log("publisher done" + (f" with error {pub_err[0]!r}" if pub_err else ""))

    # 6. drain and recount
    report: dict[str, Any] = {"seed": seed, "duration_s": duration_s, "event_minutes": ev_min,
                              "messages": len(messages), "readings": len(published_readings),
                              "workdir": str(wd)}
    try:
        report.update(_check(s, park, expected, published_readings, messages, labels, recv,
                             bucket, start_ms, pub_err))
    finally:
        report["faults"] = [f.__dict__ for f in s.faults]
        for p in s.procs.values():
            p.signal(signal.SIGCONT)
            p.signal(signal.SIGTERM)
        for p in s.procs.values():
            p.wait_exit(30)
        recv.close()
        for h in s.services.values():
            h.stop()
        (wd / "soak-report.json").write_text(json.dumps(report, indent=1, default=str))
    return report


def _wait(cond: Callable[[], Any], timeout_s: float, what: str, s: Soak) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.5)
    tails = "\n".join(f"--- {n}\n{p.log_tail()}" for n, p in s.procs.items())
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{tails}")


def _recover(s: Soak, f: Fault, cond: Callable[[], bool], timeout_s: float = 180) -> None:
    t = time.monotonic()
    try:
        _wait(cond, timeout_s, f"{f.target} to recover from {f.kind}", s)
        f.recovered_s = round(time.monotonic() - t, 2)
    except AssertionError as exc:
        f.note = str(exc).splitlines()[0]


def _inject(s: Soak, kind: str, rng: random.Random, recv: FlakyReceiver) -> None:
    at = round(time.monotonic() - s.t0, 1)
    names = list(s.procs)
    if kind in ("kill9", "sigterm"):
        p = s.procs[rng.choice(names)]
        f = Fault(at, kind, p.name)
        p.signal(signal.SIGKILL if kind == "kill9" else signal.SIGTERM)
        p.wait_exit(60)
        time.sleep(rng.uniform(0.5, 5))
        p.start()
        _recover(s, f, p.healthy)
    elif kind.startswith("restart_"):
        name = kind.split("_", 1)[1]
        f = Fault(at, "restart", name)
        t = time.monotonic()
        s.services[name].restart()
        f.recovered_s = round(time.monotonic() - t, 2)
    elif kind == "influx_outage":
        f = Fault(at, "outage", "influxdb")
        h = s.services["influxdb"]
        h.stop()
        time.sleep(rng.uniform(10, 40))
        t = time.monotonic()
        h.start()
        f.recovered_s = round(time.monotonic() - t, 2)
        f.note = "down for the stretch before restart"
    elif kind == "sigstop_worker":
        p = s.procs[rng.choice(["streams1", "streams2"])]
        f = Fault(at, "sigstop", p.name)
        p.signal(signal.SIGSTOP)
        time.sleep(rng.uniform(15, 25))  # past the 10 s session timeout: it leaves the group
        p.signal(signal.SIGCONT)
        _recover(s, f, p.healthy)
    else:
        f = Fault(at, "receiver", "webhook", note="")
        recv.mode = rng.choice(["503", "slow", "timeout"])
        f.note = recv.mode
        time.sleep(rng.uniform(10, 30))
        recv.mode = "ok"
        f.recovered_s = 0.0
    s.faults.append(f)
    s.log(f"fault {f.kind} {f.target} {f.note} recovered in {f.recovered_s} s")


def _check(s: Soak, park: Any, expected: dict[tuple[str, int], float],
           published: set[tuple[str, int]], messages: list[Any], labels: list[Any],
           recv: FlakyReceiver, bucket: str, start_ms: int,
           pub_err: list[BaseException]) -> dict[str, Any]:
    from tests.support.streams import query_windows

    influx, kafka = s.services["influxdb"], s.services["kafka"]
    out: dict[str, Any] = {"publisher_error": repr(pub_err[0]) if pub_err else None}
    t = time.monotonic()

    from tests.support.edge import recount_messages

    # readings the streams workers dead-lettered as late beyond the grace period (a paused or
    # killed gateway's in-flight messages can arrive minutes of event time late) are accounted
    # for with their reason and not windowed: the recount leaves exactly those out
    seen_late: dict[str, Any] = {"late": set(), "reasons": {}, "expected": expected}

    def windows_complete() -> dict[tuple[str, int], float] | None:
        try:
            late, reasons = _streams_dead_letters(kafka.bootstrap, park.id)
            if late != seen_late["late"]:
                seen_late["expected"] = recount_messages(park, messages, exclude=late)
            seen_late.update(late=late, reasons=reasons)
            got = query_windows(influx.url, influx.token, influx.org, bucket, park.id)
        except Exception:  # noqa: BLE001 - Kafka or InfluxDB may be restarting
            return None
        return got if set(got) >= set(seen_late["expected"]) else None

    try:
        got = _wait(windows_complete, 600, "every window in InfluxDB", s)
    except AssertionError:
        got = query_windows(influx.url, influx.token, influx.org, bucket, park.id)
    out["drain_s"] = round(time.monotonic() - t, 1)
    late, reasons = seen_late["late"], seen_late["reasons"]
    expected = seen_late["expected"]
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = [k for k in expected if k in got
             and abs(got[k] - expected[k]) > 1e-9 * max(1.0, abs(expected[k]))]
    out["windows"] = {"expected": len(expected), "late_dead_lettered": len(late),
                      "streams_dead_letters": reasons,
                      "missing": len(missing), "extra": len(extra),
                      "wrong": len(wrong), "examples": [str(x) for x in (missing + wrong)[:5]]}

    # gateway accounting: every published reading is in the readings or the dead-letter topic
    seen, dead = _topic_readings(kafka.bootstrap, park.id)
    lost = published - seen - dead
    out["accounting"] = {"published": len(published), "in_readings_topic": len(seen & published),
                         "dead_lettered": len(dead & published), "lost": len(lost),
                         "examples": [str(x) for x in sorted(lost)[:5]]}

    # alerts: the incidents of the uninterrupted stream, delivered, signed
    want = _uninterrupted_incidents(park, messages)
    ids: dict[str, int] = {}
    bad_sig = 0
    sig_errors: list[str] = []
    delivered: set[tuple[str, str]] = set()

    def poll_receiver() -> bool:
        nonlocal bad_sig
        for rec in recv.accepted():
            if rec.get("_seen"):
                continue
            rec["_seen"] = True
            h = rec["headers"]
            if rec["verify_error"] is not None:
                bad_sig += 1
                sig_errors.append(rec["verify_error"])
                continue
            body = rec["payload"]
            ids[h["webhook-id"]] = ids.get(h["webhook-id"], 0) + 1
            for a in body.get("alerts", ()):
                if a["name"] in ("supply_drop", "supply_decline") and body["status"] == "firing":
                    delivered.add((a["name"], a["labels"].get("exchange", "")))
        return {e for _, e in want} <= {e for _, e in delivered}

    try:
        _wait(poll_receiver, 240, "every expected supply alert at the receiver", s)
    except AssertionError:
        poll_receiver()
    out["alerts"] = {"expected_incidents": sorted(want), "delivered": sorted(delivered),
                     "missing": sorted({e for _, e in want} - {e for _, e in delivered}),
                     "unexpected": sorted({e for _, e in delivered} - {e for _, e in want}),
                     "notifications": len(ids), "redelivered_ids": sum(1 for n in ids.values()
                                                                      if n > 1),
                     "bad_signatures": bad_sig, "signature_errors": sig_errors[:3],
                     "receiver_answers": _count(r["status"] for r in recv.records)}
    ok = (not missing and not extra and not wrong and not lost and not bad_sig
          and not out["alerts"]["missing"] and not out["alerts"]["unexpected"] and not pub_err)
    out["passed"] = ok
    return out


def _count(xs: Any) -> dict[str, int]:
    d: dict[str, int] = {}
    for x in xs:
        d[str(x)] = d.get(str(x), 0) + 1
    return d


def _topic_readings(bootstrap: str, park_id: str) -> tuple[set[tuple[str, int]],
                                                           set[tuple[str, int]]]:
    """(meter, seq) of every reading in the readings topic, and of every reading in a
    dead-lettered message."""
    from confluent_kafka import Consumer, TopicPartition

    from parkmon.contracts import kafka_deadletter_topic, kafka_readings_topic

    out: list[set[tuple[str, int]]] = []
    for topic in (kafka_readings_topic(park_id), kafka_deadletter_topic(park_id)):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"soak-check-{time.time()}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        found: set[tuple[str, int]] = set()
        try:
            md = c.list_topics(topic, timeout=30).topics.get(topic)
            parts = list(md.partitions) if md is not None and md.partitions else []
            ends = {}
            for p in parts:
                _lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                ends[p] = hi
            c.assign([TopicPartition(topic, p, 0) for p in parts])
            done = {p for p, hi in ends.items() if hi <= 0}
            deadline = time.monotonic() + 300
            while len(done) < len(parts) and time.monotonic() < deadline:
                for m in c.consume(5000, timeout=1.0):
                    if m.error():
                        continue
                    if m.offset() + 1 >= ends[m.partition()]:
                        done.add(m.partition())
                    found |= _readings_in(m.value() or b"")
        finally:
            c.close()
        out.append(found)
    return out[0], out[1]


def _streams_dead_letters(bootstrap: str, park_id: str) -> tuple[set[tuple[str, int]],
                                                                 dict[str, int]]:
    """(meter, ts_ms) of the readings the streams workers dead-lettered as late, and the count of
    every streams dead letter by reason."""
    from parkmon.contracts import Reading, kafka_streams_deadletter_topic
    from tests.support.ingest import read_topic

    late: set[tuple[str, int]] = set()
    reasons: dict[str, int] = {}
    for _k, v in read_topic(bootstrap, kafka_streams_deadletter_topic(park_id), timeout_s=120):
        d = json.loads(v)
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
        if d["reason"] == "late_beyond_grace" and "payload" in d:
            r = Reading.from_json(d["payload"].encode())
            late.add((r.meter, r.ts_ms))
    return late, reasons


def _readings_in(value: bytes) -> set[tuple[str, int]]:
    try:
        d = json.loads(value)
    except ValueError:
        return set()
    if not isinstance(d, dict):
        return set()
    # a reading on the readings topic, or a dead letter carrying the original payload
    if "meter" in d and "seq" in d:
        return {(str(d["meter"]), int(d["seq"]))}
    raw = d.get("payload") or d.get("raw") or d.get("original")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return set()
    found: set[tuple[str, int]] = set()
    items = raw.get("readings") if isinstance(raw, dict) and "readings" in raw else [raw]
    for r in items or ():
        if isinstance(r, dict) and "meter" in r and "seq" in r:
            try:
                found.add((str(r["meter"]), int(r["seq"])))
            except (TypeError, ValueError):
                pass
    return found


def _uninterrupted_incidents(park: Any, messages: list[Any]) -> set[tuple[str, str]]:
    """(kind, exchange) of the supply events the detectors raise on the whole stream at once."""
    from detect.core import DetectCore, Record
    from parkmon.contracts import Reading
    from parkmon.units import to_canonical

    recs: list[Record] = []
    seen: set[tuple[str, int]] = set()
    for m in messages:
        for r in m.readings or ():
            if (r.meter, r.seq) in seen:
                continue
            seen.add((r.meter, r.seq))
            meter = park.meter(r.meter)
            v = to_canonical(r.value, r.unit, meter.canonical_unit)
            recs.append(Record(0, len(recs), Reading(r.meter, r.ts_ms, v).to_json()))
    recs.sort(key=lambda rec: json.loads(rec.value)["ts_ms"])
    recs = [Record(0, i, rec.value) for i, rec in enumerate(recs)]
    events = DetectCore(park, idle_after_ms=0).process(recs).events
    return {(str(e.kind.value), str(e.exchange_id)) for e in events
            if str(e.kind.value) in ("supply_drop", "supply_decline")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--mean-gap-s", type=float, default=20.0,
                    help="mean time between faults (0: no faults, a fault-free reference run)")
    ap.add_argument("--event-minutes", type=int, help="simulated minutes published")
    a = ap.parse_args(argv)
    rep = run(a.duration, a.seed, a.workdir, a.event_minutes, a.mean_gap_s)
    print(json.dumps({k: v for k, v in rep.items() if k != "faults"}, indent=1, default=str))
    print(f"{len(rep['faults'])} faults injected:")
    for f in rep["faults"]:
        print(f"  {f['at_s']:7.1f}s {f['kind']:<9} {f['target']:<10} recovered in "
              f"{f['recovered_s']} s {f['note']}")
    print("SOAK PASSED" if rep.get("passed") else "SOAK FAILED")
    return 0 if rep.get("passed") else 1


if __name__ == "__main__":
    raise SystemExit(main())
