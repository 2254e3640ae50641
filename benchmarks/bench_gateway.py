"""Gateway throughput next to the raw MQTT ceiling, measured in the same run.

    .venv/bin/python benchmarks/bench_gateway.py [--messages 30000] [--batches 200]
        [--batch-size 500] [--repeat 3] [--profile DIR]

Method (backlog drain, so the consumer side is measured, not the publisher):
  * a private Mosquitto (same config as the dev service) on a free port; Kafka = the dev service;
  * for each workload, the same publisher publishes the same payloads (QoS 1) while the consumer
    is offline, into the consumer's persistent session;
  * raw ceiling: a plain paho subscriber (MQTT 5, QoS 1, automatic acks, counts messages) connects
    and drains the queue: readings/s between the first and the last message;
  * gateway: `parkmon gateway` (own process) connects and drains the same queue: readings/s
    between the first and the last record appearing in Kafka (end offsets polled every 50 ms),
    i.e. validated, normalised, deduplicated, produced with acks=all and MQTT-acked.
  Medians of `--repeat` runs are printed, with the ratio gateway / raw.
  `--profile DIR` runs one more gateway drain under pyinstrument and writes the text profile there.
Workloads: single-reading messages, and batches of `--batch-size` readings per message.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from parkmon import devservices  # noqa: E402
from parkmon.contracts import kafka_readings_topic, mqtt_topic  # noqa: E402
from tests.support.ingest import (  # noqa: E402
    GatewayProcess,
    Publisher,
    free_port,
    park_yaml,
    topic_end_offsets,
    unique,
)


def payloads_single(park: str, n: int, t0: int) -> list[bytes]:
    meter = "powerco.power_rate"
    return [json.dumps({"meter": meter, "ts_ms": t0 + i, "value": 100.0 + (i % 500),
                        "unit": "MW", "seq": i}).encode() for i in range(n)]


def payloads_batched(park: str, batches: int, size: int, t0: int) -> list[bytes]:
    meters = ["powerco.power_rate", "powerco.steam_out"]
    out = []
    for b in range(batches):
        items = []
        for j in range(size):
            i = b * size + j
            m = meters[i % 2]
            if m == "powerco.steam_out":
                items.append({"meter": m, "ts_ms": t0 + i, "value": 1000.0 + i, "unit": "MWh",
                              "seq": i})
            else:
                items.append({"meter": m, "ts_ms": t0 + i, "value": 250_000.0, "unit": "kW",
                              "seq": i})
        out.append(json.dumps({"v": 1, "source": "bench", "readings": items}).encode())
    return out


def _session(host: str, port: int, client_id: str, topic: str) -> None:
    """Create a persistent session with a QoS 1 subscription, then leave."""
    done = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.on_subscribe = lambda *a: done.set()
    c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect(host, port, clean_start=False, properties=props)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()


def raw_drain(host: str, port: int, sub: str, topic: str, payloads: list[bytes]) -> float:
    """Messages/s of a plain paho subscriber draining `payloads` from its session queue."""
    cid = unique("raw")
    _session(host, port, cid, sub)
    pub = Publisher(host, port)
    pub.wait_connected()
    pub.publish_many(topic, payloads)
    assert pub.wait_all(300), "publisher did not finish"
    pub.close()
    n = len(payloads)
    state: dict[str, Any] = {"count": 0, "first": None, "last": None}
    done = threading.Event()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        state["count"] += 1
        if state["first"] is None:
            state["first"] = time.perf_counter()
        if state["count"] >= n:
            state["last"] = time.perf_counter()
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0  # drop the session when done
    props.ReceiveMaximum = 4000  # the gateway's default, for a like-for-like flow window
    c.connect(host, port, clean_start=False, properties=props)
    c.loop_start()
    assert done.wait(300), f"raw subscriber got {state['count']} of {n}"
    c.disconnect()
    c.loop_stop()
    return n / (state["last"] - state["first"])


def gateway_drain(host: str, port: int, bootstrap: str, park_file: Path, topic: str,
                  payloads: list[bytes], readings: int, workdir: Path,
                  profile_to: Path | None = None) -> float:
    """Readings/s of `parkmon gateway` draining `payloads` from its session queue into Kafka."""
    cid = unique("gw")
    rtopic = unique("bench.readings")
    gw = GatewayProcess(park_file, host, port, bootstrap, cid, workdir / f"{cid}.log",
                        env_extra={"PARKMON_GATEWAY_READINGS_TOPIC": rtopic,
                                   "PARKMON_GATEWAY_DEADLETTER_TOPIC": rtopic + ".dl",
                                   "PARKMON_GATEWAY_LOG_LEVEL": "WARNING"})
    gw.start()  # creates the session, the subscription and the topics
    assert gw.terminate() == 0
    pub = Publisher(host, port)
    pub.wait_connected()
    pub.publish_many(topic, payloads)
    assert pub.wait_all(300), "publisher did not finish"
    pub.close()
    gw.start(wait_healthy_s=0, profile_to=profile_to)
    t_first = n_first = None
    deadline = time.monotonic() + 600
    n = 0
    while time.monotonic() < deadline:
        n = topic_end_offsets(bootstrap, rtopic)
        t = time.perf_counter()
        if n > 0 and t_first is None:
            t_first, n_first = t, n
        if n >= readings:
            break
        time.sleep(0.05)
    t_last = time.perf_counter()
    m = gw.metrics()
    code = gw.terminate()
    assert code == 0, gw.log_tail()
    assert n == readings, f"{n} of {readings} readings in Kafka"
    assert m.get("parkmon_gateway_readings_rejected_total", 0) == 0
    assert t_first is not None and n_first is not None
    return (readings - n_first) / (t_last - t_first)


def cpu_budget(park_file: Path, bootstrap: str, topic: str, payloads: list[bytes],
               readings: int) -> dict[str, float]:
    """CPU microseconds per reading spent by the gateway core, in this process, without MQTT:
    `Gateway.handle` on the calling thread (validate, dedup, serialise, enqueue to librdkafka) and
    the whole process (plus librdkafka's threads and the delivery callbacks). Load on the machine
    changes wall-clock rates a lot; CPU time per reading much less."""
    import logging
    import resource

    from ingest.gateway import Gateway
    from parkmon.config import GatewaySettings, KafkaSettings
    from parkmon.park import load_park

    logging.getLogger("parkmon.gateway").setLevel(logging.ERROR)  # librdkafka's config notes
    rtopic = unique("budget.readings")
    gw = Gateway(load_park(park_file),
                 gateway=GatewaySettings(readings_topic=rtopic, deadletter_topic=rtopic + ".dl",
                                         metrics_port=-1),
                 kafka=KafkaSettings(bootstrap=bootstrap))
    gw.tracker._ack = lambda mid, qos, gen: True  # no broker: nothing to acknowledge
    gw.out.start()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    th0 = time.thread_time()
    w0 = time.perf_counter()
    for i, p in enumerate(payloads):
        gw.handle(topic, p, i % 65535 + 1, 1, 1)
    th1 = time.thread_time()
    gw.tracker.wait_idle(120)
    w1 = time.perf_counter()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    gw.out.stop()
    proc = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {"handle_us": (th1 - th0) / readings * 1e6, "process_us": proc / readings * 1e6,
            "wall_rate": readings / (w1 - w0)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=30_000, help="single-reading messages")
    ap.add_argument("--batches", type=int, default=200, help="batched messages")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="write pyinstrument profiles to this directory")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    broker = devservices.handle("mosquitto", data_dir=work / "mosquitto", port=free_port())
    broker.ensure()
    kafka = devservices.ensure("kafka", quiet=True)
    bootstrap = f"{kafka.host}:{kafka.port}"
    try:
        park_id = unique("bench").replace("-", "_")
        park_file = work / "park.yaml"
        park_file.write_text(park_yaml(park_id))
        topic = mqtt_topic(park_id, "powerco")
        sub = f"parkmon/{park_id}/+/readings"
        t0 = int(time.time() * 1000)
        workloads = {
            "single": (payloads_single(park_id, args.messages, t0), args.messages, 1),
            f"batch{args.batch_size}": (
                payloads_batched(park_id, args.batches, args.batch_size, t0),
                args.batches * args.batch_size, args.batch_size),
        }
        print(f"# gateway benchmark: private Mosquitto {broker.host}:{broker.port}, Kafka "
              f"{bootstrap} ({kafka_readings_topic(park_id)}-style topics), "
              f"repeat {args.repeat}, medians", flush=True)
        rows = []
        for name, (payloads, readings, per_msg) in workloads.items():
            raws, gws = [], []
            for _ in range(args.repeat):
                raws.append(raw_drain(broker.host, broker.port, sub, topic, payloads) * per_msg)
                gws.append(gateway_drain(broker.host, broker.port, bootstrap, park_file,
                                         topic, payloads, readings, work))
                print(f"  {name}: raw {raws[-1]:,.0f} readings/s, gateway {gws[-1]:,.0f} "
                      f"readings/s, ratio {gws[-1] / raws[-1]:.2f}", flush=True)
            raw, gwr = statistics.median(raws), statistics.median(gws)
            rows.append((name, len(payloads), readings, raw, gwr, gwr / raw))
        print()
        print(f"{'workload':<10} {'messages':>9} {'readings':>9} {'raw ceiling r/s':>16} "
              f"{'gateway r/s':>12} {'ratio':>6}")
        for name, msgs, readings, raw, gwr, ratio in rows:
            print(f"{name:<10} {msgs:>9,} {readings:>9,} {raw:>16,.0f} {gwr:>12,.0f} "
                  f"{ratio:>6.2f}")
        print("goals: single ratio >= 0.80; batched >= 100,000 readings/s")
        print()
        print("CPU per reading of the gateway core (no MQTT; in this process, medians):")
        for name, (payloads, readings, _) in workloads.items():
            runs = [cpu_budget(park_file, bootstrap, topic, payloads, readings)
                    for _ in range(args.repeat)]
            h = statistics.median(r["handle_us"] for r in runs)
            pr = statistics.median(r["process_us"] for r in runs)
            wr = statistics.median(r["wall_rate"] for r in runs)
            print(f"  {name:<10} handle() {h:6.1f} us/reading; whole process {pr:6.1f} us/reading "
                  f"(= {1e6 / pr:,.0f} readings/s per CPU core); wall {wr:,.0f} readings/s")
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            for name, (payloads, readings, _) in workloads.items():
                out = args.profile / f"gateway-{name}.txt"
                gateway_drain(broker.host, broker.port, bootstrap, park_file, topic,
                              payloads, readings, work, profile_to=out)
                print(f"profile ({name}): {out}")
    finally:
        if broker.started_here:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
