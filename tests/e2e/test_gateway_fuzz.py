"""Fuzz of `parkmon gateway` (its own process) over the real Mosquitto and Kafka.

10,000 seeded hostile messages (tests/support/fuzz.py: huge strings, deep nesting, wrong types,
NaN/Infinity, giant numbers, invalid UTF-8, unicode, duplicate keys, truncated JSON, envelope abuse,
unit expressions pint would evaluate forever, oversized payloads, odd topics, repeats, valid
readings mixed in) are published through Mosquitto. Afterwards:

* the gateway is alive and healthy, and a final valid reading still arrives in Kafka (no stall);
* every delivered message was received and acknowledged, and no message on a topic outside the
  subscription reached it;
* every reading is accounted for: accepted + rejected + duplicates = readings received, and each
  count equals what the same pure core predicts in this process (an oracle fed the same messages
  in the same order); the Kafka readings and dead-letter topics hold exactly those records, every
  dead-letter record with a known reason and a message;
* validation time (measured on the pure validator here, per message): p99 < 50 ms for inputs up to
  the max payload size, and an oversized payload is refused without being parsed.

Seed: PARKMON_FUZZ_SEED (default 13); count: PARKMON_FUZZ_MESSAGES (default 10,000).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from ingest.dedup import Deduplicator
from ingest.validate import Limits, Validator
from parkmon.contracts import Reason, kafka_deadletter_topic, kafka_readings_topic, mqtt_topic
from parkmon.park import load_park
from tests.support.fuzz import FuzzMessage, FuzzPark, hostile_messages
from tests.support.ingest import GatewayProcess, Publisher, park_yaml, read_topic, unique

pytestmark = pytest.mark.e2e

#: below Mosquitto's max_packet_size (1 MiB, which disconnects the publisher instead): payloads
#: between the two limits reach the gateway and must be refused there, unparsed
MAX_PAYLOAD = 512 * 1024
SEED = int(os.environ.get("PARKMON_FUZZ_SEED", "13"))
N = int(os.environ.get("PARKMON_FUZZ_MESSAGES", "10000"))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Oracle:
    """The gateway's pure core in this process: predicts every outcome, times every validation."""

    def __init__(self, park_file: Path) -> None:
        self.validator = Validator(load_park(park_file), now_ms=now_ms,
                                   limits=Limits(max_payload_bytes=MAX_PAYLOAD))
        self.dedup = Deduplicator()
        self.reasons: Counter[str] = Counter()
        self.accepted = 0
        self.duplicates = 0
        self.readings = 0
        self.times_ms: dict[str, list[float]] = defaultdict(list)

    def feed(self, m: FuzzMessage) -> None:
        t0 = time.perf_counter()
        res = self.validator.validate(m.topic, m.payload)
        self.times_ms[m.category].append((time.perf_counter() - t0) * 1000)
        self.readings += res.readings_total
        for rd in res.accepted:
            if self.dedup.seen_or_add(rd.meter, rd.ts_ms if rd.seq is None else rd.seq):
                self.duplicates += 1
            else:
                self.accepted += 1
        for rj in res.rejections:
            self.reasons[rj.reason.value] += 1


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def wait_acked(gw: GatewayProcess, n: int, timeout_s: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    m: dict[str, float] = {}
    while time.monotonic() < deadline:
        assert gw.alive(), gw.log_tail()
        m = gw.metrics()
        if (m.get("parkmon_gateway_messages_acked_total", 0) >= n
                and m.get("parkmon_gateway_inflight_messages", 1) == 0):
            return m
        time.sleep(0.2)
    raise AssertionError(f"gateway acknowledged {m.get('parkmon_gateway_messages_acked_total')} "
                         f"of {n} messages:\n{gw.log_tail()}")


@pytest.mark.timeout(600)
def test_gateway_survives_and_accounts_for_ten_thousand_hostile_messages(tmp_path, mosquitto,
                                                                          kafka, capsys):
    park_id = unique("gwfuzz").replace("-", "_")
    a, b = "powerco", "boardco"
    park_file = tmp_path / "park.yaml"
    park_file.write_text(park_yaml(park_id, (a, b)))
    fpark = FuzzPark(park_id, a, b, rate_meter=f"{a}.power_rate", counter_meter=f"{a}.steam_out",
                     foreign_meter=f"{b}.water_in")
    t_gen = time.perf_counter()
    messages = hostile_messages(SEED, N, fpark, now_ms=now_ms(), max_payload=MAX_PAYLOAD)
    t_gen = time.perf_counter() - t_gen
    assert len(messages) == N
    cats = Counter(m.category for m in messages)
    assert len(cats) >= 15, cats  # every kind of hostility is in the mix

    gw = GatewayProcess(park_file, mosquitto.host, mosquitto.port, kafka.bootstrap,
                        unique("gwfuzz"), tmp_path / "gw.log",
                        env_extra={"PARKMON_GATEWAY_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
                                   "PARKMON_GATEWAY_LOG_LEVEL": "WARNING"})
    gw.start()
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        assert pub.wait_connected()
        oracle = Oracle(park_file)
        t0 = time.perf_counter()
        delivered = 0
        for m in messages:
            if m.delivered:
                oracle.feed(m)
                delivered += 1
            pub.publish(m.topic, m.payload)
        assert pub.wait_all(120) and not pub.failed, pub.failed[:5]
        metrics = wait_acked(gw, delivered, timeout_s=180)
        drained_s = time.perf_counter() - t0

        # no stall: a valid reading published after the fuzz arrives in Kafka
        final_seq = 10**12
        final = json.dumps({"meter": f"{a}.power_rate", "ts_ms": now_ms(), "value": 42.0,
                            "unit": "MW", "seq": final_seq}).encode()
        pub.publish(mqtt_topic(park_id, a), final)
        assert pub.wait_all(30)
        metrics = wait_acked(gw, delivered + 1, timeout_s=60)
        readings = [json.loads(v) for _k, v in read_topic(kafka.bootstrap,
                                                          kafka_readings_topic(park_id))]
        assert any(r.get("seq") == final_seq for r in readings)
        health = gw.health()
        assert gw.alive() and health is not None and health["status"] == "ok", health

        # every message and every reading accounted for
        assert metrics["parkmon_gateway_messages_received_total"] == delivered + 1
        assert metrics["parkmon_gateway_messages_acked_total"] == delivered + 1
        rejected = {k.split('reason="')[1].rstrip('"}'): int(v) for k, v in metrics.items()
                    if k.startswith("parkmon_gateway_readings_rejected_total{") and v}
        accepted = int(metrics["parkmon_gateway_readings_accepted_total"])
        dups = int(metrics["parkmon_gateway_duplicates_total"])
        received = int(metrics["parkmon_gateway_readings_received_total"])
        assert accepted + sum(rejected.values()) + dups == received == oracle.readings + 1
        assert rejected == dict(oracle.reasons)
        assert (accepted, dups) == (oracle.accepted + 1, oracle.duplicates)
        assert rejected.get(Reason.PROCESSING_ERROR.value, 0) == 0  # no validator crash
        assert metrics.get("parkmon_gateway_kafka_delivery_failures_total", 0) == 0

        assert len(readings) == accepted
        dead = [json.loads(v) for _k, v in read_topic(kafka.bootstrap,
                                                      kafka_deadletter_topic(park_id))]
        assert Counter(d["reason"] for d in dead) == oracle.reasons
        known = {r.value for r in Reason}
        for d in dead:
            assert d["reason"] in known and d["message"] and len(d["payload_sha256"]) == 64
            assert d["meter"] is None or len(d["meter"]) <= 128
        oversized = [d for d in dead if d["reason"] == Reason.OVERSIZED.value]
        assert oversized and all(d["payload_bytes"] > MAX_PAYLOAD and d["payload_truncated"]
                                 for d in oversized)

        # validation time on the pure core
        all_ms = [t for ts in oracle.times_ms.values() for t in ts]
        p99 = pct(all_ms, 0.99)
        assert p99 < 50.0, f"p99 validation {p99:.2f} ms"
        huge = oracle.times_ms["huge_strings"] + oracle.times_ms["deep_nesting"]
        assert pct(huge, 0.99) < 50.0
        big = b"x" * (64 * MAX_PAYLOAD)  # 32 MiB: refused by its length, never parsed
        t = time.perf_counter()
        res = oracle.validator.validate(mqtt_topic(park_id, a), big)
        assert [r.reason for r in res.rejections] == [Reason.OVERSIZED]
        assert (time.perf_counter() - t) * 1000 < 5.0

        with capsys.disabled():
            print(f"\ngateway fuzz: seed {SEED}, {N} messages ({delivered} delivered, "
                  f"{sum(len(m.payload) for m in messages) / 1e6:.1f} MB) generated in "
                  f"{t_gen:.1f} s, published and drained in {drained_s:.1f} s; "
                  f"readings {received}: accepted {accepted}, rejected "
                  f"{sum(rejected.values())}, duplicates {dups}")
            print(f"  validation per message (pure core): p50 {statistics.median(all_ms):.3f} ms"
                  f", p99 {p99:.3f} ms, max {max(all_ms):.1f} ms")
            for cat in sorted(oracle.times_ms, key=lambda c: -max(oracle.times_ms[c])):
                ts = oracle.times_ms[cat]
                print(f"  {cat:15s} n={len(ts):5d} p50 {statistics.median(ts):7.3f} ms "
                      f"p99 {pct(ts, 0.99):7.3f} ms max {max(ts):7.1f} ms")
            print("  rejected by reason: " + ", ".join(f"{k} {v}"
                                                     for k, v in sorted(rejected.items())))
    finally:
        pub.close()
        if gw.alive():
            assert gw.terminate() == 0, gw.log_tail()


def test_generator_is_deterministic_and_mixes_every_category():
    park = FuzzPark("p", "a", "b", "a.rate", "a.counter", "b.m")
    one = hostile_messages(5, 2_000, park, now_ms=1_800_000_000_000, max_payload=4096)
    two = hostile_messages(5, 2_000, park, now_ms=1_800_000_000_000, max_payload=4096)
    assert one == two
    assert {m.category for m in one} >= {"valid", "deep_nesting", "invalid_utf8", "oversized",
                                         "repeat", "odd_topic", "hostile_units"}
    assert any(not m.delivered for m in one) and any(m.delivered for m in one)
