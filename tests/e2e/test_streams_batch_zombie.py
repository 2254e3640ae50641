"""Regression (found by the chaos soak in CI): a batch worker that stops polling mid-batch (SIGSTOP,
a long GC or swap pause) leaves the group; another worker takes its partitions and moves on. When
the stopped one comes back it finishes the batch it was holding: without fencing it wrote its
stale engine state into the changelog after the new owner's, the next restore took that stale
state, and the readings processed in between were missing from their windows (24 windows missing
and 28 wrong in the soak). Here the pause is made deterministic, on the real Kafka and InfluxDB:
worker A holds a fetched batch and does not poll, B takes over and processes everything, A then
processes its held batch (a zombie), B stops, C restores from the changelog and finishes; the
windows in InfluxDB must equal a recount of the input."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from test_streams_faults import (
    PARK,
    assert_equals_recount,
    bucket_name,
    readings,
    wait_complete,
)

from parkmon.contracts import kafka_readings_topic
from streams.app import WorkerOptions, ensure_topics
from streams.batch_worker import BatchWorker, ensure_changelogs
from streams.core.model import KpiModel
from streams.influx_sink import InfluxSink
from tests.support.streams import produce, wait_for

pytestmark = pytest.mark.e2e


def _worker(opts: WorkerOptions, model: KpiModel, sink: InfluxSink) -> BatchWorker:
    return BatchWorker(opts, model, sink)


def _subscribe(w: BatchWorker) -> None:
    w.consumer.subscribe([w.readings_topic], on_assign=w._on_assign, on_revoke=w._on_revoke,
                         on_lost=w._on_revoke)


def _caught_up(w: BatchWorker, parts: int) -> bool:
    return len(w.engines) == parts and all(w.caught_up(p) for p in range(parts))


def _run_in_thread(w: BatchWorker) -> threading.Thread:
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    return t


def test_a_paused_worker_coming_back_cannot_overwrite_the_new_owners_state(
        kafka: Any, influx: Any, influx_bucket: Any) -> None:
    park = f"bz{uuid.uuid4().hex[:8]}"
    parts = 2
    ensure_topics(kafka.bootstrap, park, parts)
    topic = kafka_readings_topic(park)
    opts = WorkerOptions(park_id=park, bootstrap=kafka.bootstrap, app_id=f"streams-{park}",
                         partitions=parts, grace_ms=600_000, idle_close_ms=3000,
                         batch_max=200, flush_interval_s=0.3, kpis=False,
                         session_timeout_s=6, max_poll_interval_s=6)
    ensure_changelogs(opts, parts)
    model = KpiModel.from_park(PARK.model_copy(update={"id": park}))
    b = bucket_name(influx_bucket)
    sink = InfluxSink.connect(influx.url, influx.token, influx.org, b)

    a = _worker(opts, model, sink)
    _subscribe(a)
    sent = readings(0, 60)
    produce(kafka.bootstrap, topic, sent)
    deadline = time.monotonic() + 90
    while not _caught_up(a, parts) and time.monotonic() < deadline:
        a.process(a.consumer.consume(opts.batch_max, 0.3))
    assert _caught_up(a, parts), "worker A never caught up with the first part"

    # A fetches a batch and then stops polling while holding it (SIGSTOP mid-batch)
    part2 = readings(60, 120)
    produce(kafka.bootstrap, topic, part2)
    sent += part2
    held: list[Any] = []
    deadline = time.monotonic() + 30
    while not held and time.monotonic() < deadline:
        held = [m for m in a.consumer.consume(opts.batch_max, 0.5) if m.error() is None]
    assert held, "worker A fetched nothing of the second part"

    flushes_before = a.stats.flushes
    # B takes over once A's poll interval has passed, and processes everything meanwhile
    bw = _worker(opts, model, sink)
    tb = _run_in_thread(bw)
    try:
        assert wait_for(lambda: len(bw.engines) == parts, 60, 0.2), "B never got both partitions"
        part3 = readings(120, 180)
        produce(kafka.bootstrap, topic, part3)
        sent += part3
        assert wait_for(lambda: _caught_up(bw, parts), 90, 0.2), "B never caught up"

        # A comes back and finishes the batch it held: a zombie, fenced
        a.process(held)
        assert a.stats.txn_aborts == 1 and a.stats.flushes == flushes_before
    finally:
        bw.stop_event.set()
        tb.join(60)
    try:
        a.consumer.close()
    except Exception:  # noqa: BLE001 - it was thrown out of the group; closing may complain
        pass

    # C restores from the changelog and carries on; the windows must equal the recount
    c = _worker(opts, model, sink)
    tc = _run_in_thread(c)
    try:
        part4 = readings(180, 240)
        produce(kafka.bootstrap, topic, part4)
        sent += part4
        got = wait_complete(influx.url, influx.token, influx.org, b, park, sent, 180)
        assert_equals_recount(got, sent)
    finally:
        c.stop_event.set()
        tc.join(60)
        pass
