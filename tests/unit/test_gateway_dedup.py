"""Deduplication memory, dead-letter records and the ack-after-delivery tracker of the gateway."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.dedup import Deduplicator
from ingest.gateway import _Tracker
from ingest.kafka_out import DEADLETTER_PAYLOAD_MAX, deadletter_record, decode_deadletter_payload
from ingest.metrics import GatewayMetrics
from parkmon.contracts import Quality, Reading

pytestmark = pytest.mark.unit


def test_second_occurrence_is_a_duplicate():
    d = Deduplicator(per_meter=10)
    assert d.seen_or_add("m1", 5) is False
    assert d.seen_or_add("m1", 5) is True
    assert d.seen_or_add("m2", 5) is False  # keys are per meter


def test_memory_is_bounded_per_meter_and_forgets_the_oldest():
    d = Deduplicator(per_meter=3)
    for k in range(5):
        d.seen_or_add("m", k)
    assert len(d) == 3
    assert ("m", 0) not in d and ("m", 4) in d
    assert d.seen_or_add("m", 0) is False  # forgotten: passes (downstream is idempotent)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 30)), max_size=200))
def test_within_capacity_each_key_passes_exactly_once(keys):
    d = Deduplicator(per_meter=1000)
    passed = [k for k in keys if not d.seen_or_add(*k)]
    assert sorted(passed) == sorted(set(keys))


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 50)), max_size=100),
       st.integers(1, 20))
def test_snapshot_round_trip_gives_the_same_answers(keys, cap):
    d = Deduplicator(per_meter=cap)
    d.add_all(keys)
    r = Deduplicator.from_snapshot(json.loads(json.dumps(d.snapshot())), per_meter=cap)
    for k in [(m, i) for m in ("a", "b") for i in range(51)]:
        assert (k in d) == (k in r)


def test_deadletter_record_keeps_text_payload():
    raw = b'{"meter": "x", "value": NaN}'
    rec = json.loads(deadletter_record(raw=raw, reason="not_finite", message="NaN!",
                                       mqtt_topic="parkmon/p/e/readings", received_ms=7,
                                       index=None, meter="x"))
    assert rec["payload_encoding"] == "utf-8" and decode_deadletter_payload(rec) == raw
    assert (rec["reason"], rec["message"], rec["mqtt_topic"], rec["received_ms"]) == (
        "not_finite", "NaN!", "parkmon/p/e/readings", 7)


def test_deadletter_record_base64_for_binary_and_truncated_when_huge():
    raw = b"\xff\x00" * (DEADLETTER_PAYLOAD_MAX)
    rec = json.loads(deadletter_record(raw=raw, reason="oversized", message="big",
                                       mqtt_topic="t", received_ms=1))
    assert rec["payload_encoding"] == "base64" and rec["payload_truncated"] is True
    assert rec["payload_bytes"] == len(raw)
    assert decode_deadletter_payload(rec) == raw[:DEADLETTER_PAYLOAD_MAX]


class _Acks:
    def __init__(self):
        self.acked: list[int] = []

    def __call__(self, mid, qos, gen):
        self.acked.append(mid)
        return True


def test_message_acked_only_after_its_last_record_is_delivered():
    acks = _Acks()
    t = _Tracker(acks, GatewayMetrics(), on_failure=lambda p, e, m: None)
    p = t.begin(mid=11, qos=1, generation=1)
    t.expect(p, 3)
    p.delivered(None, None)
    t.seal(p)            # producing finished, 2 records still outstanding
    p.delivered(None, None)
    assert acks.acked == []
    p.delivered(None, None)
    assert acks.acked == [11] and t.inflight == 0


def test_message_without_records_is_acked_when_sealed():
    acks = _Acks()
    t = _Tracker(acks, GatewayMetrics(), on_failure=lambda p, e, m: None)
    p = t.begin(mid=3, qos=1, generation=1)
    t.seal(p)
    assert acks.acked == [3]


def test_failed_delivery_is_reported_and_never_acked():
    acks, failed = _Acks(), []
    t = _Tracker(acks, GatewayMetrics(), on_failure=lambda p, e, m: failed.append(e))
    p = t.begin(mid=5, qos=1, generation=1)
    t.expect(p, 2)
    t.seal(p)
    p.delivered("topic authorization failed", None)
    p.delivered(None, None)
    assert failed == ["topic authorization failed"] and acks.acked == []


@given(st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True), st.integers(0, 2**53),
       st.floats(allow_nan=False, allow_infinity=False), st.one_of(st.none(), st.integers(0, 2**40)),
       st.one_of(st.none(), st.sampled_from(["good", "uncertain", "bad"]),
                 st.sampled_from(list(Quality)), st.text(max_size=4)))
def test_fast_reading_json_is_the_contract_json(meter, ts_ms, value, seq, quality):
    from ingest.gateway import reading_json

    rd = Reading(meter, ts_ms, value, seq, quality)
    assert reading_json(rd) == rd.to_json()  # byte for byte
    back = Reading.from_json(reading_json(rd))
    assert (back.meter, back.ts_ms, back.value, back.seq) == (meter, ts_ms, value, seq)
    assert back.quality == (None if quality in (None, "good") else quality)


def test_metrics_exposition_counts_completions_and_inflight():
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    m = GatewayMetrics()
    m.messages_received = 3
    m.rejected["schema"] += 2
    m.complete(True, 0.003)
    m.complete(False, 0.2)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(generate_latest(m.registry).decode())
               for s in fam.samples}
    assert samples[("parkmon_gateway_messages_acked_total", ())] == 1
    assert samples[("parkmon_gateway_inflight_messages", ())] == 1
    assert samples[("parkmon_gateway_readings_rejected_total", (("reason", "schema"),))] == 2
    assert samples[("parkmon_gateway_kafka_produce_latency_seconds_count", ())] == 2
    assert samples[("parkmon_gateway_kafka_produce_latency_seconds_bucket",
                    (("le", "0.005"),))] == 1
    assert samples[("parkmon_gateway_kafka_produce_latency_seconds_sum", ())] == \
        pytest.approx(0.203)


# -- the gateway's per-message path (validate -> dedup -> produce) with a fake Kafka seam ---------

class _FakeOut:
    """Stands in for `KafkaOut` (its `produce` seam): keeps the records, reports each delivered."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic, value, key, on_delivery):
        self.records.append((topic, key, value))
        if on_delivery is not None:
            on_delivery(None, None)


