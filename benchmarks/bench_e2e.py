"""The whole scaled pipeline on a generated park, next to the raw MQTT ceiling, in the same run.

    .venv/bin/python benchmarks/bench_e2e.py                  # default size (see --help)
    .venv/bin/python benchmarks/bench_e2e.py --quick          # small smoke configuration (CI)
    .venv/bin/python benchmarks/bench_e2e.py --meters 10000 --enterprises 500

Every stage is its own process, as in production:

    parkmon simulate --(MQTT 5, QoS 1)--> Mosquitto (private, free port) --> parkmon gateway
      --> Kafka parkmon.<park>.readings --> parkmon streams worker (--engine faust | batch) --> InfluxDB
                                       \\-> parkmon detect --> Kafka alerts --> parkmon alerts
                                                --> signed webhook receiver (in this process)

Phases, for each streams engine (medians of --repeat runs, interleaved with the raw ceiling):

  * throughput: the simulator publishes a fixed set of readings as fast as it can (`--speed max`),
    once with one reading per message and once with --batch-size readings per message.
    raw ceiling = a plain paho subscriber (MQTT 5, QoS 1) counting the same publisher's messages
    on the same broker (readings/s between its first and last message); e2e = readings / (time from
    the first record in Kafka until the streams worker AND detect have committed all of them).
    Offsets of the streams worker move only after InfluxDB accepted the points, so "committed" is
    "written". Afterwards every window in InfluxDB is compared with a recount from the published
    readings (exact, no tolerance beyond float rounding).
  * live: the simulator publishes at a fixed offered rate (--live-rate readings/s, paced in event
    time) with a trip injected on one exchange after the detectors' 2 h warm-up (event time);
    measured: publish -> queryable in InfluxDB (readings of --sample-enterprises enterprises seen
    by an MQTT observer, their windows polled in InfluxDB every 0.25 s), window close -> stored
    (the worker's own stats), detection -> webhook delivered (Kafka timestamp of the detection
    event -> the receiver's clock), RSS and CPU of every process, consumer lag every second.
  * backlog: under the live load, the streams worker and detect are stopped for --backlog-s
    seconds (the issue's 10 minutes scaled down), then started again: catch-up rate (readings
    committed per second until the lag is back to a second of live load) as a multiple of the
    live rate, and the time to be current.
  * scale-out: two gateways on one shared MQTT subscription, two streams workers in one consumer
    group (the faster engine), throughput and exact recount as above.
  * profile: the stage with the highest CPU per reading in the batched run is run once more
    under pyinstrument (text profile next to the results file).

Results: JSON at benchmarks/results/e2e-<UTC date>.json (or --out), with the machine's load
(os.getloadavg) at every phase; a summary is printed.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import yaml  # noqa: E402
from confluent_kafka import Consumer, TopicPartition  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from parkmon.contracts import kafka_alerts_topic, kafka_readings_topic  # noqa: E402

MIN_MS = 60_000
WARMUP_EVENT_MS = 2 * 3_600_000  # the detectors' warm-up (720 samples at 10 s)
TRIP_AT_MS = WARMUP_EVENT_MS + 20 * MIN_MS
WARM_UNTIL_MS = TRIP_AT_MS - 10 * MIN_MS  # published at full speed before the live phase
PARTITIONS = 3
SECRET = "whsec_" + base64.b64encode(b"bench-e2e-webhook-secret-0123456").decode()
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Config:
    enterprises: int = 50
    meters: int = 1_000
    seed: int = 7
    single_readings: int = 10_000
    batched_readings: int = 60_000
    batch_size: int = 500
    repeat: int = 3
    live_rate: float = 1_500.0  # offered readings/s in the live phase (both engines keep up)
    backlog_s: float = 30.0  # the 10 minutes, scaled down
    engines: tuple[str, ...] = ("batch", "faust")
    scale_out: bool = True
    profile: bool = True
    sample_enterprises: int = 2
    alerts_group_wait_ms: int = 1_000
    live_engines: tuple[str, ...] | None = None  # engines with a live + backlog phase (None: all)
    scale_out_workloads: tuple[str, ...] = ("single", "batched")
    quick: bool = False


QUICK = Config(enterprises=20, meters=200, single_readings=3_000, batched_readings=20_000,
               batch_size=100, repeat=1, live_rate=3_000.0, backlog_s=5.0, profile=False,
               sample_enterprises=2, live_engines=("batch",), scale_out_workloads=("single",),
               quick=True)


# --------------------------------------------------------------------------- small utilities

def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(q * len(s)))], 4)


def median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def proc_sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds user+system, RSS bytes) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        return cpu, rss
    except (OSError, ValueError, IndexError):
        return None


def free_port() -> int:
    from tests.support.ingest import free_port as fp

    return fp()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARKMON_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return env


class Stage:
    """One pipeline process: `python [-m pyinstrument ...] -m apps.cli <args>`, log to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path,
                 profile_to: Path | None = None, script: str | None = None) -> None:
        self.name, self.args, self.env, self.log_path = name, args, env, log_path
        self.profile_to = profile_to
        self.script = script
        self.proc: subprocess.Popen[bytes] | None = None
        self.cpu0 = 0.0
        self.cpu_last = 0.0
        self.rss_max = 0

    def start(self) -> Stage:
        cmd = [sys.executable]
        if self.profile_to is not None:
            cmd += ["-m", "pyinstrument", "-o", str(self.profile_to), "-r", "text"]
        cmd += [self.script] if self.script else ["-m", "apps.cli"]
        cmd += self.args
        with open(self.log_path, "ab") as fh:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                         cwd=str(ROOT))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> None:
        if not self.alive():
            return
        s = proc_sample(self.pid)
        if s is not None:
            self.cpu_last = s[0]
            self.rss_max = max(self.rss_max, s[1])

    def mark(self) -> float:
        """CPU seconds so far (and remember them as the start of a measured interval)."""
        self.sample()
        self.cpu0 = self.cpu_last
        return self.cpu0

    def cpu_since_mark(self) -> float:
        self.sample()
        return self.cpu_last - self.cpu0

    def stop(self, timeout_s: float = 40.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.sample()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, n: int = 20) -> str:
        return f"--- {self.name} ({self.log_path})\n" + "\n".join(self.log_text().splitlines()[-n:])


# --------------------------------------------------------------------------- the park

@dataclass
class ParkSpec:
    data: dict[str, Any]
    trip_exchange: str
    base_rate: float  # readings/s the park emits in real time
    sample_enterprises: list[str]

    def write(self, work: Path, tag: str) -> tuple[Path, str]:
        """A copy with a fresh park id (own MQTT topics, Kafka topics, Influx tags)."""
        park_id = f"e2e{tag}{uuid.uuid4().hex[:8]}"
        d = copy.deepcopy(self.data)
        d["park"]["id"] = park_id
        path = work / f"{park_id}.yaml"
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        return path, park_id


