"""`parkmon gateway` (its own process) against the real Mosquitto and Kafka.

A corpus of bad payloads and a hypothesis-generated fuzz stream: every message ends accepted,
dead-lettered with the right reason, or counted as a duplicate, and the gateway keeps running.
The secure broker refuses anonymous clients and devices publishing for another enterprise.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.dedup import Deduplicator
from ingest.validate import Limits, Validator
from parkmon.contracts import Reason, kafka_deadletter_topic, kafka_readings_topic, mqtt_topic
from parkmon.park import load_park
from tests.support.ingest import GatewayProcess, Publisher, park_yaml, read_topic, unique

pytestmark = pytest.mark.integration

MAX_PAYLOAD = 64 * 1024


class Running:
    """A gateway process on a fresh park with its own MQTT and Kafka topics."""

    def __init__(self, gw: GatewayProcess, park_id: str, park_file: Path, bootstrap: str,
                 enterprises: tuple[str, str]) -> None:
        self.gw, self.park_id, self.park_file, self.bootstrap = gw, park_id, park_file, bootstrap
        self.a, self.b = enterprises
        self.readings_topic = kafka_readings_topic(park_id)
        self.deadletter_topic = kafka_deadletter_topic(park_id)

    def topic(self, enterprise: str | None = None) -> str:
        return mqtt_topic(self.park_id, enterprise or self.a)

    def wait_acked(self, n: int, timeout_s: float = 60.0) -> dict[str, float]:
        deadline = time.monotonic() + timeout_s
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            m = self.gw.metrics()
            if (m.get("parkmon_gateway_messages_acked_total", 0) >= n
                    and m.get("parkmon_gateway_inflight_messages", 1) == 0):
                return m
            time.sleep(0.1)
        raise AssertionError(f"gateway acknowledged "
                             f"{m.get('parkmon_gateway_messages_acked_total')} of {n} messages")

    def deadletters(self) -> list[dict[str, Any]]:
        return [json.loads(v) for _k, v in read_topic(self.bootstrap, self.deadletter_topic)]

    def readings(self) -> list[dict[str, Any]]:
        return [json.loads(v) for _k, v in read_topic(self.bootstrap, self.readings_topic)]


def start_gateway(tmp: Path, host: str, port: int, bootstrap: str,
                  env: dict[str, str] | None = None, enterprises: tuple[str, str] | None = None
                  ) -> Running:
    park_id = unique("gwit").replace("-", "_")
    ents = enterprises or ("powerco", "boardco")
    park_file = tmp / f"{park_id}.yaml"
    park_file.write_text(park_yaml(park_id, ents))
    gw = GatewayProcess(park_file, host, port, bootstrap, unique("gw"), tmp / f"{park_id}.log",
                        env_extra={"PARKMON_GATEWAY_MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD),
                                   **(env or {})})
    gw.start()
    return Running(gw, park_id, park_file, bootstrap, ents)


@pytest.fixture(scope="module")
def gateway_factory(tmp_path_factory: pytest.TempPathFactory, mosquitto: Any, kafka: Any
                    ) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []
    tmp = tmp_path_factory.mktemp("gateway")

    def make(**kw: Any) -> Running:
        r = start_gateway(tmp, mosquitto.host, mosquitto.port, kafka.bootstrap, **kw)
        started.append(r)
        return r

    yield make
    for r in started:
        if r.gw.alive():
            assert r.gw.terminate() == 0, r.gw.log_tail()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the corpus ----------------------------------------------------------------------------------

def test_bad_payload_corpus_is_dead_lettered_with_the_right_reason(gateway_factory):
    g = gateway_factory()
    t = now_ms()
    a, b = g.a, g.b
    rate, steam = f"{a}.power_rate", f"{a}.steam_out"

    def rd(meter=rate, ts=t, value=10.0, unit="MW", **kw: Any) -> bytes:
        return json.dumps({"meter": meter, "ts_ms": ts, "value": value, "unit": unit, **kw}
                          ).encode()

    good = rd(seq=1)
    oversized = b'{"x":"' + b"y" * (MAX_PAYLOAD + 10) + b'"}'
    corpus: list[tuple[str, bytes, Reason | None]] = [
        (g.topic(), good[:-7], Reason.INVALID_JSON),                          # truncated
        (g.topic(), b"\x00\xffbinary\xfe", Reason.INVALID_JSON),
        (g.topic(), b"", Reason.INVALID_JSON),
        (g.topic(), rd(value="ten"), Reason.SCHEMA),                          # wrong types
        (g.topic(), rd(ts="yesterday"), Reason.SCHEMA),
        (g.topic(), json.dumps({"meter": rate, "value": 1, "unit": "MW"}).encode(), Reason.SCHEMA),
        (g.topic(), b"[1, 2, 3]", Reason.SCHEMA),
        (g.topic(), b'{"readings": "all of them"}', Reason.SCHEMA),
        (g.topic(), b'{"meter":"%s","ts_ms":%d,"value":NaN,"unit":"MW"}' % (rate.encode(), t),
         Reason.NOT_FINITE),
        (g.topic(), b'{"meter":"%s","ts_ms":%d,"value":-Infinity,"unit":"MW"}'
         % (rate.encode(), t), Reason.NOT_FINITE),
        (g.topic(), b'{"meter":"%s","ts_ms":%d,"value":1e400,"unit":"MW"}' % (rate.encode(), t),
         Reason.NOT_FINITE),
        (g.topic(), rd(meter=f"{a}.no_such_meter"), Reason.UNKNOWN_METER),
        (g.topic(), rd(unit="MWh"), Reason.UNIT_MISMATCH),                    # quantity on a rate
        (g.topic(), rd(meter=steam, unit="t"), Reason.UNIT_MISMATCH),
        (g.topic(), rd(unit="megablorps"), Reason.UNKNOWN_UNIT),
        (g.topic(), rd(value=9_999.0), Reason.OUT_OF_RANGE),
        (g.topic(), rd(ts=t + 365 * 86_400_000), Reason.TS_FUTURE),           # far future
        (g.topic(), rd(ts=t - 30 * 86_400_000), Reason.TS_PAST),
        (g.topic(), oversized, Reason.OVERSIZED),
        (g.topic("ghostco"), good, Reason.WRONG_TOPIC),                       # no such enterprise
        (g.topic(b), rd(), Reason.METER_NOT_OF_ENTERPRISE),                   # A's meter on B's topic
        # negative counter step: a baseline (accepted), then a lower value later in event time
        (g.topic(), rd(meter=steam, ts=t - 2000, value=5_000.0, unit="MWh"), None),
        (g.topic(), rd(meter=steam, ts=t - 1000, value=4_000.0, unit="MWh"),
         Reason.NEGATIVE_COUNTER_STEP),
    ]
    accepted_payloads = [good, rd(seq=2, value=11.0), rd(meter=steam, ts=t, value=18_360.0,
                                                         unit="GJ")]
    pub = Publisher(g.gw.mqtt_host, g.gw.mqtt_port)
    assert pub.wait_connected()
    for topic, payload, _reason in corpus:
        pub.publish(topic, payload)
    for payload in accepted_payloads:
        pub.publish(g.topic(), payload)
    pub.publish(g.topic(), good)  # a redelivered / republished copy: a counted duplicate
    # a batch with good and bad readings: the good ones go through, each bad one is reported
    batch = {"readings": [json.loads(rd(seq=10, value=1.0)), json.loads(rd(meter="nope")),
                          json.loads(rd(seq=11, value=2.0)), json.loads(rd(value=-5.0))]}
    batch_bytes = json.dumps(batch).encode()
    pub.publish(g.topic(), batch_bytes)
    assert pub.wait_all(60)
    pub.close()
    n_messages = len(corpus) + len(accepted_payloads) + 2
    m = g.wait_acked(n_messages)

    dls = g.deadletters()
    by_sha: dict[str, list[dict[str, Any]]] = {}
    for rec in dls:
        by_sha.setdefault(rec.get("batch_sha256") or rec["payload_sha256"], []).append(rec)
    for topic, payload, reason in corpus:
        if reason is None:
            continue
        recs = by_sha.get(sha(payload), [])
        assert [r["reason"] for r in recs] == [reason.value], (payload[:80], recs)
        rec = recs[0]
        assert rec["mqtt_topic"] == topic and rec["message"]
        assert rec["payload_bytes"] == len(payload)
        if rec["payload_encoding"] == "utf-8" and not rec["payload_truncated"]:
            assert rec["payload"].encode() == payload
    assert by_sha[sha(b"\x00\xffbinary\xfe")][0]["payload_encoding"] == "base64"
    assert by_sha[sha(oversized)][0]["payload_truncated"] is True
    batch_recs = sorted(by_sha[sha(batch_bytes)], key=lambda r: r["index"])
    assert [(r["index"], r["reason"]) for r in batch_recs] == [
        (1, Reason.UNKNOWN_METER.value), (3, Reason.OUT_OF_RANGE.value)]
    assert json.loads(batch_recs[0]["payload"])["meter"] == "nope"

    readings = g.readings()
    keys = sorted((r["meter"], r.get("seq"), r["ts_ms"]) for r in readings)
    assert keys == sorted([(rate, 1, t), (rate, 2, t), (steam, None, t), (steam, None, t - 2000),
                           (rate, 10, t), (rate, 11, t)])
    gj = [r for r in readings if r["meter"] == steam and r["ts_ms"] == t][0]
    assert gj["value"] == pytest.approx(5_100.0)  # 18360 GJ normalised to MWh
    assert m["parkmon_gateway_duplicates_total"] == 1
    rejected = {k: v for k, v in m.items() if k.startswith("parkmon_gateway_readings_rejected_total")}
    assert sum(rejected.values()) == len(dls)
    health = g.gw.health()
    assert health is not None and health["status"] == "ok" and g.gw.alive()


# -- the device's quality flag -------------------------------------------------------------------

def test_device_quality_bad_is_dead_lettered_uncertain_kept_good_unchanged(gateway_factory):
    g = gateway_factory()
    t = now_ms()
    rate, steam = f"{g.a}.power_rate", f"{g.a}.steam_out"

    def rd(meter: str = rate, ts: int = t, value: float = 10.0, unit: str = "MW",
           **kw: Any) -> dict[str, Any]:
        return {"meter": meter, "ts_ms": ts, "value": value, "unit": unit, **kw}

    pub = Publisher(g.gw.mqtt_host, g.gw.mqtt_port)
    assert pub.wait_connected()
    good = json.dumps(rd(seq=1)).encode()
    uncertain = json.dumps(rd(value=11.0, seq=2, quality="uncertain")).encode()
    flagged_good = json.dumps(rd(value=12.0, seq=3, quality="good")).encode()
    # a counter whose register glitched: the device flags it bad (value above the truth)
    baseline = json.dumps(rd(steam, t - 2000, 5_000.0, "MWh")).encode()
    bad = json.dumps(rd(steam, t - 1000, 6_000.0, "MWh", quality="bad")).encode()
    batch = json.dumps({"v": 1, "source": "edge-q", "readings": [
        rd(value=1.0, ts=t + 1, seq=10, quality="bad"),
        rd(value=2.0, ts=t + 2, seq=11, quality="uncertain"),
        rd(value=3.0, ts=t + 3, seq=12)]}).encode()
    for payload in (good, uncertain, flagged_good, baseline, bad, batch):
        pub.publish(g.topic(), payload)
    assert pub.wait_all(60)
    g.wait_acked(6)
    # then the corrected readings for the same keys: neither is taken for a duplicate; and the
    # next counter value is no negative step (against the bad 6000 it would be one)
    corrected = json.dumps(rd(steam, t - 1000, 5_010.0, "MWh")).encode()
    corrected_batch_item = json.dumps(rd(value=1.5, ts=t + 1, seq=10)).encode()
    steam_next = json.dumps(rd(steam, t, 5_020.0, "MWh")).encode()
    for payload in (corrected, corrected_batch_item, steam_next):
        pub.publish(g.topic(), payload)
    assert pub.wait_all(60)
    pub.close()
    m = g.wait_acked(9)

    dead = g.deadletters()
    assert sorted((d["reason"], d["meter"], d["index"]) for d in dead) == sorted([
        (Reason.DEVICE_QUALITY_BAD.value, steam, None), (Reason.DEVICE_QUALITY_BAD.value, rate, 0)])
    single = next(d for d in dead if d["index"] is None)
    assert single["payload_sha256"] == sha(bad) and single["mqtt_topic"] == g.topic()
    assert f"meter '{steam}' at ts_ms {t - 1000}" in single["message"]
    assert "the device flagged this reading bad" in single["message"]
    item = next(d for d in dead if d["index"] == 0)
    assert item["batch_sha256"] == sha(batch) and json.loads(item["payload"])["quality"] == "bad"
    assert item["message"].startswith(f"reading 0: meter '{rate}' at ts_ms {t + 1}")

    values = [v for _k, v in read_topic(g.bootstrap, g.readings_topic)]
    readings = [json.loads(v) for v in values]
    raw = {(r["meter"], r["ts_ms"], r.get("seq")): v for r, v in zip(readings, values, strict=True)}
    # good readings: the record is byte for byte what it was before the flag existed
    assert raw[(rate, t, 1)] == (b'{"meter":"%s","ts_ms":%d,"value":10.0,"seq":1}'
                                 % (rate.encode(), t))
    assert raw[(rate, t, 3)] == (b'{"meter":"%s","ts_ms":%d,"value":12.0,"seq":3}'
                                 % (rate.encode(), t))
    assert raw[(rate, t, 2)] == (b'{"meter":"%s","ts_ms":%d,"value":11.0,"seq":2,'
                                 b'"quality":"uncertain"}' % (rate.encode(), t))
    assert sorted((r["meter"], r["ts_ms"], r["value"], r.get("seq"), r.get("quality"))
                  for r in readings) == sorted([
        (rate, t, 10.0, 1, None), (rate, t, 11.0, 2, "uncertain"), (rate, t, 12.0, 3, None),
        (steam, t - 2000, 5_000.0, None, None), (steam, t - 1000, 5_010.0, None, None),
        (steam, t, 5_020.0, None, None),
        (rate, t + 2, 2.0, 11, "uncertain"), (rate, t + 3, 3.0, 12, None),
        (rate, t + 1, 1.5, 10, None)])
    assert len(readings) == len(raw)  # nothing produced twice
    assert m["parkmon_gateway_readings_uncertain_total"] == 2
    assert m['parkmon_gateway_readings_rejected_total{reason="device_quality_bad"}'] == 2
    assert m["parkmon_gateway_readings_accepted_total"] == 9
    assert m["parkmon_gateway_duplicates_total"] == 0
    assert m["parkmon_gateway_counter_resets_total"] == 0
    assert g.gw.alive()


# -- fuzz ----------------------------------------------------------------------------------------

class FuzzState:
    def __init__(self, g: Running) -> None:
        self.g = g
        park = load_park(g.park_file)
        self.validator = Validator(park, now_ms=now_ms,
                                   limits=Limits(max_payload_bytes=MAX_PAYLOAD))
        self.dedup = Deduplicator()
        self.expected_reasons: Counter[str] = Counter()
        self.expected_readings = 0
        self.expected_uncertain = 0
        self.published = 0
        self.pub = Publisher(g.gw.mqtt_host, g.gw.mqtt_port)
        assert self.pub.wait_connected()

    def send(self, topic: str, payload: bytes) -> None:
        """Publish, and predict the outcome with the same pure core (an oracle in this process)."""
        res = self.validator.validate(topic, payload)
        for rd in res.accepted:
            if not self.dedup.seen_or_add(rd.meter, rd.ts_ms if rd.seq is None else rd.seq):
                self.expected_readings += 1
                self.expected_uncertain += rd.quality == "uncertain"
        for rj in res.rejections:
            self.expected_reasons[rj.reason.value] += 1
        self.pub.publish(topic, payload)
        self.published += 1


@pytest.fixture(scope="module")
def fuzz(gateway_factory) -> Iterator[FuzzState]:
    state = FuzzState(gateway_factory())
    yield state
    state.pub.close()


_DAY = 86_400_000


@st.composite
def fuzz_reading(draw: Any, a: str, b: str) -> Any:
    meter = draw(st.sampled_from([f"{a}.power_rate", f"{a}.steam_out", f"{a}.gypsum_out",
                                  f"{b}.water_in", "ghost.meter", "bad meter"]))
    unit = draw(st.sampled_from(["MW", "kW", "MWh", "GJ", "kWh", "t", "kg", "m3/h", "t/h",
                                 "blorp", "", 7]))
    value: Any = draw(st.one_of(st.floats(-10, 2e6), st.integers(-10, 10**7),
                                st.sampled_from([float("nan"), float("inf"), -float("inf")]),
                                st.text(max_size=3), st.none()))
    offset = draw(st.sampled_from([0, -1, -60_000, 60_000, 400 * _DAY, -400 * _DAY]))
    ts: Any = draw(st.sampled_from(["now", "now", "now", "neg", "str", "float"]))
    base = now_ms() + offset
    ts_ms = {"now": base, "neg": -5, "str": "x", "float": base + 0.5}[ts]
    doc: dict[str, Any] = {"meter": meter, "ts_ms": ts_ms, "value": value, "unit": unit}
    if draw(st.booleans()):
        doc["seq"] = draw(st.integers(-1, 50))
    if draw(st.integers(0, 3)) == 0:
        doc["quality"] = draw(st.sampled_from(["good", "uncertain", "bad", "BAD"]))
    if draw(st.integers(0, 9)) == 0:
        doc.pop(draw(st.sampled_from(sorted(doc))))
    if draw(st.integers(0, 9)) == 0:
        doc["extra"] = 1
    return doc


@st.composite
def fuzz_message(draw: Any, a: str, b: str) -> tuple[str, bytes]:
    enterprise = draw(st.sampled_from([a, a, a, b, "ghostco"]))
    kind = draw(st.sampled_from(["single", "single", "batch", "bytes", "truncated"]))
    if kind == "bytes":
        payload = draw(st.binary(max_size=64))
    else:
        doc: Any = draw(fuzz_reading(a, b)) if kind != "batch" else {
            "readings": draw(st.lists(fuzz_reading(a, b), min_size=0, max_size=6))}
        payload = json.dumps(doc).encode()
        if kind == "truncated":
            payload = payload[: draw(st.integers(0, max(0, len(payload) - 1)))]
    return f"parkmon/PARK/{enterprise}/readings", payload


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzzed_payloads_all_end_accepted_rejected_or_duplicate(fuzz: FuzzState, data: Any):
    g = fuzz.g
    messages = data.draw(st.lists(fuzz_message(g.a, g.b), min_size=40, max_size=40))
    for topic, payload in messages:
        fuzz.send(topic.replace("PARK", g.park_id), payload)
    assert fuzz.pub.wait_all(60)
    m = g.wait_acked(fuzz.published)
    assert m["parkmon_gateway_messages_received_total"] == fuzz.published
    got = Counter(rec["reason"] for rec in g.deadletters())
    assert got == fuzz.expected_reasons
    assert all(reason in {r.value for r in Reason} for reason in got)
    assert len(g.readings()) == fuzz.expected_readings
    assert m["parkmon_gateway_readings_uncertain_total"] == fuzz.expected_uncertain
    assert g.gw.alive() and (g.gw.health() or {}).get("status") == "ok"


# -- security ------------------------------------------------------------------------------------

def _connect_rc(host: str, port: int, username: str | None = None,
                password: str | None = None) -> Any:
    done = threading.Event()
    out: dict[str, Any] = {}

    def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        out["rc"] = rc
        done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=unique("anon"),
                    protocol=mqtt.MQTTv5)
    if username:
        c.username_pw_set(username, password)
    c.on_connect = on_connect
    c.connect(host, port)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()
    return out.get("rc")


def test_secure_broker_refuses_anonymous_and_foreign_enterprise_topics(tmp_path, mosquitto_secure,
                                                                       kafka):
    suffix = unique("e").replace("-", "")[-8:]
    ents = (f"pw{suffix}", f"bd{suffix}")
    park_id = unique("gwsec").replace("-", "_")
    park_file = tmp_path / "park.yaml"
    park_file.write_text(park_yaml(park_id, ents))
    gw_cred = mosquitto_secure.gateway(park_id)
    dev_a = mosquitto_secure.device(ents[0], park_id)
    gw = GatewayProcess(park_file, mosquitto_secure.host, mosquitto_secure.port, kafka.bootstrap,
                        unique("gw"), tmp_path / "gw.log",
                        env_extra={"PARKMON_MQTT_USERNAME": gw_cred.username,
                                   "PARKMON_MQTT_PASSWORD": gw_cred.password})
    gw.start()
    try:
        assert "password" not in gw.log_file.read_text().lower() or \
            gw_cred.password not in gw.log_file.read_text()
        rc = _connect_rc(mosquitto_secure.host, mosquitto_secure.port)
        assert rc is not None and rc.is_failure, f"anonymous client was accepted: {rc}"
        rc = _connect_rc(mosquitto_secure.host, mosquitto_secure.port, dev_a.username, "wrong")
        assert rc is not None and rc.is_failure

        pub = Publisher(mosquitto_secure.host, mosquitto_secure.port, username=dev_a.username,
                        password=dev_a.password)
        assert pub.wait_connected()
        t = now_ms()
        foreign = json.dumps({"meter": f"{ents[1]}.water_in", "ts_ms": t, "value": 1.0,
                              "unit": "m3/h", "seq": 1}).encode()
        own = json.dumps({"meter": f"{ents[0]}.power_rate", "ts_ms": t, "value": 1.0,
                          "unit": "MW", "seq": 1}).encode()
        pub.publish(mqtt_topic(park_id, ents[1]), foreign)  # B's topic: refused by the ACL
        pub.publish(mqtt_topic(park_id, ents[0]), own)
        assert pub.wait_all(30)
        pub.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if gw.metrics().get("parkmon_gateway_messages_acked_total", 0) >= 1:
                break
            time.sleep(0.1)
        time.sleep(1.0)  # anything else the broker would have forwarded arrives by now
        m = gw.metrics()
        assert m["parkmon_gateway_messages_received_total"] == 1
        readings = [json.loads(v) for _k, v in read_topic(kafka.bootstrap,
                                                           kafka_readings_topic(park_id))]
        assert [(r["meter"], r["seq"]) for r in readings] == [(f"{ents[0]}.power_rate", 1)]
        assert read_topic(kafka.bootstrap, kafka_deadletter_topic(park_id)) == []
    finally:
        assert gw.terminate() == 0, gw.log_tail()


def test_gateway_with_wrong_password_reports_unhealthy(tmp_path, mosquitto_secure, kafka):
    park_id = unique("gwbad").replace("-", "_")
    park_file = tmp_path / "park.yaml"
    park_file.write_text(park_yaml(park_id))
    gw = GatewayProcess(park_file, mosquitto_secure.host, mosquitto_secure.port, kafka.bootstrap,
                        unique("gw"), tmp_path / "gw.log",
                        env_extra={"PARKMON_MQTT_USERNAME": "gateway",
                                   "PARKMON_MQTT_PASSWORD": "not-the-password"})
    gw.start(wait_healthy_s=0)
    try:
        deadline = time.monotonic() + 30
        h: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            h = gw.health()
            if h is not None and h.get("mqtt_error"):
                break
            time.sleep(0.2)
        assert h is not None and h["status"] == "unhealthy" and "refused" in h["mqtt_error"]
        assert "not-the-password" not in gw.log_file.read_text()
    finally:
        assert gw.terminate() == 0, gw.log_tail()


def test_shared_subscription_splits_the_stream_between_gateways(tmp_path, mosquitto, kafka):
    park_id = unique("gwshare").replace("-", "_")
    park_file = tmp_path / "park.yaml"
    park_file.write_text(park_yaml(park_id))
    group = unique("grp")
    gws = [GatewayProcess(park_file, mosquitto.host, mosquitto.port, kafka.bootstrap,
                          unique("gw"), tmp_path / f"gw{i}.log",
                          env_extra={"PARKMON_MQTT_SHARE_GROUP": group}) for i in range(2)]
    for gw in gws:
        gw.start()
    try:
        n, t = 400, now_ms()
        pub = Publisher(mosquitto.host, mosquitto.port)
        assert pub.wait_connected()
        for i in range(n):
            pub.publish(mqtt_topic(park_id, "powerco"), json.dumps(
                {"meter": "powerco.power_rate", "ts_ms": t + i, "value": 1.0, "unit": "MW",
                 "seq": i}).encode())
        assert pub.wait_all(60)
        pub.close()
        deadline = time.monotonic() + 60
        received: list[float] = []
        while time.monotonic() < deadline:
            received = [gw.metrics().get("parkmon_gateway_messages_acked_total", 0) for gw in gws]
            if sum(received) >= n:
                break
            time.sleep(0.2)
        assert sum(received) == n and all(r > 0 for r in received), received
        seqs = sorted(json.loads(v)["seq"] for _k, v in read_topic(kafka.bootstrap,
                                                                   kafka_readings_topic(park_id)))
        assert seqs == list(range(n))
    finally:
        for gw in gws:
            assert gw.terminate() == 0, gw.log_tail()


def _tls_broker(tmp: Path) -> tuple[Any, int, Path]:
    """A Mosquitto with a TLS listener and a CA / server certificate made here (our process)."""
    import getpass
    import subprocess

    from tests.support.ingest import free_port

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=tmp)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=parkmon-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
        "-out", "server.csr")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    port = free_port()
    (tmp / "mosquitto.conf").write_text(
        f"user {getpass.getuser()}\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
        "persistence false\n"
        f"cafile {tmp / 'ca.crt'}\ncertfile {tmp / 'server.crt'}\nkeyfile {tmp / 'server.key'}\n"
        "log_dest stdout\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(tmp / "mosquitto.conf")],
                            stdout=open(tmp / "mosquitto.log", "wb"), stderr=subprocess.STDOUT)
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    return proc, port, tmp / "ca.crt"


def test_gateway_over_tls(tmp_path, kafka):
    proc, port, ca = _tls_broker(tmp_path)
    park_id = unique("gwtls").replace("-", "_")
    park_file = tmp_path / "park.yaml"
    park_file.write_text(park_yaml(park_id))
    gw = GatewayProcess(park_file, "127.0.0.1", port, kafka.bootstrap, unique("gw"),
                        tmp_path / "gw.log",
                        env_extra={"PARKMON_MQTT_TLS": "true", "PARKMON_MQTT_TLS_CA": str(ca)})
    try:
        gw.start()
        pub = Publisher("127.0.0.1", port, tls_ca=str(ca))
        assert pub.wait_connected()
        pub.publish(mqtt_topic(park_id, "powerco"), json.dumps(
            {"meter": "powerco.power_rate", "ts_ms": now_ms(), "value": 3.0, "unit": "MW",
             "seq": 1}).encode())
        assert pub.wait_all(30)
        pub.close()
        deadline = time.monotonic() + 30
        readings: list[tuple[bytes, bytes]] = []
        while time.monotonic() < deadline and not readings:
            readings = read_topic(kafka.bootstrap, kafka_readings_topic(park_id))
            time.sleep(0.2)
        assert [json.loads(v)["seq"] for _k, v in readings] == [1]
    finally:
        if gw.alive():
            assert gw.terminate() == 0, gw.log_tail()
        proc.terminate()
        proc.wait(10)
