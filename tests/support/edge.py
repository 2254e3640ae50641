"""Test and benchmark helpers for `parkmon edge` (used by tests/integration/test_edge_mode.py,
tests/e2e/test_edge_crash.py and `parkmon edge` figures in docs/edge-mode.md).

- `fleet_messages`: a simulated run as the exact MQTT messages a fleet sends (one batch per
  enterprise per simulation step, malformed payloads alone), with the readings of each;
- `publish`: those messages over real MQTT (QoS 1), optionally paced;
- `EdgeProcess`: `parkmon edge` as a subprocess (start, health, SIGTERM, kill -9);
- `reference_points`: the same messages through an in-process EdgePipeline (expected results);
- `query_points`: what InfluxDB holds (Flux), in the same shape;
- `WebhookReceiver`: a loopback HTTP server that records POSTed JSON bodies.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from parkmon.contracts import mqtt_topic
from parkmon.units import to_canonical

PointKey = tuple[str, tuple[tuple[str, str], ...], int]


@dataclass
class FleetMessage:
    topic: str
    payload: bytes
    readings: list[Any] = field(default_factory=list)  # SimReading (empty for malformed)


def fleet_messages(park: Any, scenario: Any, *, start_ms: int, duration_ms: int,
                   seed: int | None = None) -> tuple[list[FleetMessage], list[Any]]:
    """(messages in send order, labels). Per simulation step, one batch per enterprise."""
    from simulators.fleet import Fleet

    if seed is None:
        seed = scenario.seed if scenario is not None and scenario.seed is not None else 0
    fleet = Fleet(park, seed=seed, start_ms=start_ms, scenario=scenario)
    out: list[FleetMessage] = []

    def emit(step: list[Any]) -> None:
        buffers: dict[str, list[Any]] = {}
        for r in step:
            if r.raw is not None:
                out.append(FleetMessage(mqtt_topic(park.id, r.enterprise), r.raw))
                continue
            buffers.setdefault(r.enterprise, []).append(r)
        for ent, rs in buffers.items():
            body = {"v": 1, "source": "edge-test", "readings": [r.payload() for r in rs]}
            out.append(FleetMessage(mqtt_topic(park.id, ent),
                                    json.dumps(body, separators=(",", ":")).encode(), rs))

    for step in fleet.batches(start_ms + duration_ms):
        emit(step)
    emit(fleet.drain())
    return out, fleet.labels


def publish(messages: list[FleetMessage], host: str, port: int, *, client_id: str,
            per_s: float | None = None, stop: threading.Event | None = None,
            on_progress: Callable[[int], None] | None = None, timeout_s: float = 120.0,
            hold: threading.Event | None = None, held: threading.Event | None = None) -> int:
    """Publish with QoS 1 (optionally `per_s` messages per second); wait until the broker has
    acknowledged every one. Returns how many were published.

    hold / held: while `hold` is set, the publisher stops before its next message, waits until
    the broker acknowledged everything sent so far, sets `held`, and waits for `hold` to clear
    (a test restarts the broker meanwhile without paho re-sending an in-flight window behind
    newer messages, which would reorder the stream). Whenever the connection is down, the next
    message waits for the reconnect and for every earlier one to be acknowledged, so the broker
    receives the messages in order (paho alone does not guarantee that across a reconnect)."""
    import paho.mqtt.client as mqtt

    cond = threading.Condition()
    acked = [0]
    connected = threading.Event()

    def on_publish(*_a: Any) -> None:
        with cond:
            acked[0] += 1
            cond.notify_all()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv311, clean_session=True)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.reconnect_delay_set(min_delay=1, max_delay=2)
    c.on_connect = lambda *a: connected.set()
    c.on_publish = on_publish
    c.connect(host, port)
    c.loop_start()
    n = 0
    try:
        if not connected.wait(10):
            raise RuntimeError("publisher could not connect")
        t0 = time.monotonic()
        for i, m in enumerate(messages):
            if stop is not None and stop.is_set():
                break
            if hold is not None and hold.is_set():
                with cond:
                    if not cond.wait_for(lambda k=n: acked[0] >= k, timeout_s):  # type: ignore[misc]
                        raise RuntimeError("broker did not acknowledge before the hold")
                if held is not None:
                    held.set()
                while hold.is_set():
                    time.sleep(0.05)
            if per_s:
                delay = t0 + i / per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if not c.is_connected():
                # keep the stream's order across a reconnect: paho re-sends what was published
                # while disconnected only after the CONNACK, but a message published while it
                # reconnects goes out right behind the CONNECT, i.e. ahead of all of them (seen:
                # one message 20 min of event time ahead of 224 others, which then arrived late
                # beyond grace). So wait until connected and everything sent so far is acked.
                deadline = time.monotonic() + timeout_s
                while not (c.is_connected() and acked[0] >= n):
                    if time.monotonic() > deadline:
                        raise RuntimeError("publisher did not reconnect")
                    time.sleep(0.02)
            info = c.publish(m.topic, m.payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
            n += 1
            if on_progress is not None:
                on_progress(n)
        with cond:
            if not cond.wait_for(lambda: acked[0] >= n, timeout_s):
                raise RuntimeError(f"broker acknowledged {acked[0]} of {n} messages")
        return n
    finally:
        c.disconnect()
        c.loop_stop()


def drop_session(host: str, port: int, client_id: str) -> None:
    """End a persistent MQTT session (and its queued messages) on the broker."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    try:
        c.connect(host, port, clean_start=True, properties=props)
        c.loop(1.0)
        c.disconnect()
    except OSError:
        pass


