"""Regression (found by the chaos soak): the batch worker pauses every partition while InfluxDB
refuses writes. When a partition was at its end at that moment and the consumer had
`enable.partition.eof`, librdkafka (>= 2.2, librdkafka #4844) resumed one record past the end:
the next record was never returned, its reading never windowed. The worker's consumer
configuration, on the real Kafka: pause at the end, resume, produce, and every record arrives."""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.app import WorkerOptions
from streams.batch_worker import consumer_config
from tests.support.ingest import unique

pytestmark = pytest.mark.integration


def _drain(c: Consumer, seen: list[int], until: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (not seen or max(seen) < until):
        for m in c.consume(100, 0.2):
            if m.error() is None:
                seen.append(int(m.value()))


def test_pause_and_resume_at_the_partition_end_skips_no_record(kafka: Any) -> None:
    topic = unique("pause")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": kafka.bootstrap})
    for i in range(5):
        p.produce(topic, value=str(i).encode())
    p.flush(30)
    c = Consumer(consumer_config(WorkerOptions(park_id="x", bootstrap=kafka.bootstrap),
                                 unique("g")))
    try:
        c.subscribe([topic])
        seen: list[int] = []
        _drain(c, seen, 4, 60)
        assert seen == [0, 1, 2, 3, 4]
        for _ in range(3):  # caught up, polled at the end for a while (an end event, if any)
            c.consume(100, 0.3)
        c.pause(c.assignment())  # InfluxDB refuses the write: the loop pauses and keeps polling
        for _ in range(3):
            c.consume(100, 0.2)
        c.resume(c.assignment())
        for i in range(5, 10):
            p.produce(topic, value=str(i).encode())
        p.flush(30)
        _drain(c, seen, 9, 60)
        assert seen == list(range(10)), f"records skipped after the resume: {seen}"
    finally:
        c.close()


def test_a_transactional_topic_is_read_to_its_end_past_markers_and_aborted_records(
        kafka: Any) -> None:
    """The batch engine writes its changelog and outputs in transactions: a partition ends with a
    commit (or abort) marker, aborted records are never returned. The restore (`read_changelog`)
    and the test helper (`read_topic`) must both stop at the end, promptly, with exactly the
    committed records."""
    from streams.batch_worker import read_changelog
    from tests.support.ingest import read_topic

    topic = unique("txn")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    p = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": unique("tx")})
    p.init_transactions(30)
    for keep, items in ((True, {"a": 1, "b": 2}), (False, {"a": 99, "c": 3}), (True, {"b": 5})):
        p.begin_transaction()
        for k, v in items.items():
            p.produce(topic, key=k.encode(), value=str(v).encode(), partition=0)
        if keep:
            p.commit_transaction(30)
        else:
            p.flush(30)
            p.abort_transaction(30)
    # both raise when they do not reach the end within the timeout
    assert read_changelog(kafka.bootstrap, topic, 0, timeout_s=20) == {"a": 1, "b": 5}
    assert sorted(read_topic(kafka.bootstrap, topic, timeout_s=20)) == [
        (b"a", b"1"), (b"b", b"2"), (b"b", b"5")]