def make_park(cfg: Config) -> ParkSpec:
    """The generator's park; the trip exchange's meters report every 10 s (the detectors' warm-up
    is 720 samples, 2 h at 10 s)."""
    from parkmon.park.generator import generate_park_data

    data = generate_park_data(cfg.enterprises, cfg.meters, seed=cfg.seed)
    x = data["exchanges"][0]
    involved = set(x["suppliers"]) | set(x["consumers"])
    for m in data["meters"]:
        if m["id"] in involved:
            m["period_s"] = 10
    base = sum(1.0 / m.get("period_s", 10) for m in data["meters"])
    sample = [e["id"] for e in data["enterprises"][: cfg.sample_enterprises]]
    return ParkSpec(data, x["id"], base, sample)


def expected(park_file: Path, seed: int, start_ms: int, duration_ms: int) -> tuple[list[Any], Any]:
    """The readings `parkmon simulate` publishes for these arguments (same Fleet, same options as
    its --no-resets), made canonical exactly as the gateway does; and the park."""
    from parkmon.park import load_park
    from simulators.fleet import Fleet, FleetOptions
    from tests.support.detect import canonical_readings

    park = load_park(park_file)
    fleet = Fleet(park, seed=seed, start_ms=start_ms, options=FleetOptions(counter_resets_per_day=0.0))
    sims = [r for b in fleet.batches(start_ms + duration_ms) for r in b]
    sims.extend(fleet.drain())
    now = int(time.time() * 1000)
    return canonical_readings(park, sims, lambda: now), park