# -- expected results ------------------------------------------------------------------------
def reference_pipeline(park: Any, messages: list[FleetMessage], *, final_ms: int,
                       **kw: Any) -> Any:
    """The same messages through one uninterrupted in-process EdgePipeline (no alerts), then
    event time advanced to `final_ms`. Returns the pipeline (windows, kpis)."""
    from apps.edge.pipeline import EdgePipeline

    def now() -> int:
        return time.time_ns() // 1_000_000

    pipe = EdgePipeline(park, now_ms=now, **kw)
    last = None
    for m in messages:
        pipe.feed(m.topic, m.payload)
        if pipe.max_ts_ms is not None and (last is None or pipe.max_ts_ms - last >= 10_000):
            last = pipe.max_ts_ms
            pipe.advance(last)
    pipe.advance(final_ms, force_kpis=True)
    return pipe


def reference_points(park: Any, pipe: Any) -> dict[PointKey, dict[str, Any]]:
    from streams.core.points import to_points

    outs = list(pipe.windows.values()) + list(pipe.kpis.values())
    return {p.series_key: dict(p.fields) for p in to_points(park.id, outs)}


def query_points(url: str, token: str, org: str, bucket: str, start_ms: int,
                 measurements: tuple[str, ...] = ("meter_window", "kpi")
                 ) -> dict[PointKey, dict[str, Any]]:
    """Every point of `measurements` in the bucket since start_ms, keyed like PointSpec."""
    from influxdb_client import InfluxDBClient

    meas = " or ".join(f'r._measurement == "{m}"' for m in measurements)
    flux = (f'from(bucket: "{bucket}") |> range(start: time(v: {start_ms * 1_000_000}))'
            f" |> filter(fn: (r) => {meas})")
    out: dict[PointKey, dict[str, Any]] = {}
    with InfluxDBClient(url=url, token=token, org=org, timeout=60_000) as client:
        for table in client.query_api().query(flux, org=org):
            for rec in table.records:
                v = rec.values
                tags = tuple(sorted((k, str(val)) for k, val in v.items()
                                    if k not in ("result", "table", "_start", "_stop", "_time",
                                                 "_value", "_field", "_measurement")
                                    and val is not None))
                ts = int(rec.get_time().timestamp() * 1000)
                key = (str(rec.get_measurement()), tags, ts)
                out.setdefault(key, {})[str(rec.get_field())] = rec.get_value()
    return out


# -- the edge process ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


class EdgeProcess:
    """`parkmon edge` as a subprocess with the given environment (logs to `log_path`)."""

    def __init__(self, park_file: str | Path, env: dict[str, str], log_path: str | Path,
                 metrics_port: int | None = None) -> None:
        self.park_file = str(park_file)
        self.port = metrics_port or free_port()
        self.env = {**os.environ, **env, "PARKMON_EDGE_METRICS_PORT": str(self.port)}
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        fh = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        fh.write(f"--- start {self.starts}\n".encode())
        fh.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "apps.cli", "edge", "--park", self.park_file],
            env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()

    def health(self) -> dict[str, Any] | None:
        import httpx

        try:
            r = httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2.0)
        except httpx.HTTPError:
            return None
        data: dict[str, Any] = r.json()
        data["_http_status"] = r.status_code
        return data

    def metrics_text(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2.0).text

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout_s: float,
             what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"edge process exited ({self.proc.returncode}) while "
                                     f"waiting for {what}; log:\n{self.log_tail()}")
            h = self.health()
            if h is not None:
                last = h
                if pred(h):
                    return h
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last health {last}; log:\n"
                             f"{self.log_tail()}")

    def status(self) -> dict[str, Any]:
        """The current /healthz body (waits up to 10 s for an answer)."""
        return self.wait(lambda h: True, 10.0, "a health answer")

    def wait_ready(self, timeout_s: float = 60.0) -> dict[str, Any]:
        return self.wait(lambda h: h["_http_status"] == 200, timeout_s, "a healthy edge")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


