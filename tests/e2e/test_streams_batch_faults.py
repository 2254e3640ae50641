"""The fault tests of the streams stage (tests/e2e/test_streams_faults.py) against the worker's
batch engine (`parkmon streams worker --engine batch`): real Kafka and InfluxDB, kill -9,
a two-worker takeover and an InfluxDB outage; afterwards the meter windows in InfluxDB equal a
recount straight from the input, and the indicators were computed from all of them."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from test_streams_faults import (
    WORKER_FLAGS,
    assert_equals_recount,
    bucket_name,
    readings,
    wait_complete,
)

from parkmon import devservices
from parkmon.contracts import kafka_readings_topic
from streams.app import ensure_topics
from tests.support.streams import WorkerProcess, produce, query_windows, wait_for

pytestmark = pytest.mark.e2e

FLAGS = ["--engine", "batch", *WORKER_FLAGS]


def test_kill9_mid_batch_then_restart_equals_recount(kafka, influx, influx_bucket, tmp_path):
    park = f"bk{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 2)
    topic = kafka_readings_topic(park)
    b = bucket_name(influx_bucket)
    app_id = f"streams-{park}"

    def worker(n):
        return WorkerProcess(park, kafka.bootstrap, influx.url, influx.org, b, influx.token,
                             tmp_path / f"w{n}.log", app_id=app_id, extra=FLAGS).start()

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
    finally:
        w2.stop()
    log = w2.log_text()
    assert "restored" in log
    # the restarted worker resumed from its saved state: the only readings beyond grace are the
    # ancient redelivered duplicates (their windows were final long ago), none of the replay
    last = json.loads([ln for ln in log.splitlines() if "streams stats:" in ln][-1]
                      .split("streams stats:", 1)[1])
    assert last["by_reason"].get("late_beyond_grace", 0) <= len(dup), log[-3000:]


def test_kill9_repeatedly_while_draining_equals_recount(kafka, influx, influx_bucket, tmp_path):
    """Killed at random points of a backlog drain three times (between InfluxDB write,
    changelog and commit), restarted each time: the end result is still the recount."""
    park = f"br{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 2)
    topic = kafka_readings_topic(park)
    b = bucket_name(influx_bucket)
    app_id = f"streams-{park}"
    sent = readings(0, 400)
    produce(kafka.bootstrap, topic, sent)
    flags = [*FLAGS, "--flush-interval-s", "0.2", "--batch-max", "50"]  # last one wins
    for n, after_s in enumerate((4.0, 2.5, 3.3)):
        w = WorkerProcess(park, kafka.bootstrap, influx.url, influx.org, b, influx.token,
                          tmp_path / f"w{n}.log", app_id=app_id, extra=flags).start()
        # wait until it owns its partitions, then let it run a little and kill it
        assert wait_for(lambda w=w: "restored" in w.log_text(), 90, 0.2), w.log_text()[-2000:]
        time.sleep(after_s)
        w.kill9()
    w = WorkerProcess(park, kafka.bootstrap, influx.url, influx.org, b, influx.token,
                      tmp_path / "final.log", app_id=app_id, extra=flags).start()
    try:
        got = wait_complete(influx.url, influx.token, influx.org, b, park, sent, 240)
        assert_equals_recount(got, sent)
    finally:
        w.stop()


def test_two_workers_one_killed_the_other_takes_over(kafka, influx, influx_bucket, tmp_path):
    park = f"b2{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 2)
    topic = kafka_readings_topic(park)
    b = bucket_name(influx_bucket)
    app_id = f"streams-{park}"
    ws = [WorkerProcess(park, kafka.bootstrap, influx.url, influx.org, b, influx.token,
                        tmp_path / f"w{n}.log", app_id=app_id, extra=FLAGS).start()
          for n in range(2)]
    try:
        first = readings(0, 60)
        produce(kafka.bootstrap, topic, first)
        got = wait_for(lambda: len(query_windows(influx.url, influx.token, influx.org, b,
                                                 park)) >= 8, 150, 0.5)
        assert got, ws[0].log_text()[-2000:] + ws[1].log_text()[-2000:]
        # both workers own a partition before one dies
        assert wait_for(lambda: all("restored" in w.log_text() for w in ws), 60, 0.5), \
            ws[0].log_text()[-2000:] + ws[1].log_text()[-2000:]
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
    """A private InfluxDB goes away for OUTAGE_S while readings keep coming: the batch loop
    pauses, keeps its group membership, and catches up afterwards."""
    outage_s = float(os.environ.get("PARKMON_TEST_INFLUX_OUTAGE_S", "45"))
    h = devservices.handle("influxdb", data_dir=Path(tmp_path / "influx"), port=18098)
    h.ensure()
    try:
        bucket = f"b{uuid.uuid4().hex[:6]}"
        h.create_bucket(bucket)
        park = f"bi{uuid.uuid4().hex[:8]}"
        ensure_topics(kafka.bootstrap, park, 2)
        topic = kafka_readings_topic(park)
        w = WorkerProcess(park, kafka.bootstrap, h.url, h.org, bucket, h.token,
                          tmp_path / "w.log", extra=FLAGS).start()
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
            assert "late_beyond_grace" not in w.log_text()
        finally:
            w.stop()
    finally:
        h.stop()