def max_lateness_ms(readings: list[Any], batch: int) -> int:
    """Upper bound of how far behind the newest reading seen so far a reading arrives when the
    simulator fills per-enterprise batches of `batch` readings at full speed (for the grace)."""
    if batch <= 1:
        return 0
    by_ent: dict[str, int] = {}
    for r in readings:
        ent = r.meter.split(".")[0]
        by_ent[ent] = by_ent.get(ent, 0) + 1
    # one enterprise's batch spans `batch` of its readings: its event-time extent
    per_ent_rate: dict[str, list[int]] = {}
    for r in readings:
        per_ent_rate.setdefault(r.meter.split(".")[0], []).append(r.ts_ms)
    worst = 0
    for ts in per_ent_rate.values():
        ts.sort()
        if len(ts) > batch:
            worst = max(worst, max(ts[i + batch - 1] - ts[i] for i in range(0, len(ts) - batch + 1,
                                                                             max(1, batch // 4))))
        else:
            worst = max(worst, ts[-1] - ts[0])
    return worst


# --------------------------------------------------------------------------- Kafka progress

class Progress:
    """End offsets of the readings topic and committed offsets of the consumer groups."""

    def __init__(self, bootstrap: str, topic: str, groups: dict[str, str]) -> None:
        self.topic = topic
        self.consumers = {name: Consumer({"bootstrap.servers": bootstrap, "group.id": g,
                                          "enable.auto.commit": False})
                          for name, g in groups.items()}
        self.meta = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-meta-{uuid.uuid4().hex[:6]}"})
        self.tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

    def end(self) -> int:
        total = 0
        for tp in self.tps:
            try:
                _lo, hi = self.meta.get_watermark_offsets(tp, timeout=5)
            except Exception:  # noqa: BLE001 - topic not there yet
                return 0
            total += max(hi, 0)
        return total

    def committed(self, name: str) -> int:
        try:
            tps = self.consumers[name].committed(self.tps, timeout=5)
        except Exception:  # noqa: BLE001 - coordinator not ready yet
            return 0
        return sum(max(tp.offset, 0) for tp in tps)

    def snapshot(self) -> dict[str, int]:
        return {"end": self.end(), **{n: self.committed(n) for n in self.consumers}}

    def close(self) -> None:
        for c in [*self.consumers.values(), self.meta]:
            c.close()


# --------------------------------------------------------------------------- webhook receiver

class Receiver:
    """The operator's endpoint: verifies Standard Webhooks signatures, records the receive time."""

    def __init__(self) -> None:
        from standardwebhooks.webhooks import Webhook

        self.port = free_port()
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.bad_signatures = 0
        wh = Webhook(SECRET)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                t = time.time()
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    payload = wh.verify(body.decode(), {k.lower(): v for k, v in self.headers.items()})
                    outer.received.append((t, payload))
                except Exception:  # noqa: BLE001 - counted, answered 400
                    outer.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()

    def first_firing(self, park: str, exchange: str) -> float | None:
        for t, body in self.received:
            if body.get("park") != park:
                continue
            for a in body.get("alerts", []):
                if a.get("labels", {}).get("exchange") == exchange and a.get("state") == "firing":
                    return t
        return None

    def close(self) -> None:
        self.server.shutdown()


# --------------------------------------------------------------------------- the pipeline

@dataclass
class Services:
    mqtt_host: str
    mqtt_port: int
    bootstrap: str
    influx: Any


class Pipeline:
    """gateway(s), streams worker(s), detect and alerts for one park, each its own process."""

    def __init__(self, sv: Services, park_file: Path, park_id: str, engine: str, bucket: str,
                 work: Path, receiver: Receiver, *, gateways: int = 1, workers: int = 1,
                 grace_ms: int = 120_000, profile: dict[str, Path] | None = None,
                 group_wait_ms: int = 1_000) -> None:
        self.sv, self.park_file, self.park_id, self.engine = sv, park_file, park_id, engine
        self.work, self.bucket = work, bucket
        self.streams_group = f"bench-streams-{engine}-{park_id}"
        self.detect_group = f"bench-detect-{park_id}"
        profile = profile or {}
        env = base_env()
        self.gateways = []
        share = f"bench{park_id}" if gateways > 1 else None
        for i in range(gateways):
            genv = {**env, "PARKMON_MQTT_HOST": sv.mqtt_host, "PARKMON_MQTT_PORT": str(sv.mqtt_port),
                    "PARKMON_MQTT_CLIENT_ID": f"gw{i}-{park_id}", "PARKMON_KAFKA_BOOTSTRAP": sv.bootstrap,
                    "PARKMON_GATEWAY_LOG_LEVEL": "WARNING",
                    "PARKMON_GATEWAY_KAFKA_PARTITIONS": str(PARTITIONS)}
            if share:
                genv["PARKMON_MQTT_SHARE_GROUP"] = share
            self.gw_ports = getattr(self, "gw_ports", []) + [free_port()]
            self.gateways.append(Stage(f"gateway{i}" if gateways > 1 else "gateway",
                                       ["gateway", "--park", str(park_file), "--metrics-port",
                                        str(self.gw_ports[-1])], genv, work / f"gateway{i}-{park_id}.log",
                                       profile.get("gateway") if i == 0 else None))
        wenv = {**env, "PARKMON_INFLUX_TOKEN": sv.influx.token}
        self.workers = [Stage(f"streams{i}" if workers > 1 else "streams",
                              ["streams", "worker", "--park", str(park_file), "--bootstrap", sv.bootstrap,
                               "--influx-url", sv.influx.url, "--influx-org", sv.influx.org,
                               "--influx-bucket", bucket, "--app-id", self.streams_group,
                               "--engine", engine, "--partitions", str(PARTITIONS),
                               "--grace-ms", str(grace_ms), "--idle-close-ms", "3000",
                               "--data-dir", str(work / f"streams-data-{park_id}-{i}"),
                               "--loglevel", "info"],
                              wenv, work / f"streams{i}-{park_id}.log",
                              profile.get("streams") if i == 0 else None)
                        for i in range(workers)]
        denv = {**env, "PARKMON_KAFKA_BOOTSTRAP": sv.bootstrap, "PARKMON_DETECT_METRICS_PORT": "-1",
                "PARKMON_DETECT_GROUP": self.detect_group, "PARKMON_DETECT_IDLE_TICK_S": "0",
                "PARKMON_DETECT_CHECKPOINT": str(work / f"detect-{park_id}.ckpt"),
                "PARKMON_DETECT_CHECKPOINT_INTERVAL_S": "2", "PARKMON_DETECT_STATS_INTERVAL_S": "5"}
        self.detect = Stage("detect", ["detect", "--park", str(park_file)], denv,
                            work / f"detect-{park_id}.log", profile.get("detect"))
        aenv = {**env, "PARKMON_KAFKA_BOOTSTRAP": sv.bootstrap,
                "PARKMON_ALERTS_KAFKA_GROUP": f"bench-alerts-{park_id}",
                "PARKMON_ALERTS_ENDPOINTS": json.dumps(
                    [{"name": "ops", "url": f"http://127.0.0.1:{receiver.port}/hooks", "timeout_s": 5}]),
                "PARKMON_ALERTS_SECRET_OPS": SECRET, "PARKMON_ALERTS_ALLOW_LOOPBACK": "1",
                "PARKMON_ALERTS_GROUP_WAIT_MS": str(group_wait_ms),
                "PARKMON_ALERTS_GROUP_INTERVAL_MS": "2000", "PARKMON_ALERTS_BACKOFF_INITIAL_MS": "250"}
        self.alerts = Stage("alerts", ["alerts", "run", "--park", str(park_file), "--db",
                                       str(work / f"alerts-{park_id}.sqlite")], aenv,
                            work / f"alerts-{park_id}.log")

    @property
    def stages(self) -> list[Stage]:
        return [*self.gateways, *self.workers, self.detect, self.alerts]

    def start(self, timeout_s: float = 120.0) -> None:
        for g in self.gateways:
            g.start()
        self._wait(lambda: all(self._gw_healthy(i) for i in range(len(self.gateways))),
                   timeout_s, "gateway healthy")
        for w in self.workers:
            w.start()
        self.detect.start()
        self.alerts.start()
        self.wait_consumers_ready(timeout_s)

    def wait_consumers_ready(self, timeout_s: float, workers: list[Stage] | None = None,
                             detect: bool = True) -> None:
        ws = workers if workers is not None else self.workers

        def worker_ready(w: Stage) -> int:
            # batch engine: one line per assigned partition; Faust: "Worker: Ready" after the
            # assignment and table recovery (its partition lines come with the first reading)
            text = w.log_text()
            if "[^Worker]: Ready" in text:
                return PARTITIONS
            return len(re.findall(r"partition \d+: restored", text))

        def ready() -> bool:
            counts = [worker_ready(w) for w in ws]
            det = (not detect) or '"event": "started"' in self.detect.log_text()
            return min(counts) >= 1 and sum(counts) >= PARTITIONS and det

        self._wait(ready, timeout_s, "streams worker partitions assigned and detect started")

    def _gw_healthy(self, i: int) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.gw_ports[i]}/healthz", timeout=2) as r:
                return bool(json.loads(r.read()).get("status") == "ok")
        except (OSError, ValueError):
            return False

    def _wait(self, check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            dead = [s for s in self.stages if s.proc is not None and not s.alive()]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited while waiting for {what}:\n{dead[0].tail()}")
            time.sleep(0.25)
        raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}\n"
                           + "\n".join(s.tail(10) for s in self.stages))

    def sample(self) -> None:
        for s in self.stages:
            s.sample()

    def mark(self) -> None:
        for s in self.stages:
            s.mark()

    def stats(self, w: Stage) -> dict[str, Any]:
        lines = [ln for ln in w.log_text().splitlines() if "streams stats:" in ln]
        if not lines:
            return {}
        try:
            return dict(json.loads(lines[-1].split("streams stats:", 1)[1]))
        except ValueError:
            return {}

    def stop(self) -> dict[str, int | None]:
        codes = {}
        for s in reversed(self.stages):
            codes[s.name] = s.stop()
        return codes


def start_services(work: Path) -> tuple[Services, Any]:
    from parkmon import devservices

    broker = devservices.handle("mosquitto", data_dir=work / "mosquitto", port=free_port())
    broker.ensure()
    kafka = devservices.ensure("kafka", quiet=True)
    influx = devservices.ensure("influxdb", quiet=True)
    return Services(broker.host, broker.port, f"{kafka.host}:{kafka.port}", influx), broker


def simulator(sv: Services, park_file: Path, seed: int, start_ms: int, duration_ms: int,
              speed: str, batch: int, log_path: Path, scenario: Path | None = None) -> Stage:
    start = dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.UTC).isoformat()
    args = ["simulate", "--park", str(park_file), "--seed", str(seed), "--start", start,
            "--duration", f"{duration_ms}ms", "--speed", speed, "--batch", str(batch),
            "--qos", "1", "--no-resets", "--quiet", "--host", sv.mqtt_host, "--port", str(sv.mqtt_port),
            "--client-id", f"sim-{uuid.uuid4().hex[:8]}"]
    if scenario is not None:
        args += ["--scenario", str(scenario), "--labels", str(log_path.with_suffix(".labels.jsonl"))]
    return Stage("simulator", args, base_env(), log_path).start()


def published(sim: Stage) -> tuple[int, int]:
    m = re.search(r"published ([\d,]+) readings in ([\d,]+) messages", sim.log_text())
    if not m:
        raise RuntimeError(f"simulator did not report what it published:\n{sim.tail()}")
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))


# --------------------------------------------------------------------------- live publisher

