"""Streams stage throughput next to Quix Streams on the same topic, in the same run.

    .venv/bin/python benchmarks/bench_streams.py [--steps 2000] [--partitions 2] [--repeat 1]
        [--profile DIR]

Method (backlog drain):
  * a fresh topic `parkmon.<park>.readings` gets `--steps` readings of each of the 49 meters of
    the Kalundborg example park (one every 5 s of event time), produced before any consumer runs;
  * Quix Streams (own process, consumer group of its own): the same tumbling one-minute windows
    with the same grace, `sum()` per meter, `.final()` results to an output topic, RocksDB state
    with changelog topics, at-least-once, commit every 1 s;
  * parkmon (`parkmon streams worker`, own process), once per engine (`--engine batch`, the
    confluent-kafka batch loop, and `--engine faust`, the Faust app): windows per meter (counter
    deltas / rate integration, dedup, late handling), written synchronously to InfluxDB, KPIs on,
    changelog state, offsets committed only after InfluxDB accepted;
  * readings/s = readings committed between the first and the last observed commit of the group
    (committed offsets polled every 0.2 s), i.e. startup and recovery are excluded for both;
  * parkmon's p50/p99 from a window closing to InfluxDB accepting its point, from its stats log;
  * Faust alone (own process: the same topic consumed with noack_take and acked, no work), to
    show how much of parkmon's time is Faust's own per-event cost; once on asyncio's default loop
    and once on uvloop (the worker's default loop, `--event-loop`);
  * the pure core alone (no Kafka) on the same readings, for reference; `--profile DIR` writes a
    pyinstrument profile of it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from parkmon.contracts import kafka_readings_topic  # noqa: E402

BASE_MS = 60_000
GRACE_MS = 120_000


def make_readings(steps: int) -> list[tuple[str, int, float]]:
    from parkmon.park import example_park_path, load_park

    park = load_park(example_park_path("kalundborg"))
    t0 = 1_790_000_000_000
    out = []
    for i in range(steps):
        for j, m in enumerate(park.meters):
            v = float(i * (j + 1)) * 0.01 if m.kind == "counter" else 5.0 + (i + j) % 7
            out.append((m.id, t0 + i * 5_000, v))
    return out


def committed_progress(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in tps)
    finally:
        c.close()


def drain_rate(bootstrap: str, group: str, topic: str, partitions: int, total: int,
               proc: subprocess.Popen[bytes], timeout_s: float = 900) -> dict[str, Any]:
    first_t = first_n = None
    last_t, last_n = None, 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        n = committed_progress(bootstrap, group, topic, partitions)
        now = time.monotonic()
        if n > 0 and first_t is None:
            first_t, first_n = now, n
        if n > last_n:
            last_t, last_n = now, n
        if n >= total or proc.poll() is not None:
            break
        time.sleep(0.2)
    if first_t is None or last_t is None or last_t == first_t:
        return {"readings_per_s": None, "committed": last_n}
    assert first_n is not None
    return {"readings_per_s": (last_n - first_n) / (last_t - first_t), "committed": last_n,
            "seconds": last_t - first_t}


QUIX_CHILD = r'''
import sys
from datetime import timedelta
from quixstreams import Application
bootstrap, group, topic, out, state_dir = sys.argv[1:6]
app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                  commit_interval=1.0, state_dir=state_dir, loglevel="WARNING")
src = app.topic(topic, key_deserializer="str", value_deserializer="json",
                timestamp_extractor=lambda v, h, ts, tt: v["ts_ms"])
dst = app.topic(out, value_serializer="json")
sdf = app.dataframe(src)
sdf = sdf.apply(lambda v: v["value"])
sdf = sdf.tumbling_window(duration_ms=60_000, grace_ms=120_000).sum().final()
sdf = sdf.to_topic(dst)
app.run()
'''


FAUST_BARE_CHILD = r'''
import asyncio
import sys
bootstrap, group, topic, partitions, data_dir, loop = sys.argv[1:7]
if loop == "uvloop":
    import uvloop
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
asyncio.set_event_loop(asyncio.new_event_loop())
import faust
app = faust.App(group, broker=f"kafka://{bootstrap}", store="memory://", datadir=data_dir,
                consumer_auto_offset_reset="earliest", web_enabled=False,
                topic_partitions=int(partitions), broker_commit_interval=1.0)
t = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw",
              value_serializer="raw")

@app.agent(t, concurrency=1)
async def consume(stream):
    async for events in stream.noack_take(5000, within=1.0):
        for ev in events:
            await stream.ack(ev)

from faust.worker import Worker
Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
'''


def run_faust_bare(bootstrap: str, topic: str, partitions: int, total: int, tmp: Path,
                   loop: str = "asyncio") -> dict:
    """Faust alone on the same topic: consume, batch (noack_take), ack; no processing."""
    group = f"bench-faust-{uuid.uuid4().hex[:6]}"
    script = tmp / "faust_child.py"
    script.write_text(FAUST_BARE_CHILD)
    log = open(tmp / f"faust-{loop}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, str(script), bootstrap, group, topic,
                             str(partitions), str(tmp / f"faust-data-{loop}"), loop],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        return drain_rate(bootstrap, group, topic, partitions, total, proc)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run_quix(bootstrap: str, topic: str, partitions: int, total: int, tmp: Path) -> dict:
    group = f"bench-quix-{uuid.uuid4().hex[:6]}"
    script = tmp / "quix_child.py"
    script.write_text(QUIX_CHILD)
    log = open(tmp / "quix.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, str(script), bootstrap, group, topic,
                             topic + ".quix-out", str(tmp / "quix-state")],
                            stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        return drain_rate(bootstrap, group, topic, partitions, total, proc)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run_parkmon(bootstrap: str, park: str, partitions: int, total: int, tmp: Path,
                influx: Any, bucket: str, engine: str = "batch") -> dict:
    from tests.support.streams import WorkerProcess

    group = f"bench-parkmon-{engine}-{uuid.uuid4().hex[:6]}"
    w = WorkerProcess(park, bootstrap, influx.url, influx.org, bucket, influx.token,
                      tmp / f"parkmon-{engine}.log", app_id=group,
                      extra=["--grace-ms", str(GRACE_MS), "--partitions", str(partitions),
                             "--engine", engine])
    w.start()
    assert w.proc is not None
    try:
        res = drain_rate(bootstrap, group, kafka_readings_topic(park), partitions, total, w.proc)
        time.sleep(11)  # one more stats line
        stats = [ln for ln in w.log_text().splitlines() if "streams stats:" in ln]
        if stats:
            d = json.loads(stats[-1].split("streams stats:", 1)[1])
            res["close_to_stored_p50_s"] = d.get("close_to_stored_p50_s")
            res["close_to_stored_p99_s"] = d.get("close_to_stored_p99_s")
            res["windows_written"] = d.get("windows_written")
            res["kpi_points_written"] = d.get("kpi_points_written")
        return res
    finally:
        w.stop()


def core_only(readings: list[tuple[str, int, float]], profile_dir: str | None) -> float:
    from parkmon.contracts import Reading
    from parkmon.park import example_park_path, load_park
    from streams.core.engine import KpiEngine
    from streams.core.model import KpiModel

    model = KpiModel.from_park(load_park(example_park_path("kalundborg")))
    raws = [Reading(m, t, v).to_json() for m, t, v in readings]

    def run() -> float:
        eng = KpiEngine(model, BASE_MS, GRACE_MS)
        t = time.perf_counter()
        for raw in raws:
            r = Reading.from_json(raw)
            eng.ingest(r.meter, r.ts_ms, r.value)
        return len(raws) / (time.perf_counter() - t)

    rate = run()
    if profile_dir:
        from pyinstrument import Profiler

        prof = Profiler()
        prof.start()
        run()
        prof.stop()
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        (Path(profile_dir) / "streams_core.txt").write_text(prof.output_text(unicode=False))
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", default=None)
    ap.add_argument("--no-faust-alone", action="store_true",
                    help="skip the two 'Faust alone' reference runs")
    args = ap.parse_args(argv)

    from parkmon import devservices
    from streams.app import ensure_topics
    from tests.support.streams import produce

    kafka = devservices.ensure("kafka", quiet=True)
    bootstrap = getattr(kafka, "bootstrap", "127.0.0.1:19092")
    influx = devservices.ensure("influxdb", quiet=True)
    readings = make_readings(args.steps)
    total = len(readings)
    print(f"workload: {total} readings (49 meters x {args.steps} steps of 5 s), "
          f"{args.partitions} partitions, window {BASE_MS} ms, grace {GRACE_MS} ms")
    rows: list[tuple[float | None, float | None, dict]] = []
    faust_rates: list[float] = []
    bare: list[float] = []
    bare_uv: list[float] = []
    for rep in range(args.repeat):
        park = f"bench{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, park, args.partitions)
        produce(bootstrap, kafka_readings_topic(park), readings)
        bucket = f"bench-{park}"
        b = influx.create_bucket(bucket)  # type: ignore[attr-defined]
        f = fu = {"readings_per_s": None}
        with tempfile.TemporaryDirectory(prefix="bench-streams-") as d:
            tmp = Path(d)
            # interleaved, so a load change on the shared machine hits all of them alike
            q = run_quix(bootstrap, kafka_readings_topic(park), args.partitions, total, tmp)
            p = run_parkmon(bootstrap, park, args.partitions, total, tmp, influx, bucket,
                            "batch")
            pf = run_parkmon(bootstrap, park, args.partitions, total, tmp, influx, bucket,
                             "faust")
            if not args.no_faust_alone:
                f = run_faust_bare(bootstrap, kafka_readings_topic(park), args.partitions,
                                   total, tmp)
                fu = run_faust_bare(bootstrap, kafka_readings_topic(park), args.partitions,
                                    total, tmp, loop="uvloop")
        influx.delete_bucket(b["id"])  # type: ignore[attr-defined]
        print(f"run {rep + 1}: quix {q}  parkmon-batch {p}  parkmon-faust {pf}  "
              f"faust-bare {f}  faust-bare-uvloop {fu}")
        if f["readings_per_s"]:
            bare.append(f["readings_per_s"])
        if fu["readings_per_s"]:
            bare_uv.append(fu["readings_per_s"])
        if pf["readings_per_s"]:
            faust_rates.append(pf["readings_per_s"])
        rows.append((q["readings_per_s"], p["readings_per_s"], p))
    qs = [r[0] for r in rows if r[0]]
    ps = [r[1] for r in rows if r[1]]
    core = core_only(readings, args.profile)
    print()
    print(f"Quix Streams   readings/s (median of {len(qs)}): "
          f"{statistics.median(qs) if qs else float('nan'):,.0f}")
    print(f"parkmon worker, batch engine, readings/s (median of {len(ps)}): "
          f"{statistics.median(ps) if ps else float('nan'):,.0f}")
    if qs and ps:
        print(f"ratio parkmon batch / Quix: {statistics.median(ps) / statistics.median(qs):.2f}x")
    if faust_rates:
        med = statistics.median(faust_rates)
        print(f"parkmon worker, Faust engine, readings/s (median of {len(faust_rates)}): "
              f"{med:,.0f}" + (f"  -> / Quix: {med / statistics.median(qs):.2f}x" if qs else ""))
    if qs:
        ratios = [r[1] / r[0] for r in rows if r[0] and r[1]]
        if ratios:
            print(f"per-run ratios batch / Quix: {', '.join(f'{x:.2f}' for x in ratios)}")
    for label, xs in (("asyncio loop", bare), ("uvloop, as the worker", bare_uv)):
        if not xs:
            continue
        med = statistics.median(xs)
        print(f"Faust alone ({label}; consume + ack, no work) readings/s (median of {len(xs)}): "
              f"{med:,.0f}" + (f"  -> / Quix: {med / statistics.median(qs):.2f}x" if qs else "")
              + (f"  parkmon / it: {statistics.median(ps) / med:.2f}x" if ps else ""))
    last = rows[-1][2]
    print(f"parkmon (batch) window close -> stored in InfluxDB: p50 {last.get('close_to_stored_p50_s')} s,"
          f" p99 {last.get('close_to_stored_p99_s')} s")
    print(f"pure core alone (decode + KpiEngine.ingest, no Kafka): {core:,.0f} readings/s")
    if args.profile:
        print(f"profile of the core: {args.profile}/streams_core.txt")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
