"""Walking skeleton of the streams stage: readings on Kafka -> `parkmon streams worker` process
-> one-minute windows and KPIs in InfluxDB, asserted with Flux queries. Every test runs against
both engines of the worker: the Faust app and the confluent-kafka batch loop."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from parkmon.contracts import kafka_readings_topic
from streams.app import ensure_topics
from tests.support.streams import WorkerProcess, produce, query_kpi, query_windows, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = 1_790_000_040_000 - 1_790_000_040_000 % MIN  # a minute boundary


def bucket_name(b):
    return b if isinstance(b, str) else getattr(b, "name", None) or b["name"]


@pytest.fixture(params=["faust", "batch"])
def worker_factory(request, kafka, influx, influx_bucket, tmp_path):
    started = []

    def make(park_id, *extra, app_id=None):
        w = WorkerProcess(park_id, kafka.bootstrap, influx.url, influx.org,
                          bucket_name(influx_bucket), influx.token,
                          tmp_path / f"worker-{len(started)}.log", app_id=app_id,
                          extra=["--engine", request.param, *extra])
        started.append(w)
        return w.start()

    yield make
    for w in started:
        w.stop()


def test_readings_become_one_minute_windows_and_kpis(kafka, influx, influx_bucket,
                                                     worker_factory):
    park = f"sk{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 2)
    # Kalundborg example: "gyproc.power_in" is a grid electricity counter (MWh) of Gyproc.
    # A reading every 10 s for 3 minutes, +0.5 MWh each: windows [T0, T0+1m) hold the readings
    # at 0..50 s (the first only anchors: 5 steps = 2.5 MWh), the next two 6 steps = 3.0 MWh.
    readings = [("gyproc.power_in", T0 + i * 10_000, 100.0 + 0.5 * i) for i in range(18)]
    produce(kafka.bootstrap, kafka_readings_topic(park), readings)
    w = worker_factory(park, "--grace-ms", "5000", "--idle-close-ms", "3000",
                       "--flush-interval-s", "0.5")
    b = bucket_name(influx_bucket)
    got = wait_for(lambda: (lambda q: q if len(q) >= 3 else None)(
        query_windows(influx.url, influx.token, influx.org, b, park)), 120, 2)
    assert got, w.log_text()[-3000:]
    assert got[("gyproc.power_in", T0)] == pytest.approx(2.5)
    assert got[("gyproc.power_in", T0 + MIN)] == pytest.approx(3.0)
    assert got[("gyproc.power_in", T0 + 2 * MIN)] == pytest.approx(3.0)
    # the enterprise KPI of the middle window: all of Gyproc's energy input is this meter
    e_in = wait_for(lambda: query_kpi(influx.url, influx.token, influx.org, b, park,
                                      "enterprise", "gyproc", "1m", "energy_input_mwh"), 60, 2)
    assert e_in[T0 + MIN] == pytest.approx(3.0), w.log_text()[-3000:]


def test_late_reading_within_grace_corrects_the_window(kafka, influx, influx_bucket,
                                                       worker_factory):
    park = f"sl{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 1)
    topic = kafka_readings_topic(park)
    # window [T0, T0+1m) gets readings at 0 s (100) and 30 s (101); a reading at 70 s closes it
    produce(kafka.bootstrap, topic, [("gyproc.power_in", T0, 100.0),
                                     ("gyproc.power_in", T0 + 30_000, 101.0),
                                     ("gyproc.power_in", T0 + 70_000, 104.0)])
    w = worker_factory(park, "--grace-ms", "600000", "--flush-interval-s", "0.5")
    b = bucket_name(influx_bucket)
    first = wait_for(lambda: query_windows(influx.url, influx.token, influx.org, b, park), 90, 2)
    assert first.get(("gyproc.power_in", T0)) == pytest.approx(1.0), w.log_text()[-3000:]
    # late (event time 50 s < watermark 70 s) but within grace: 101 -> 103 now falls in the
    # first window, the second keeps 103 -> 104
    produce(kafka.bootstrap, topic, [("gyproc.power_in", T0 + 50_000, 103.0)])

    def corrected():
        q = query_windows(influx.url, influx.token, influx.org, b, park)
        return q if q.get(("gyproc.power_in", T0)) == pytest.approx(3.0) else None

    got = wait_for(corrected, 60, 2)
    assert got, w.log_text()[-3000:]
    rev = query_windows(influx.url, influx.token, influx.org, b, park, field="revision")
    assert rev[("gyproc.power_in", T0)] == 1


def test_bad_messages_go_to_the_dead_letter_topic_with_their_reason(kafka, influx, influx_bucket,
                                                                   worker_factory):
    from confluent_kafka import Consumer, Producer

    from parkmon.contracts import kafka_streams_deadletter_topic

    park = f"sd{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, park, 1)
    topic = kafka_readings_topic(park)
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    p.produce(topic, key=b"gyproc.power_in", value=b"{not json")
    p.produce(topic, key=b"nope", value=b'{"meter":"nope","ts_ms":%d,"value":1.0}' % T0)
    p.produce(topic, key=b"gyproc.power_in",
              value=b'{"meter":"gyproc.power_in","ts_ms":%d,"value":NaN}' % T0)
    p.flush(10)
    good = [("gyproc.power_in", T0 + i * 20_000, 10.0 + i) for i in range(4)]
    good.append(("gyproc.power_in", T0 + 120_000, 14.0))  # closes the second window
    produce(kafka.bootstrap, topic, good)
    w = worker_factory(park, "--grace-ms", "600000", "--idle-close-ms", "2000",
                       "--flush-interval-s", "0.5")
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"dlq-{park}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([kafka_streams_deadletter_topic(park)])
    reasons = []
    try:
        deadline = time.monotonic() + 90
        while len(reasons) < 3 and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is not None and not m.error():
                reasons.append(json.loads(m.value())["reason"])
    finally:
        c.close()
    assert sorted(reasons) == ["invalid_json", "not_finite", "unknown_meter"], w.log_text()[-2000:]
    # the good readings around them were not skipped: 0/20/40 s -> 2 MWh, 60 s -> 1 MWh
    b = bucket_name(influx_bucket)
    got = wait_for(lambda: (lambda q: q if len(q) >= 2 else None)(
        query_windows(influx.url, influx.token, influx.org, b, park)), 60, 1)
    assert got[("gyproc.power_in", T0)] == pytest.approx(2.0)
    assert got[("gyproc.power_in", T0 + MIN)] == pytest.approx(1.0)