def live_publisher(argv: list[str]) -> int:
    """The simulator for the live phase (own process): the park's Fleet and MqttPublisher, first
    the detectors' warm-up at full speed in small batches (`--warm-batch` readings of one
    enterprise per message), then, once `--go-file` exists, one reading per message paced at
    `--speed` (a fixed offered rate) until `--until-ms`, with the trip of `--scenario` in it."""
    from parkmon.park import load_park
    from simulators.fleet import Fleet, FleetOptions
    from simulators.publisher import MqttPublisher
    from simulators.scenarios import load_scenario

    ap = argparse.ArgumentParser(prog="bench_e2e.py live-publisher")
    for name in ("--park", "--scenario", "--go-file", "--host"):
        ap.add_argument(name, required=True)
    for name in ("--port", "--seed", "--start-ms", "--warm-until-ms", "--until-ms", "--warm-batch"):
        ap.add_argument(name, type=int, required=True)
    ap.add_argument("--speed", type=float, required=True)
    a = ap.parse_args(argv)
    park = load_park(Path(a.park))
    fleet = Fleet(park, seed=a.seed, start_ms=a.start_ms, scenario=load_scenario(a.scenario),
                  options=FleetOptions(counter_resets_per_day=0.0))
    pub = MqttPublisher(park.id, a.host, a.port, qos=1, batch=a.warm_batch,
                        client_id=f"bench-live-{os.getpid()}")
    pub.connect()
    t = time.monotonic()
    pub.run(fleet.batches(a.warm_until_ms), speed=float("inf"))
    pub.flush()
    pub.wait_acked(600)
    print(f"warm-up published {pub.stats.readings} readings in {time.monotonic() - t:.1f} s",
          flush=True)
    go = Path(a.go_file)
    while not go.exists():
        time.sleep(0.05)
    pub.batch = 1
    n0 = pub.stats.readings
    t = time.monotonic()
    print(f"live from {t:.3f}", flush=True)
    pub.run(fleet.batches(a.until_ms), speed=a.speed)
    st = pub.close()
    print(f"live published {st.readings - n0} readings in {time.monotonic() - t:.1f} s", flush=True)
    return 0


# --------------------------------------------------------------------------- raw ceiling

