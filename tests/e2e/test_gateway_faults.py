"""Fault tests of `parkmon gateway` (its own process) on a private Mosquitto and the dev Kafka.

A stream of 100,000 valid readings is published (QoS 1, persistent sessions) while
  * the gateway is killed with SIGKILL and started again, or
  * Mosquitto is restarted,
in the middle of it. Afterwards every reading is in the Kafka readings topic, and after
deduplication by idempotency key (meter, seq or ts_ms) exactly once: the exact count is checked,
and the number of raw duplicates left in Kafka is reported.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from parkmon.contracts import kafka_deadletter_topic, kafka_readings_topic, mqtt_topic
from tests.support.ingest import (
    GatewayProcess,
    Publisher,
    park_yaml,
    read_topic,
    topic_end_offsets,
    unique,
    wait_for_offsets,
)

pytestmark = pytest.mark.e2e

N = 100_000


def stream(park_id: str, n: int, per_message: int = 1
           ) -> tuple[list[tuple[str, bytes]], set[tuple[str, int]]]:
    """n valid readings over three meters of one enterprise (a rate meter with sequence numbers,
    two counters without: keyed by event time), one per message or batched `per_message`."""
    t0 = time.time_ns() // 1_000_000 - 60_000
    topic = mqtt_topic(park_id, "powerco")
    docs: list[dict[str, Any]] = []
    keys: set[tuple[str, int]] = set()
    for i in range(n):
        k = i % 3
        ts = t0 + i
        if k == 0:
            doc: dict[str, Any] = {"meter": "powerco.power_rate", "ts_ms": ts,
                                   "value": 100.0 + i % 700, "unit": "MW", "seq": i}
            keys.add(("powerco.power_rate", i))
        elif k == 1:
            doc = {"meter": "powerco.steam_out", "ts_ms": ts, "value": 1_000.0 + i * 0.5,
                   "unit": "MWh"}
            keys.add(("powerco.steam_out", ts))
        else:
            doc = {"meter": "powerco.gypsum_out", "ts_ms": ts, "value": 10.0 + i * 0.01,
                   "unit": "t"}
            keys.add(("powerco.gypsum_out", ts))
        docs.append(doc)
    if per_message == 1:
        msgs = [(topic, json.dumps(d).encode()) for d in docs]
    else:
        msgs = [(topic, json.dumps({"readings": docs[i:i + per_message]}).encode())
                for i in range(0, n, per_message)]
    return msgs, keys


class Scenario:
    def __init__(self, tmp: Path, broker: Any, kafka: Any) -> None:
        self.park_id = unique("gwfault").replace("-", "_")
        self.park_file = tmp / "park.yaml"
        self.park_file.write_text(park_yaml(self.park_id))
        self.broker, self.kafka = broker, kafka
        self.client_id = unique("gw")
        self.tmp = tmp
        self.readings_topic = kafka_readings_topic(self.park_id)
        self.runs = 0

    def gateway(self) -> GatewayProcess:
        self.runs += 1
        gw = GatewayProcess(self.park_file, self.broker.host, self.broker.port,
                            self.kafka.bootstrap, self.client_id,
                            self.tmp / f"gateway-{self.runs}.log")
        gw.start()
        return gw

    def publish_in_background(self, msgs: list[tuple[str, bytes]]) -> tuple[threading.Thread,
                                                                              Publisher]:
        pub = Publisher(self.broker.host, self.broker.port)
        assert pub.wait_connected()

        def run() -> None:
            for topic, payload in msgs:
                pub.publish(topic, payload)

        th = threading.Thread(target=run, name="publisher", daemon=True)
        th.start()
        return th, pub

    def wait_settled(self, gw: GatewayProcess, expected: int, timeout_s: float = 600) -> None:
        """Until at least `expected` records are in Kafka and the gateway has nothing in flight."""
        n = wait_for_offsets(self.kafka.bootstrap, self.readings_topic, expected, timeout_s)
        assert n >= expected, f"only {n} of {expected} readings reached Kafka:\n{gw.log_tail()}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if gw.metrics().get("parkmon_gateway_inflight_messages", 1) == 0:
                return
            time.sleep(0.2)
        raise AssertionError("gateway still has messages in flight")

    def check_exactly_once(self, keys: set[tuple[str, int]]) -> dict[str, int]:
        records = read_topic(self.kafka.bootstrap, self.readings_topic, timeout_s=120)
        got: Counter[tuple[str, int]] = Counter()
        for key, value in records:
            r = json.loads(value)
            assert key.decode() == r["meter"]  # keyed by meter: one meter stays in one partition
            got[(r["meter"], r["seq"] if r.get("seq") is not None else r["ts_ms"])] += 1
        assert set(got) == keys, (f"missing {len(keys - set(got))}, "
                                  f"unexpected {len(set(got) - keys)}")
        assert len(got) == N
        assert read_topic(self.kafka.bootstrap, kafka_deadletter_topic(self.park_id)) == []
        return {"records": len(records), "distinct": len(got),
                "raw_duplicates": len(records) - len(got)}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("per_message", [1, 100], ids=["single", "batch100"])
def test_kill_9_of_the_gateway_mid_stream_loses_nothing(tmp_path, private_service, kafka,
                                                        per_message):
    broker = private_service("mosquitto")
    sc = Scenario(tmp_path, broker, kafka)
    msgs, keys = stream(sc.park_id, N, per_message)
    gw1 = sc.gateway()
    publisher, pub = sc.publish_in_background(msgs)
    wait_for_offsets(kafka.bootstrap, sc.readings_topic, N // 3, 300)
    gw1.kill9()
    at_kill = topic_end_offsets(kafka.bootstrap, sc.readings_topic)
    assert at_kill < N, "the stream finished before the kill: nothing was tested"
    time.sleep(1.0)
    gw2 = sc.gateway()
    publisher.join(600)
    assert pub.wait_all(300)
    pub.close()
    try:
        sc.wait_settled(gw2, N)
        dups_stream = gw2.metrics()["parkmon_gateway_duplicates_total"]
        # Devices republish: readings that were in Kafka before the crash are recognised by the
        # restarted gateway (its memory was rebuilt from Kafka), counted, and not produced again.
        again = msgs[:1_000 // per_message]
        pub = Publisher(broker.host, broker.port)
        assert pub.wait_connected()
        pub.publish_many(again[0][0], (p for _t, p in again))
        assert pub.wait_all(120)
        pub.close()
        deadline = time.monotonic() + 60
        m2 = gw2.metrics()
        while (m2["parkmon_gateway_duplicates_total"] < dups_stream + 1_000
               and time.monotonic() < deadline):
            time.sleep(0.2)
            m2 = gw2.metrics()
        assert m2["parkmon_gateway_duplicates_total"] == dups_stream + 1_000
        result = sc.check_exactly_once(keys)
    finally:
        assert gw2.terminate() == 0, gw2.log_tail()
    print(f"\nkill -9 at {at_kill} records; restarted gateway re-read "
          f"{m2['parkmon_gateway_replayed_readings_total']:.0f} readings, counted "
          f"{dups_stream:.0f} redelivered duplicates (+1000 republished); "
          f"Kafka: {result}")
    assert m2["parkmon_gateway_replayed_readings_total"] >= at_kill


@pytest.mark.timeout(900)
def test_mosquitto_restart_mid_stream_loses_nothing(tmp_path, private_service, kafka):
    broker = private_service("mosquitto")
    sc = Scenario(tmp_path, broker, kafka)
    msgs, keys = stream(sc.park_id, N)
    gw = sc.gateway()
    publisher, pub = sc.publish_in_background(msgs)
    try:
        wait_for_offsets(kafka.bootstrap, sc.readings_topic, N // 3, 300)
        broker.restart()
        at_restart = topic_end_offsets(kafka.bootstrap, sc.readings_topic)
        assert at_restart < N, "the stream finished before the restart: nothing was tested"
        publisher.join(600)
        assert pub.wait_all(300)
        pub.close()
        sc.wait_settled(gw, N)
        m = gw.metrics()
        result = sc.check_exactly_once(keys)
        assert gw.alive()
    finally:
        assert gw.terminate() == 0, gw.log_tail()
    print(f"\nMosquitto restarted at {at_restart} records; gateway counted "
          f"{m['parkmon_gateway_duplicates_total']:.0f} duplicates; Kafka: {result}")