@pytest.fixture
def gateway():
    from pathlib import Path

    from ingest.gateway import Gateway
    from parkmon.config import GatewaySettings, KafkaSettings, MqttSettings
    from parkmon.park import load_park

    park = load_park(Path(__file__).parent / "data" / "gateway_park.yaml")
    gw = Gateway(park, gateway=GatewaySettings(metrics_port=-1),
                 mqtt_settings=MqttSettings(client_id="gw-unit"),
                 kafka=KafkaSettings(bootstrap="127.0.0.1:9"), now_ms=lambda: NOW_MS)
    gw.out = _FakeOut()  # type: ignore[assignment]
    acked: list[int] = []
    gw.tracker._ack = lambda mid, qos, gen: acked.append(mid) or True
    gw.acked = acked  # type: ignore[attr-defined]
    return gw


NOW_MS = 1_800_000_000_000
TOPIC = "parkmon/gwtest/powerco/readings"


def _send(gw, mid, **fields):
    doc = {"meter": "powerco.power_rate", "ts_ms": NOW_MS, "value": 10.0, "unit": "MW", **fields}
    gw.handle(TOPIC, json.dumps(doc).encode(), mid, 1, 1)


def _produced(gw):
    readings = [json.loads(v) for t, _k, v in gw.out.records if t == gw.topics.readings]
    dead = [json.loads(v) for t, _k, v in gw.out.records if t == gw.topics.deadletter]
    return readings, dead


@pytest.mark.parametrize("seq", [None, 7])
def test_bad_reading_does_not_take_the_dedup_slot_of_its_key(gateway, seq):
    extra = {} if seq is None else {"seq": seq}
    _send(gateway, 1, value=999.0, quality="bad", **extra)
    _send(gateway, 2, value=10.0, **extra)               # the corrected reading, same key
    _send(gateway, 3, value=10.0, **extra)               # a redelivery of it: a duplicate
    readings, dead = _produced(gateway)
    assert readings == [{"meter": "powerco.power_rate", "ts_ms": NOW_MS, "value": 10.0, **extra}]
    assert [(d["reason"], d["meter"], d["index"]) for d in dead] == [
        ("device_quality_bad", "powerco.power_rate", None)]
    assert "the device flagged this reading bad" in dead[0]["message"]
    assert json.loads(dead[0]["payload"])["quality"] == "bad"
    m = gateway.metrics
    assert (m.readings_received, m.readings_accepted, m.duplicates) == (3, 1, 1)
    assert m.rejected["device_quality_bad"] == 1 and m.readings_uncertain == 0
    assert gateway.acked == [1, 2, 3]  # every message has an outcome and is acknowledged


def test_bad_reading_after_a_good_one_is_dead_lettered_not_a_duplicate(gateway):
    _send(gateway, 1, seq=4)
    _send(gateway, 2, seq=4, quality="bad")
    readings, dead = _produced(gateway)
    assert [r["seq"] for r in readings] == [4]
    assert [d["reason"] for d in dead] == ["device_quality_bad"]
    assert gateway.metrics.duplicates == 0


def test_uncertain_readings_keep_the_flag_and_are_counted_once(gateway):
    _send(gateway, 1, seq=1, quality="uncertain")
    _send(gateway, 2, seq=1, quality="uncertain")        # redelivery: a duplicate, not recounted
    _send(gateway, 3, seq=2, quality="good")
    batch = {"readings": [
        {"meter": "powerco.power_rate", "ts_ms": NOW_MS + 1, "value": 1.0, "unit": "MW",
         "seq": 3, "quality": "uncertain"},
        {"meter": "powerco.power_rate", "ts_ms": NOW_MS + 2, "value": 2.0, "unit": "MW",
         "seq": 4, "quality": "bad"},
        {"meter": "powerco.power_rate", "ts_ms": NOW_MS + 3, "value": 3.0, "unit": "MW",
         "seq": 5}]}
    gateway.handle(TOPIC, json.dumps(batch).encode(), 4, 1, 1)
    readings, dead = _produced(gateway)
    assert [(r["seq"], r.get("quality")) for r in readings] == [
        (1, "uncertain"), (2, None), (3, "uncertain"), (5, None)]
    assert [(d["reason"], d["index"]) for d in dead] == [("device_quality_bad", 1)]
    m = gateway.metrics
    assert (m.readings_accepted, m.readings_uncertain, m.duplicates) == (4, 2, 1)
    assert m.rejected["device_quality_bad"] == 1


def test_metrics_exposition_has_uncertain_and_quality_rejections(gateway):
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    _send(gateway, 1, quality="uncertain")
    _send(gateway, 2, ts_ms=NOW_MS + 1, quality="bad")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(
                   generate_latest(gateway.metrics.registry).decode())
               for s in fam.samples}
    assert samples[("parkmon_gateway_readings_uncertain_total", ())] == 1
    assert samples[("parkmon_gateway_readings_accepted_total", ())] == 1
    assert samples[("parkmon_gateway_readings_rejected_total",
                    (("reason", "device_quality_bad"),))] == 1