def raw_ceiling(sv: Services, spec: ParkSpec, work: Path, cfg: Config, batch: int,
                start_ms: int, duration_ms: int) -> dict[str, Any]:
    """A plain paho subscriber counting QoS 1 messages of the same publisher on the same broker."""
    park_file, park_id = spec.write(work, "raw")
    state: dict[str, Any] = {"count": 0, "first": None, "last": None}
    subscribed = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        t = time.perf_counter()
        state["count"] += 1
        if state["first"] is None:
            state["first"] = t
        state["last"] = t

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{park_id}", protocol=mqtt.MQTTv5)
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_connect = lambda cl, *a: cl.subscribe(f"parkmon/{park_id}/+/readings", qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 4000  # the gateway's default flow window
    c.connect(sv.mqtt_host, sv.mqtt_port, clean_start=True, properties=props)
    c.loop_start()
    assert subscribed.wait(10), "raw subscriber: no SUBACK"
    sim = simulator(sv, park_file, cfg.seed, start_ms, duration_ms, "max", batch,
                    work / f"sim-raw-{park_id}.log")
    assert sim.proc is not None
    sim.proc.wait(900)
    n_readings, n_messages = published(sim)
    deadline = time.monotonic() + 120
    while state["count"] < n_messages and time.monotonic() < deadline:
        time.sleep(0.05)
    c.disconnect()
    c.loop_stop()
    if state["count"] < n_messages:
        raise RuntimeError(f"raw subscriber got {state['count']} of {n_messages} messages")
    secs = state["last"] - state["first"]
    return {"readings": n_readings, "messages": n_messages, "seconds": round(secs, 3),
            "readings_per_s": n_readings / secs if secs > 0 else None}


# --------------------------------------------------------------------------- recount

def check_windows(sv: Services, bucket: str, park_id: str, park: Any, readings: list[Any],
                  timeout_s: float) -> dict[str, Any]:
    """Every `meter_window` quantity in InfluxDB against a recount from the published readings."""
    from parkmon.contracts import Reading, kafka_streams_deadletter_topic
    from tests.support.ingest import read_topic
    from tests.support.streams import query_windows, recount

    # readings the workers dead-lettered as late beyond the grace period are accounted for, not
    # windowed: with two gateways on one shared subscription and the simulator at full speed,
    # a few seconds of skew between the gateways are minutes of event time (reported, not hidden)
    late: set[tuple[str, int]] = set()
    reasons: dict[str, int] = {}
    for _k, v in read_topic(sv.bootstrap, kafka_streams_deadletter_topic(park_id), timeout_s=10):
        d = json.loads(v)
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
        if d["reason"] == "late_beyond_grace" and "payload" in d:
            r = Reading.from_json(d["payload"].encode())
            late.add((r.meter, r.ts_ms))
    kinds = {m.id: m.kind for m in park.meters}
    exp = recount([(r.meter, r.ts_ms, r.value) for r in readings
                   if (r.meter, r.ts_ms) not in late], kinds, MIN_MS)
    deadline = time.monotonic() + timeout_s
    got: dict[tuple[str, int], float] = {}
    while time.monotonic() < deadline:
        got = query_windows(sv.influx.url, sv.influx.token, sv.influx.org, bucket, park_id)
        if set(got) >= set(exp):
            break
        time.sleep(0.5)
    missing = [k for k in exp if k not in got]
    extra = [k for k in got if k not in exp]
    wrong = [k for k, v in exp.items() if k in got and abs(got[k] - v) > 1e-9 * max(1.0, abs(v))]
    return {"windows_expected": len(exp), "windows_in_influx": len(got), "missing": len(missing),
            "streams_dead_letters": reasons, "late_readings_excluded": len(late),
            "extra": len(extra), "mismatched": len(wrong),
            "examples": [str(x) for x in (missing[:3] + extra[:3] + wrong[:3])],
            "exact": not missing and not extra and not wrong}


# --------------------------------------------------------------------------- throughput run

def e2e_throughput(sv: Services, spec: ParkSpec, work: Path, cfg: Config, receiver: Receiver,
                   engine: str, batch: int, start_ms: int, duration_ms: int, *,
                   gateways: int = 1, workers: int = 1,
                   profile: dict[str, Path] | None = None, recount: bool = True) -> dict[str, Any]:
    park_file, park_id = spec.write(work, engine[0])
    readings, park = expected(park_file, cfg.seed, start_ms, duration_ms)
    n = len(readings)
    grace_ms = max(120_000, max_lateness_ms(readings, batch) + 60_000)
    bucket = sv.influx.create_bucket(f"bench-{park_id}")
    pipe = Pipeline(sv, park_file, park_id, engine, bucket["name"], work, receiver,
                    gateways=gateways, workers=workers, grace_ms=grace_ms, profile=profile,
                    group_wait_ms=cfg.alerts_group_wait_ms)
    prog = Progress(sv.bootstrap, kafka_readings_topic(park_id),
                    {"streams": pipe.streams_group, "detect": pipe.detect_group})
    res: dict[str, Any] = {"engine": engine, "batch": batch, "readings": n, "gateways": gateways,
                           "workers": workers, "grace_ms": grace_ms, "load_before": load()}
    phase: dict[str, float] = {}
    t_phase = time.monotonic()
    try:
        pipe.start()
        phase["start_pipeline"] = round(time.monotonic() - t_phase, 1)
        pipe.mark()
        sim = simulator(sv, park_file, cfg.seed, start_ms, duration_ms, "max", batch,
                        work / f"sim-{park_id}.log")
        t_first = t_gw = t_streams = t_detect = None
        deadline = time.monotonic() + max(300.0, n / 200.0)
        lag: list[tuple[float, int, int, int]] = []
        t_start = time.perf_counter()
        while time.monotonic() < deadline:
            s = prog.snapshot()
            t = time.perf_counter()
            pipe.sample()
            lag.append((round(t - t_start, 2), s["end"], s["streams"], s["detect"]))
            if s["end"] > 0 and t_first is None:
                t_first = t
            if s["end"] >= n and t_gw is None:
                t_gw = t
            if s["streams"] >= n and t_streams is None:
                t_streams = t
            if s["detect"] >= n and t_detect is None:
                t_detect = t
            if t_streams and t_detect:
                break
            dead = [st for st in pipe.stages if not st.alive()]
            if dead:
                raise RuntimeError(f"{dead[0].name} died:\n{dead[0].tail()}")
            time.sleep(0.2)
        if not (t_first and t_streams and t_detect and t_gw):
            raise RuntimeError(f"{engine}/batch {batch}: not done: {prog.snapshot()} of {n}\n"
                               + "\n".join(st.tail(8) for st in pipe.stages))
        cpu = {st.name: st.cpu_since_mark() for st in pipe.stages}
        t_end = max(t_streams, t_detect)
        res.update(
            e2e_readings_per_s=n / (t_end - t_first),
            gateway_readings_per_s=n / (t_gw - t_first),
            streams_readings_per_s=n / (t_streams - t_first),
            detect_readings_per_s=n / (t_detect - t_first),
            seconds=round(t_end - t_first, 2),
            cpu_us_per_reading={k: round(v / n * 1e6, 2) for k, v in cpu.items()},
            lag=lag[:: max(1, len(lag) // 100)],
        )
        if sim.proc is not None:
            sim.proc.wait(120)
        res["published_readings"], res["published_messages"] = published(sim)
        phase["publish_to_all_committed"] = round(time.monotonic() - t_phase - phase["start_pipeline"], 1)
        if recount:
            res["recount"] = check_windows(sv, bucket["name"], park_id, park, readings,
                                           timeout_s=60 + grace_ms / 1000)
        for w in pipe.workers:
            st = pipe.stats(w)
            res.setdefault("close_to_stored_p50_s", st.get("close_to_stored_p50_s"))
            res.setdefault("close_to_stored_p99_s", st.get("close_to_stored_p99_s"))
        res["rss_mb"] = {st.name: round(st.rss_max / 2**20, 1) for st in pipe.stages}
        phase["until_recounted"] = round(time.monotonic() - t_phase, 1)
    finally:
        res["exit_codes"] = pipe.stop()
        prog.close()
        sv.influx.delete_bucket(bucket["id"])
        res["load_after"] = load()
        phase["total"] = round(time.monotonic() - t_phase, 1)
        res["phase_s"] = phase
    return res


# --------------------------------------------------------------------------- live + backlog

class Observer:
    """Records when each reading of the sample enterprises crosses the broker (QoS 0 observer)."""

    def __init__(self, sv: Services, park_id: str, enterprises: list[str]) -> None:
        self.seen: dict[tuple[str, int], float] = {}
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"obs-{park_id}",
                        protocol=mqtt.MQTTv5)
        ready = threading.Event()

        def on_connect(cl: Any, *a: Any) -> None:
            cl.subscribe([(f"parkmon/{park_id}/{e}/readings", 0) for e in enterprises])

        def on_message(cl: Any, userdata: Any, msg: Any) -> None:
            t = time.time()
            try:
                body = json.loads(msg.payload)
            except ValueError:
                return
            for r in body.get("readings", [body]):
                if "meter" in r and "ts_ms" in r:
                    self.seen.setdefault((r["meter"], int(r["ts_ms"])), t)

        c.on_connect = on_connect
        c.on_subscribe = lambda *a: ready.set()
        c.on_message = on_message
        c.connect(sv.mqtt_host, sv.mqtt_port)
        c.loop_start()
        ready.wait(10)
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class WindowPoller:
    """Polls InfluxDB for the sample enterprises' windows; first time each (meter, start) shows."""

    def __init__(self, sv: Services, bucket: str, park_id: str, enterprises: list[str]) -> None:
        from influxdb_client import InfluxDBClient

        self.first_seen: dict[tuple[str, int], float] = {}
        regex = "|".join(re.escape(e) for e in enterprises)
        self.flux = f'''
from(bucket: "{bucket}")
  |> range(start: 0)
  |> filter(fn: (r) => r._measurement == "meter_window" and r.park == "{park_id}"
                       and r._field == "quantity" and r.meter =~ /^({regex})\\./)
  |> keep(columns: ["_time", "meter"])
'''
        self.client = InfluxDBClient(url=sv.influx.url, token=sv.influx.token, org=sv.influx.org,
                                     timeout=30_000)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        api = self.client.query_api()
        while not self.stop_event.is_set():
            try:
                tables = api.query(self.flux)
                t = time.time()
                for tb in tables:
                    for r in tb.records:
                        key = (r.values["meter"], int(r.get_time().timestamp() * 1000))
                        self.first_seen.setdefault(key, t)
            except Exception:  # noqa: BLE001 - InfluxDB busy: try again
                pass
            self.stop_event.wait(0.25)

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        self.client.close()


def publish_to_queryable(obs: Observer, poller: WindowPoller, until_wall: float) -> dict[str, Any]:
    """Per window of the sample: first seen in InfluxDB minus the broker time of its last reading
    (only windows whose last reading crossed before `until_wall`, i.e. before the backlog)."""
    last_in_window: dict[tuple[str, int], float] = {}
    for (meter, ts), t in obs.seen.items():
        key = (meter, ts - ts % MIN_MS)
        last_in_window[key] = max(last_in_window.get(key, 0.0), t)
    lat = [poller.first_seen[k] - t for k, t in last_in_window.items()
           if k in poller.first_seen and t < until_wall and poller.first_seen[k] < until_wall]
    return {"windows": len(lat), "p50_s": pct(lat, 0.5), "p99_s": pct(lat, 0.99),
            "poll_interval_s": 0.25}


def first_detection_ts(bootstrap: str, park_id: str, exchange: str) -> float | None:
    """Wall time (Kafka CreateTime of detect's producer) of the first event for `exchange`."""
    from alerts.model import DetectionEvent

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-read-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.subscribe([kafka_alerts_topic(park_id)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error() is not None or m.value() is None:
                    continue
                ev = DetectionEvent.from_json(m.value())
                if ev.exchange_id == exchange and ev.kind.value in ("supply_drop", "supply_decline"):
                    return float(m.timestamp()[1]) / 1000.0
        return None
    finally:
        c.close()


def live_and_backlog(sv: Services, spec: ParkSpec, work: Path, cfg: Config, receiver: Receiver,
                     engine: str) -> dict[str, Any]:
    park_file, park_id = spec.write(work, "l" + engine[0])
    scenario = work / f"trip-{park_id}.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "bench_trip", "duration": "1d", "seed": cfg.seed,
        "events": [{"kind": "trip", "exchange": spec.trip_exchange, "at": f"{TRIP_AT_MS}ms",
                    "duration": "6h"}]}))
    speed = cfg.live_rate / spec.base_rate
    detect_budget_s = 60.0
    catchup_budget_s = 2 * cfg.backlog_s + 30
    live_wall_s = (TRIP_AT_MS - WARM_UNTIL_MS) / 1000 / speed + detect_budget_s + cfg.backlog_s \
        + catchup_budget_s + 10
    duration_ms = WARM_UNTIL_MS + int(live_wall_s * speed * 1000)
    now = int(time.time() * 1000)
    start_ms = (now - duration_ms - 5 * MIN_MS) // MIN_MS * MIN_MS
    go_file = work / f"go-{park_id}"
    bucket = sv.influx.create_bucket(f"bench-{park_id}")
    pipe = Pipeline(sv, park_file, park_id, engine, bucket["name"], work, receiver,
                    group_wait_ms=cfg.alerts_group_wait_ms)
    prog = Progress(sv.bootstrap, kafka_readings_topic(park_id),
                    {"streams": pipe.streams_group, "detect": pipe.detect_group})
    res: dict[str, Any] = {"engine": engine, "offered_readings_per_s": cfg.live_rate,
                           "speed": round(speed, 2), "trip_exchange": spec.trip_exchange,
                           "trip_at_event_ms": TRIP_AT_MS, "alerts_group_wait_ms": cfg.alerts_group_wait_ms,
                           "load_before": load()}
    lag: list[dict[str, Any]] = []
    obs = poller = None
    try:
        pipe.start()
        sim = Stage("simulator", ["live-publisher", "--park", str(park_file), "--scenario", str(scenario),
                                  "--go-file", str(go_file), "--host", sv.mqtt_host,
                                  "--port", str(sv.mqtt_port), "--seed", str(cfg.seed),
                                  "--start-ms", str(start_ms), "--warm-until-ms", str(start_ms + WARM_UNTIL_MS),
                                  "--until-ms", str(start_ms + duration_ms), "--warm-batch", "20",
                                  "--speed", str(speed)],
                    base_env(), work / f"sim-{park_id}.log", script=__file__).start()
        # 0. the detectors' warm-up (2 h of event time) at full speed, drained by every stage
        t_w = time.time()
        deadline = t_w + 900
        while time.time() < deadline:
            snap = prog.snapshot()
            if "warm-up published" in sim.log_text() and snap["end"] > 0 \
                    and snap["streams"] >= snap["end"] and snap["detect"] >= snap["end"]:
                break
            if not sim.alive():
                raise RuntimeError(f"live publisher died:\n{sim.tail()}")
            time.sleep(0.5)
        else:
            raise RuntimeError(f"warm-up not drained in 900 s: {prog.snapshot()}")
        res["warmup"] = {"readings": snap["end"], "seconds": round(time.time() - t_w, 1),
                         "drain_readings_per_s": round(snap["end"] / (time.time() - t_w), 1),
                         "event_ms": WARM_UNTIL_MS}
        log(f"  {engine}: warm-up drained: {res['warmup']}")
        obs = Observer(sv, park_id, spec.sample_enterprises)
        poller = WindowPoller(sv, bucket["name"], park_id, spec.sample_enterprises)
        pipe.mark()
        sim.mark()
        base_end = snap["end"]
        go_file.touch()
        t0 = time.time()


        def tick(phase: str) -> dict[str, Any]:
            s = prog.snapshot()
            pipe.sample()
            sim.sample()
            row = {"t_s": round(time.time() - t0, 1), "phase": phase, "end": s["end"],
                   "streams_lag": s["end"] - s["streams"], "detect_lag": s["end"] - s["detect"],
                   "streams_committed": s["streams"], "detect_committed": s["detect"]}
            lag.append(row)
            return row

        # 1. live until the trip's webhook arrives
        t_trip_deadline = t0 + (TRIP_AT_MS - WARM_UNTIL_MS) / 1000 / speed + detect_budget_s
        t_hook = None
        while time.time() < t_trip_deadline:
            tick("live")
            t_hook = receiver.first_firing(park_id, spec.trip_exchange)
            if t_hook is not None:
                break
            for st in pipe.stages:
                if not st.alive():
                    raise RuntimeError(f"{st.name} died:\n{st.tail()}")
            time.sleep(1.0)
        t_live_end = time.time()
        live_secs = t_live_end - t0
        live_row = lag[-1]
        cpu = {st.name: st.cpu_since_mark() for st in pipe.stages}
        live_readings = live_row["end"] - base_end
        res["live"] = {
            "seconds": round(live_secs, 1),
            "achieved_readings_per_s": round(live_readings / live_secs, 1),
            "cpu_us_per_reading": {k: round(v / max(1, live_readings) * 1e6, 2) for k, v in cpu.items()},
            "simulator_cpu_us_per_reading": round(sim.cpu_since_mark() / max(1, live_readings) * 1e6, 2),
            "rss_mb": {st.name: round(st.rss_max / 2**20, 1) for st in pipe.stages},
            "streams_lag_at_end": live_row["streams_lag"], "detect_lag_at_end": live_row["detect_lag"],
        }
        det_ts = first_detection_ts(sv.bootstrap, park_id, spec.trip_exchange)
        res["trip"] = {"webhook_received": t_hook is not None,
                       "detection_to_webhook_s": round(t_hook - det_ts, 3) if (t_hook and det_ts) else None,
                       "bad_signatures": receiver.bad_signatures}
        res["publish_to_queryable"] = publish_to_queryable(obs, poller, t_live_end)

        # 2. backlog: stop the streams worker and detect under live load
        log(f"  {engine}: backlog: stopping streams + detect for {cfg.backlog_s:.0f} s")
        for w in pipe.workers:
            w.stop()
        pipe.detect.stop()
        t_b = time.time()
        while time.time() < t_b + cfg.backlog_s:
            tick("stopped")
            time.sleep(1.0)
        rate_at_stop = (lag[-1]["end"] - live_row["end"]) / max(1e-9, time.time() - t_live_end)
        for w in pipe.workers:
            w.start()
        pipe.detect.start()
        t_restart = time.time()
        start_row = tick("restarted")
        backlog = start_row["streams_lag"]
        current = max(1000.0, cfg.live_rate * 1.0)  # within one second of live load
        t_cur_s = t_cur_d = None
        deadline = t_restart + catchup_budget_s + 60
        while time.time() < deadline:
            row = tick("catch-up")
            if t_cur_s is None and row["streams_lag"] <= current:
                t_cur_s, rs = time.time(), row
            if t_cur_d is None and row["detect_lag"] <= current:
                t_cur_d, rd = time.time(), row
            if t_cur_s and t_cur_d:
                break
            time.sleep(0.5)
        sim_alive = sim.alive()

        def catch(t_cur: float | None, row: dict[str, Any] | None, key: str) -> dict[str, Any]:
            if t_cur is None or row is None:
                return {"time_to_current_s": None, "catchup_readings_per_s": None, "multiple_of_live": None}
            rate = (row[key] - start_row[key]) / (t_cur - t_restart)
            return {"time_to_current_s": round(t_cur - t_restart, 1),
                    "catchup_readings_per_s": round(rate, 1),
                    "multiple_of_live": round(rate / max(1.0, rate_at_stop), 2)}

        res["backlog"] = {"stopped_s": cfg.backlog_s, "backlog_readings": backlog,
                          "live_rate_during_stop": round(rate_at_stop, 1),
                          "streams": catch(t_cur_s, rs if t_cur_s else None, "streams_committed"),
                          "detect": catch(t_cur_d, rd if t_cur_d else None, "detect_committed"),
                          "publisher_still_running": sim_alive,
                          "issue_target_stop_s": 600}
        res["rss_mb"] = {s.name: round(s.rss_max / 2**20, 1) for s in pipe.stages}
        time.sleep(11)  # one more stats line of the worker (every 10 s)
        st_ = pipe.stats(pipe.workers[0])
        # the restarted worker's own figures: the live minutes after the restart and the catch-up
        res["window_close_to_stored"] = {"p50_s": st_.get("close_to_stored_p50_s"),
                                         "p99_s": st_.get("close_to_stored_p99_s"),
                                         "windows_written": st_.get("windows_written"),
                                         "covers": "restarted worker: catch-up + live"}
        sim.stop()
    finally:
        if obs is not None:
            obs.close()
        if poller is not None:
            poller.close()
        res["exit_codes"] = pipe.stop()
        prog.close()
        sv.influx.delete_bucket(bucket["id"])
        res["lag"] = lag[:: max(1, len(lag) // 200)]
        res["load_after"] = load()
    return res


# --------------------------------------------------------------------------- main

def workload(spec: ParkSpec, readings: int) -> tuple[int, int]:
    """(start_ms, duration_ms) of event time giving about `readings` readings, in the past."""
    duration_ms = int(readings / spec.base_rate * 1000)
    now = int(time.time() * 1000)
    start_ms = (now - duration_ms - 10 * MIN_MS) // MIN_MS * MIN_MS
    return start_ms, duration_ms


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for engine, er in results["engines"].items():
        e: dict[str, Any] = {}
        for wl, runs in er["throughput"].items():
            raw = median([r["raw"]["readings_per_s"] for r in runs])
            e2e = median([r["e2e"]["e2e_readings_per_s"] for r in runs])
            e[wl] = {"raw_ceiling_readings_per_s": raw, "e2e_readings_per_s": e2e,
                     "ratio": (e2e / raw) if raw and e2e else None, "runs": len(runs),
                     "recount_exact": all(r["e2e"].get("recount", {}).get("exact") for r in runs),
                     "streams_readings_per_s": median([r["e2e"]["streams_readings_per_s"] for r in runs]),
                     "gateway_readings_per_s": median([r["e2e"]["gateway_readings_per_s"] for r in runs]),
                     "detect_readings_per_s": median([r["e2e"]["detect_readings_per_s"] for r in runs]),
                     "cpu_us_per_reading": {k: median([r["e2e"]["cpu_us_per_reading"][k] for r in runs])
                                            for k in runs[0]["e2e"]["cpu_us_per_reading"]}}
        lv = er.get("live")
        if lv:
            e["live"] = {"publish_to_queryable": lv.get("publish_to_queryable"),
                         "window_close_to_stored": lv.get("window_close_to_stored"),
                         "trip": lv.get("trip"), "backlog": lv.get("backlog"), "rss_mb": lv.get("rss_mb")}
        out[engine] = e
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Config()
    ap.add_argument("--quick", action="store_true", help="small configuration (CI smoke test)")
    ap.add_argument("--enterprises", type=int)
    ap.add_argument("--meters", type=int)
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--single-readings", type=int)
    ap.add_argument("--batched-readings", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--live-rate", type=float, help=f"offered readings/s in the live phase ({d.live_rate:g})")
    ap.add_argument("--backlog-s", type=float, help=f"seconds the worker + detect are stopped ({d.backlog_s:g}; issue: 600)")
    ap.add_argument("--engines", default=None, help="comma list of streams engines (batch,faust)")
    ap.add_argument("--no-scale-out", action="store_true")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/e2e-<date>.json)")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else d
    over = {k: getattr(args, k) for k in ("enterprises", "meters", "repeat", "single_readings",
                                          "batched_readings", "batch_size", "live_rate", "backlog_s", "seed")
            if getattr(args, k) is not None}
    if args.engines:
        over["engines"] = tuple(x.strip() for x in args.engines.split(",") if x.strip())
        bad = set(over["engines"]) - {"batch", "faust"}
        if bad:
            ap.error(f"--engines: unknown engine(s) {sorted(bad)}; expected batch and/or faust")
    if args.no_scale_out:
        over["scale_out"] = False
    if args.no_profile:
        over["profile"] = False
    cfg = replace(cfg, **over)
    if cfg.meters < 4 * cfg.enterprises:
        ap.error(f"--meters must be at least 4 per enterprise ({4 * cfg.enterprises} for "
                 f"{cfg.enterprises} enterprises), got {cfg.meters}")
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out = args.out or ROOT / "benchmarks" / "results" / f"e2e-{date}{'-quick' if cfg.quick else ''}.json"
    t_bench = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    log(f"bench_e2e: {cfg.enterprises} enterprises x {cfg.meters} meters, engines {cfg.engines}, "
        f"repeat {cfg.repeat}, work dir {work}, load {load()}")
    sv, broker = start_services(work)
    receiver = Receiver()
    spec = make_park(cfg)
    results: dict[str, Any] = {
        "benchmark": "bench_e2e", "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {**asdict(cfg), "engines": list(cfg.engines)},
        "machine": {"cpus": os.cpu_count(), "load_at_start": load(),
                    "python": sys.version.split()[0]},
        "park": {"enterprises": cfg.enterprises, "meters": cfg.meters, "exchanges": len(spec.data["exchanges"]),
                 "base_readings_per_s_real_time": round(spec.base_rate, 2), "trip_exchange": spec.trip_exchange},
        "engines": {}, "profiles": {}, "notes": [],
    }
    try:
        workloads = {"single": (1, cfg.single_readings), f"batch{cfg.batch_size}": (cfg.batch_size, cfg.batched_readings)}
        for engine in cfg.engines:
            er: dict[str, Any] = {"throughput": {}}
            for wl, (batch, n) in workloads.items():
                runs = []
                for rep in range(cfg.repeat):
                    start_ms, duration_ms = workload(spec, n)
                    raw = raw_ceiling(sv, spec, work, cfg, batch, start_ms, duration_ms)
                    e2e = e2e_throughput(sv, spec, work, cfg, receiver, engine, batch, start_ms, duration_ms)
                    runs.append({"raw": raw, "e2e": e2e})
                    rc = e2e.get("recount", {})
                    log(f"  {engine} {wl} run {rep + 1}: raw {raw['readings_per_s']:,.0f} r/s, e2e "
                        f"{e2e['e2e_readings_per_s']:,.0f} r/s (ratio {e2e['e2e_readings_per_s'] / raw['readings_per_s']:.2f}; "
                        f"gateway {e2e['gateway_readings_per_s']:,.0f}, streams {e2e['streams_readings_per_s']:,.0f}, "
                        f"detect {e2e['detect_readings_per_s']:,.0f}); recount exact={rc.get('exact')} "
                        f"({rc.get('windows_expected')} windows); phases {e2e['phase_s']} s; load {load()}")
                er["throughput"][wl] = runs
            if cfg.live_engines is None or engine in cfg.live_engines:
                log(f"  {engine}: live phase at {cfg.live_rate:,.0f} readings/s offered")
                er["live"] = live_and_backlog(sv, spec, work, cfg, receiver, engine)
                lv = er["live"]
                log(f"  {engine}: live: publish->queryable {lv.get('publish_to_queryable')}, close->stored "
                    f"{lv.get('window_close_to_stored')}, trip {lv.get('trip')}, backlog {lv.get('backlog')}")
            results["engines"][engine] = er
            results["summary"] = summarize(results)
            write(out, results)
        summ = summarize(results)
        wl_b = f"batch{cfg.batch_size}"
        rates = {e: summ[e][wl_b]["e2e_readings_per_s"] for e in summ}
        faster = max(rates, key=lambda e: rates[e] or 0)
        results["faster_engine"] = {"engine": faster, "batched_e2e_readings_per_s": rates,
                                    "single_e2e_readings_per_s": {e: summ[e]["single"]["e2e_readings_per_s"] for e in summ},
                                    "guarantees": "both engines: at-least-once, offsets committed only "
                                                  "after InfluxDB accepted, idempotent points; same grace "
                                                  "and idle close in this run"}
        if cfg.scale_out:
            so: dict[str, Any] = {"engine": faster}
            for wl, (batch, n) in workloads.items():
                if ("single" if batch == 1 else "batched") not in cfg.scale_out_workloads:
                    continue
                start_ms, duration_ms = workload(spec, n)
                so[wl] = e2e_throughput(sv, spec, work, cfg, receiver, faster, batch, start_ms,
                                        duration_ms, gateways=2, workers=2)
                log(f"  scale-out {wl}: e2e {so[wl]['e2e_readings_per_s']:,.0f} r/s, gateways "
                    f"{so[wl]['gateway_readings_per_s']:,.0f}, recount exact={so[wl]['recount']['exact']}")
            results["scale_out"] = so
            write(out, results)
        if cfg.profile:
            b = results["engines"][faster]["throughput"][wl_b][0]["e2e"]["cpu_us_per_reading"]
            stages = {k: v for k, v in b.items() if k in ("gateway", "streams", "detect")}
            slow = max(stages, key=lambda k: stages[k])
            prof = out.with_name(out.stem + f"-profile-{slow}.txt")
            start_ms, duration_ms = workload(spec, cfg.batched_readings)
            e2e_throughput(sv, spec, work, cfg, receiver, faster, cfg.batch_size, start_ms, duration_ms,
                           profile={slow: prof}, recount=False)
            results["profiles"] = {"stage": slow, "engine": faster, "workload": wl_b,
                                   "cpu_us_per_reading": stages, "file": str(prof.relative_to(ROOT))
                                   if prof.is_relative_to(ROOT) else str(prof)}
            log(f"profile of the slowest stage ({slow}): {prof}")
        results["summary"] = summarize(results)
        results["machine"]["load_at_end"] = load()
        results["seconds"] = round(time.monotonic() - t_bench, 1)
        write(out, results)
        print_summary(results)
        log(f"results: {out}")
    finally:
        receiver.close()
        if broker.started_here:
            broker.stop()
    return 0


def write(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    tmp.replace(out)


def print_summary(results: dict[str, Any]) -> None:
    summ = results["summary"]
    print()
    print(f"{'engine':<6} {'workload':<10} {'raw r/s':>10} {'e2e r/s':>10} {'ratio':>6} "
          f"{'gateway':>9} {'streams':>9} {'detect':>9}  recount")
    for engine, e in summ.items():
        for wl, v in e.items():
            if wl == "live":
                continue
            print(f"{engine:<6} {wl:<10} {v['raw_ceiling_readings_per_s'] or 0:>10,.0f} "
                  f"{v['e2e_readings_per_s'] or 0:>10,.0f} {v['ratio'] or 0:>6.2f} "
                  f"{v['gateway_readings_per_s'] or 0:>9,.0f} {v['streams_readings_per_s'] or 0:>9,.0f} "
                  f"{v['detect_readings_per_s'] or 0:>9,.0f}  {'exact' if v['recount_exact'] else 'MISMATCH'}")
            print(f"{'':<17} CPU us/reading: {v['cpu_us_per_reading']}")
    for engine, e in summ.items():
        lv = e.get("live") or {}
        print(f"{engine}: publish->queryable {lv.get('publish_to_queryable')}")
        print(f"{engine}: window close->stored {lv.get('window_close_to_stored')}")
        print(f"{engine}: trip {lv.get('trip')}")
        print(f"{engine}: backlog {lv.get('backlog')}")
        print(f"{engine}: RSS MB {lv.get('rss_mb')}")
    if "faster_engine" in results:
        print(f"faster engine: {results['faster_engine']}")
    so = results.get("scale_out")
    if so:
        for wl, v in so.items():
            if isinstance(v, dict):
                print(f"scale-out ({so['engine']}, 2 gateways + 2 workers) {wl}: e2e "
                      f"{v['e2e_readings_per_s']:,.0f} r/s, recount {v['recount']}")
    print(f"load: start {results['machine']['load_at_start']}, end {results['machine'].get('load_at_end')}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["live-publisher"]:
        raise SystemExit(live_publisher(sys.argv[2:]))
    raise SystemExit(main())