# -- webhook receiver ------------------------------------------------------------------------
class WebhookReceiver:
    """Records the JSON body and headers of every POST; answers 200."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with lock:
                    received.append({"headers": {k.lower(): v for k, v in self.headers.items()},
                                     "body": json.loads(body)})
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return None

        self.received = received
        self._srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._srv.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._srv.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def bodies(self) -> list[dict[str, Any]]:
        return [r["body"] for r in list(self.received)]


# -- figures ---------------------------------------------------------------------------------
def bench(hours: float = 24.0, checkpoint_messages: int = 80, keep: bool = False) -> dict[str, Any]:
    """Readings/s through `parkmon edge` (subprocess) on the dev services: a Kalundborg run of
    `hours` simulated hours is queued on the broker for the edge's session first, then the edge
    starts and drains it; timed from the edge's first health answer to the moment every message
    is fed and acknowledged (InfluxDB writes and checkpoints included). For comparison, the same
    messages through an in-process EdgePipeline without any I/O are timed too."""
    import tempfile
    import uuid

    from parkmon import devservices
    from parkmon.park import example_park_path, load_park

    tmp = Path(tempfile.mkdtemp(prefix="parkmon-edge-bench-"))
    # a Mosquitto of its own (the park's topics are fixed; others may publish Kalundborg runs)
    mq = devservices.handle("mosquitto", data_dir=tmp / "mosquitto", port=free_port())
    mq.ensure()
    inf = devservices.ensure("influxdb", quiet=True)
    park = load_park(example_park_path("kalundborg"))
    now = time.time_ns() // 1_000_000
    dur = int(hours * 3_600_000)
    start = (now - dur - 20 * 60_000) // 60_000 * 60_000
    messages, _ = fleet_messages(park, None, start_ms=start, duration_ms=dur)
    readings = sum(len(m.readings) for m in messages)
    tag = uuid.uuid4().hex[:8]
    client_id = f"edge-bench-{tag}"
    bucket = inf.create_bucket(f"edge-bench-{tag}")  # type: ignore[attr-defined]
    env = {"PARKMON_MQTT_HOST": mq.host, "PARKMON_MQTT_PORT": str(mq.port),
           "PARKMON_MQTT_CLIENT_ID": client_id, "PARKMON_INFLUX_URL": inf.url,  # type: ignore[attr-defined]
           "PARKMON_INFLUX_ORG": inf.org, "PARKMON_INFLUX_BUCKET": bucket["name"],  # type: ignore[attr-defined]
           "PARKMON_INFLUX_TOKEN": inf.token,  # type: ignore[attr-defined]
           "PARKMON_EDGE_STATE_DIR": str(tmp / "state"), "PARKMON_ALERTS_ENDPOINTS": "[]",
           "PARKMON_EDGE_CHECKPOINT_MESSAGES": str(checkpoint_messages),
           "PARKMON_EDGE_LOG_LEVEL": "WARNING"}
    edge = EdgeProcess(example_park_path("kalundborg"), env, tmp / "edge.log")
    try:
        edge.start()  # create the persistent session, then stop: the broker queues for it
        edge.wait_ready()
        assert edge.terminate() == 0
        publish(messages, mq.host, mq.port, client_id=f"edge-bench-pub-{tag}")
        t0 = time.monotonic()
        edge.start()
        h = edge.wait(lambda h: h.get("messages", 0) >= len(messages) and h["unacked"] == 0,
                      3600, "the backlog to be processed")
        wall = time.monotonic() - t0
        ckpt_bytes = (tmp / "state" / "edge-state.sqlite").stat().st_size
        metrics = {line.split()[0]: float(line.split()[1]) for line in
                   edge.metrics_text().splitlines()
                   if line.startswith("parkmon_edge_checkpoint_seconds_")
                   and not line.startswith("parkmon_edge_checkpoint_seconds_bucket")}
        cp_s = metrics.get("parkmon_edge_checkpoint_seconds_sum", 0.0)
        edge.terminate()
    finally:
        if edge.proc is not None and edge.proc.poll() is None:
            edge.kill9()
        mq.stop()
        if not keep:
            inf.delete_bucket(bucket["id"])  # type: ignore[attr-defined]
    t1 = time.monotonic()
    reference_pipeline(park, messages, final_ms=start + dur + 600_000)
    inproc = time.monotonic() - t1
    return {"simulated_hours": hours, "messages": len(messages), "readings": readings,
            "in_process_pipeline_readings_per_s": round(readings / inproc),
            "wall_s": round(wall, 2), "readings_per_s": round(readings / wall),
            "messages_per_s": round(len(messages) / wall), "checkpoints": h["checkpoints"],
            "checkpoint_messages": checkpoint_messages, "state_db_bytes": ckpt_bytes,
            "checkpoint_seconds_total": round(cp_s, 2),
            "checkpoint_ms_mean": round(1000 * cp_s / max(1, h["checkpoints"]), 1),
            "accepted": h["accepted"], "log": str(edge.log_path)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m parkmon.edge_testing")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="readings/s through `parkmon edge` on the dev services")
    b.add_argument("--hours", type=float, default=24.0, help="simulated hours of Kalundborg")
    b.add_argument("--checkpoint-messages", type=int, default=80)
    args = ap.parse_args(argv)
    print(json.dumps(bench(args.hours, args.checkpoint_messages), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def credits_add_up(kpis: dict[PointKey, dict[str, Any]]) -> int:
    """Benefit sharing as stored in InfluxDB: for every (view, window) with a park `savings`
    field, the enterprises' `credited_savings` add up to it. Returns the number of windows
    checked; raises AssertionError naming the first window that does not add up."""
    park: dict[tuple[str, int], float] = {}
    ents: dict[tuple[str, int], float] = {}
    for (meas, tags, ts), fields in kpis.items():
        t = dict(tags)
        if meas != "kpi":
            continue
        if t["scope"] == "park" and "savings" in fields:
            park[(t["view"], ts)] = float(fields["savings"])
        elif t["scope"] == "enterprise" and "credited_savings" in fields:
            ents[(t["view"], ts)] = ents.get((t["view"], ts), 0.0) + float(fields["credited_savings"])
    for key, total in park.items():
        got = ents.get(key)
        assert got is not None and abs(got - total) <= 1e-6 * max(1.0, abs(total)), \
            f"window {key}: enterprises credited {got}, park savings {total}"
    return len(park)


def recount_messages(park: Any, messages: list[Any],
                     exclude: Collection[tuple[str, int]] = ()) -> dict[tuple[str, int], float]:
    """Expected quantity per (meter, minute window start) from the published readings: canonical
    value, once per (meter, seq); counters: increase over (previous reading, reading] (a drop is a
    roll-over at the register limit when the previous value was in its upper half, else a reset
    to zero), rates: trapezoid (quantity per hour x hours); attributed to the later reading's
    window. `exclude`: (meter, ts_ms) of readings left out (dead-lettered as late by the workers)."""
    seen: set[tuple[str, int]] = set()
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for msg in messages:
        for r in msg.readings or ():
            if (r.meter, r.seq) in seen or (r.meter, r.ts_ms) in exclude:
                continue
            seen.add((r.meter, r.seq))
            m = park.meter(r.meter)
            series[r.meter].append((r.ts_ms, to_canonical(r.value, r.unit, m.canonical_unit)))
    minute = 60_000
    out: dict[tuple[str, int], float] = {}
    for mid, pts in series.items():
        pts.sort()
        m = park.meter(mid)
        out.setdefault((mid, pts[0][0] - pts[0][0] % minute), 0.0)
        for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False):
            if m.kind == "counter":
                if v1 >= v0:
                    q = v1 - v0
                elif m.rollover and v0 >= m.rollover / 2:
                    q = m.rollover - v0 + v1
                else:
                    q = v1
            else:
                q = (v0 + v1) / 2 * (t1 - t0) / 3_600_000 if t1 - t0 <= 300_000 else 0.0
            key = (mid, t1 - t1 % minute)
            out[key] = out.get(key, 0.0) + q
    return out
