"""Validation and normalisation of reading payloads (ingest.validate, ingest.payload_schema)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import payload_schema as ps
from ingest.validate import CounterSteps, Limits, Validator
from parkmon.contracts import Reason
from parkmon.park import load_park

pytestmark = pytest.mark.unit

PARK_FILE = Path(__file__).parent / "data" / "gateway_park.yaml"
NOW = 1_800_000_000_000
POWER = "parkmon/gwtest/powerco/readings"
BOARD = "parkmon/gwtest/boardco/readings"


@pytest.fixture(scope="module")
def park():
    return load_park(PARK_FILE)


@pytest.fixture
def clock():
    return {"now": NOW}


@pytest.fixture
def v(park, clock):
    return Validator(park, now_ms=lambda: clock["now"],
                     limits=Limits(max_payload_bytes=4096, max_future_ms=60_000,
                                   max_past_ms=3_600_000, counter_reset_fraction=0.05))


def reading(meter="powerco.power_rate", ts_ms=NOW, value=10.0, unit="MW", **extra):
    return {"meter": meter, "ts_ms": ts_ms, "value": value, "unit": unit, **extra}


def enc(doc) -> bytes:
    return json.dumps(doc).encode()


def only_reason(res):
    assert not res.accepted
    assert len(res.rejections) == 1
    return res.rejections[0].reason


# -- accepted readings are normalised ------------------------------------------------------------

@pytest.mark.parametrize(("meter", "value", "unit", "canonical"), [
    ("powerco.power_rate", 250.0, "MW", 250.0),          # MW is MWh/h
    ("powerco.power_rate", 250_000.0, "kW", 250.0),
    ("powerco.steam_out", 3_600.0, "GJ", 1_000.0),      # 1 GJ = 1/3.6 MWh
    ("powerco.steam_out", 2_000.0, "kWh", 2.0),
    ("powerco.gypsum_out", 1_500.0, "kg", 1.5),
])
def test_accepted_reading_in_canonical_unit(v, meter, value, unit, canonical):
    res = v.validate(POWER, enc(reading(meter, value=value, unit=unit, seq=7)))
    assert not res.rejections
    (rd,) = res.accepted
    assert rd.meter == meter and rd.ts_ms == NOW and rd.seq == 7
    assert rd.value == pytest.approx(canonical, rel=1e-12)


def test_integral_float_timestamp_is_an_integer(v):
    res = v.validate(POWER, enc(reading(ts_ms=float(NOW))))
    assert [r.ts_ms for r in res.accepted] == [NOW]


# -- each reason ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("topic", "payload", "reason"), [
    (POWER, b'{"meter": "powerco.power_rate", "ts_ms": 1', Reason.INVALID_JSON),
    (POWER, b"\xff\xfe not utf-8", Reason.INVALID_JSON),
    (POWER, b"[" * 5000 + b"]" * 5000, Reason.OVERSIZED),
    (POWER, b"[" * 2000 + b"]" * 2000, Reason.INVALID_JSON),
    (POWER, enc(reading(value="12")), Reason.SCHEMA),
    (POWER, enc(reading(ts_ms=-1)), Reason.SCHEMA),
    (POWER, enc(reading(ts_ms=1.5)), Reason.SCHEMA),
    (POWER, enc(reading(value=True)), Reason.SCHEMA),
    (POWER, enc({**reading(), "extra": 1}), Reason.SCHEMA),
    (POWER, enc({"meter": "powerco.power_rate", "value": 1, "unit": "MW"}), Reason.SCHEMA),
    (POWER, enc(reading(quality="excellent")), Reason.SCHEMA),
    (POWER, enc(reading(seq=-3)), Reason.SCHEMA),
    (POWER, enc([reading()]), Reason.SCHEMA),
    (POWER, enc({"readings": []}), Reason.SCHEMA),
    (POWER, enc({"readings": [reading()], "extra": 1}), Reason.SCHEMA),
    (POWER, enc(reading(meter="powerco.nope")), Reason.UNKNOWN_METER),
    (BOARD, enc(reading(meter="powerco.power_rate")), Reason.METER_NOT_OF_ENTERPRISE),
    (POWER, enc(reading(unit="MWh")), Reason.UNIT_MISMATCH),       # quantity on a rate meter
    (POWER, enc(reading(unit="t/h")), Reason.UNIT_MISMATCH),
    (POWER, enc(reading(unit="furlongs/fortnight")), Reason.UNIT_MISMATCH),
    (POWER, enc(reading(unit="bananas")), Reason.UNKNOWN_UNIT),
    (POWER, b'{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":NaN,"unit":"MW"}',
     Reason.NOT_FINITE),
    (POWER, b'{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":Infinity,"unit":"MW"}',
     Reason.NOT_FINITE),
    (POWER, b'{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":-Infinity,"unit":"MW"}',
     Reason.NOT_FINITE),
    (POWER, b'{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":1e999,"unit":"MW"}',
     Reason.NOT_FINITE),
    (POWER, enc(reading(value=1e306, unit="kW")), Reason.OUT_OF_RANGE),
    (POWER, enc(reading(value=1_500.001)), Reason.OUT_OF_RANGE),
    (POWER, enc(reading(value=-0.5)), Reason.OUT_OF_RANGE),
    (POWER, enc(reading(ts_ms=NOW + 60_001)), Reason.TS_FUTURE),
    (POWER, enc(reading(ts_ms=NOW - 3_600_001)), Reason.TS_PAST),
    ("parkmon/otherpark/powerco/readings", enc(reading()), Reason.WRONG_TOPIC),
    ("parkmon/gwtest/ghostco/readings", enc(reading()), Reason.WRONG_TOPIC),
    ("parkmon/gwtest/powerco/status", enc(reading()), Reason.WRONG_TOPIC),
    ("parkmon/gwtest/powerco/readings/extra", enc(reading()), Reason.WRONG_TOPIC),
])
def test_rejection_reason(v, topic, payload, reason):
    res = v.validate(topic, payload)
    assert only_reason(res) == reason
    assert res.rejections[0].message  # a human explanation, never empty


def test_limits_are_inclusive(v):
    ok = [reading(ts_ms=NOW + 60_000), reading(ts_ms=NOW - 3_600_000), reading(value=1_500.0),
          reading(value=0.0)]
    for doc in ok:
        assert v.validate(POWER, enc(doc)).accepted, doc


def test_clock_is_injected(v, clock):
    doc = enc(reading(ts_ms=NOW + 120_000))
    assert only_reason(v.validate(POWER, doc)) == Reason.TS_FUTURE
    clock["now"] = NOW + 90_000
    assert v.validate(POWER, doc).accepted


def test_messages_say_what_was_expected(v):
    (rj,) = v.validate(POWER, enc(reading(unit="MWh"))).rejections
    assert "MWh" in rj.message and "MWh/h" in rj.message
    (rj,) = v.validate(POWER, enc(reading(value=2_000.0))).rejections
    assert "1500" in rj.message and "2000" in rj.message


# -- the device's quality flag -------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "kept"), [
    (None, None), ("good", None), ("uncertain", "uncertain")])
def test_good_and_uncertain_readings_are_accepted_and_only_uncertain_is_kept(v, flag, kept):
    extra = {} if flag is None else {"quality": flag}
    res = v.validate(POWER, enc(reading(value=12.0, seq=3, **extra)))
    assert not res.rejections
    (rd,) = res.accepted
    assert (rd.meter, rd.ts_ms, rd.value, rd.seq, rd.quality) == (
        "powerco.power_rate", NOW, 12.0, 3, kept)


def test_bad_reading_is_rejected_with_an_actionable_message(v):
    res = v.validate(POWER, enc(reading(value=12.0, quality="bad")))
    assert only_reason(res) == Reason.DEVICE_QUALITY_BAD
    rj = res.rejections[0]
    assert rj.meter == "powerco.power_rate" and rj.index is None
    assert "'powerco.power_rate'" in rj.message and f"ts_ms {NOW}" in rj.message
    assert "2027-01-15T08:00:00.000Z" in rj.message  # NOW, readable
    assert "the device flagged this reading bad" in rj.message


@pytest.mark.parametrize(("payload", "reason"), [
    # the device's flag explains a broken value: the reason is the flag, not the value check
    (b'{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":NaN,"unit":"MW",'
     b'"quality":"bad"}', Reason.DEVICE_QUALITY_BAD),
    (b'{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":1e999,"unit":"MW",'
     b'"quality":"bad"}', Reason.DEVICE_QUALITY_BAD),
    (enc(reading(value=99_999.0, quality="bad")), Reason.DEVICE_QUALITY_BAD),    # out of range
    (enc(reading(unit="MWh", quality="bad")), Reason.DEVICE_QUALITY_BAD),        # unit mismatch
    (enc(reading(ts_ms=NOW + 86_400_000, quality="bad")), Reason.DEVICE_QUALITY_BAD),
    # what is wrong with the message or the park configuration still wins
    (enc(reading(quality="BAD")), Reason.SCHEMA),
    (enc(reading(value="x", quality="bad")), Reason.SCHEMA),
    (enc(reading(meter="powerco.nope", quality="bad")), Reason.UNKNOWN_METER),
    # a NaN flagged uncertain is still not finite
    (b'{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":NaN,"unit":"MW",'
     b'"quality":"uncertain"}', Reason.NOT_FINITE),
])
def test_order_of_the_quality_check(v, payload, reason):
    assert only_reason(v.validate(POWER, payload)) == reason


def test_bad_reading_of_another_enterprise_is_meter_not_of_enterprise(v):
    res = v.validate(BOARD, enc(reading(quality="bad")))
    assert only_reason(res) == Reason.METER_NOT_OF_ENTERPRISE


def test_bad_counter_reading_does_not_move_the_baseline(v):
    def steam_q(ts_ms, value, quality):
        return v.validate(POWER, enc(reading("powerco.steam_out", ts_ms=ts_ms, value=value,
                                             unit="MWh", quality=quality)))
    assert steam_q(NOW - 2000, 1000.0, "good").accepted
    # a glitching register, flagged bad by the device: refused, the baseline stays at 1000
    assert only_reason(steam_q(NOW - 1000, 1_200.0, "bad")) == Reason.DEVICE_QUALITY_BAD
    assert v.counters.last("powerco.steam_out") == (NOW - 2000, 1000.0)
    # the corrected reading for the same instant is accepted and becomes the baseline
    (rd,) = steam_q(NOW - 1000, 1001.0, "good").accepted
    assert (rd.ts_ms, rd.value, rd.quality) == (NOW - 1000, 1001.0, None)
    assert v.counters.last("powerco.steam_out") == (NOW - 1000, 1001.0)
    # an uncertain reading is accepted and is the baseline like a good one (against the bad
    # 1200 it would have been a negative step)
    res = steam_q(NOW, 1002.0, "uncertain")
    assert res.accepted[0].quality == "uncertain" and res.counter_resets == 0
    assert v.counters.last("powerco.steam_out") == (NOW, 1002.0)


def test_batch_with_quality_flags(v):
    items = [reading(value=1.0, seq=1, quality="good"), reading(value=2.0, seq=2, quality="bad"),
             reading(value=3.0, seq=3, quality="uncertain"), reading(value=4.0, seq=4)]
    res = v.validate(POWER, enc({"v": 1, "source": "edge-7", "readings": items}))
    assert [(r.seq, r.quality) for r in res.accepted] == [(1, None), (3, "uncertain"), (4, None)]
    assert [(r.index, r.reason, r.meter) for r in res.rejections] == [
        (1, Reason.DEVICE_QUALITY_BAD, "powerco.power_rate")]
    assert res.rejections[0].message.startswith("reading 1: meter 'powerco.power_rate' at ts_ms")


# -- batches -------------------------------------------------------------------------------------

def test_batch_accepts_good_and_reports_each_bad_with_its_index(v):
    items = [
        reading(value=1.0, seq=1),
        reading(meter="ghost"),
        reading(value=2.0, seq=2),
        "not a reading",
        reading(value=5_000.0),
        reading(meter="powerco.steam_out", value=1.0, unit="MWh"),
    ]
    res = v.validate(POWER, enc({"v": 1, "source": "edge-7", "readings": items}))
    assert res.is_batch and res.readings_total == len(items)
    assert [(r.meter, r.value) for r in res.accepted] == [
        ("powerco.power_rate", 1.0), ("powerco.power_rate", 2.0), ("powerco.steam_out", 1.0)]
    assert [(r.index, r.reason) for r in res.rejections] == [
        (1, Reason.UNKNOWN_METER), (3, Reason.SCHEMA), (4, Reason.OUT_OF_RANGE)]
    assert all(r.message.startswith(f"reading {r.index}:") for r in res.rejections)


def test_batch_with_nan_item(v):
    payload = (b'{"readings":[{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":NaN,'
               b'"unit":"MW"},{"meter":"powerco.power_rate","ts_ms":1800000000000,"value":3,'
               b'"unit":"MW"}]}')
    res = v.validate(POWER, payload)
    assert [(r.index, r.reason) for r in res.rejections] == [(0, Reason.NOT_FINITE)]
    assert [r.value for r in res.accepted] == [3.0]


def test_too_large_batch_is_rejected_whole(park):
    v = Validator(park, now_ms=lambda: NOW, limits=Limits(max_payload_bytes=10_000_000))
    res = v.validate(POWER, enc({"readings": [reading()] * (ps.MAX_BATCH + 1)}))
    assert only_reason(res) == Reason.SCHEMA and res.rejections[0].index is None


# -- counters ------------------------------------------------------------------------------------

def steam(v, ts_ms, value, unit="MWh"):
    return v.validate(POWER, enc(reading("powerco.steam_out", ts_ms=ts_ms, value=value, unit=unit)))


def test_counter_going_down_is_rejected_and_does_not_move_the_baseline(v):
    assert steam(v, NOW - 3000, 1000.0).accepted
    assert only_reason(steam(v, NOW - 2000, 900.0)) == Reason.NEGATIVE_COUNTER_STEP
    # the baseline is still 1000: 950 is still a negative step, 1001 is fine
    assert only_reason(steam(v, NOW - 1000, 950.0)) == Reason.NEGATIVE_COUNTER_STEP
    assert steam(v, NOW, 1001.0).accepted


def test_counter_reset_to_near_zero_is_accepted_and_counted(v):
    assert steam(v, NOW - 2000, 1000.0).accepted
    res = steam(v, NOW - 1000, 50.0)  # exactly 5 % of the previous value
    assert res.accepted and res.counter_resets == 1
    assert v.counters.last("powerco.steam_out") == (NOW - 1000, 50.0)
    assert only_reason(steam(v, NOW, 40.0)) == Reason.NEGATIVE_COUNTER_STEP


def test_counter_rollover_at_register_limit(v):
    def gyp(ts, value):
        return v.validate(POWER, enc(reading("powerco.gypsum_out", ts_ms=ts, value=value,
                                             unit="t")))
    assert gyp(NOW - 2000, 99_990.0).accepted
    res = gyp(NOW - 1000, 12_000.0)  # wrapped at 100000 t (12 % of the previous: not a reset)
    assert res.accepted and res.counter_resets == 1
    assert only_reason(gyp(NOW, 11_000.0)) == Reason.NEGATIVE_COUNTER_STEP


def test_counter_unit_rounding_is_not_a_negative_step(v):
    assert steam(v, NOW - 1000, 1.0 / 3.6 * 1000.0).accepted
    assert steam(v, NOW, 1000.0, unit="GJ").accepted  # the same energy via GJ


def test_older_readings_are_not_step_checked(v):
    assert steam(v, NOW, 1000.0).accepted
    assert steam(v, NOW - 5000, 10.0).accepted   # out of order: windowing handles it
    assert steam(v, NOW, 1000.0).accepted        # redelivery: dedup handles it
    assert v.counters.last("powerco.steam_out") == (NOW, 1000.0)


def test_counter_steps_warm_up_from_replayed_readings(v):
    from parkmon.contracts import Reading

    v.observe_accepted([Reading("powerco.steam_out", NOW - 10, 500.0)])
    assert only_reason(steam(v, NOW, 400.0)) == Reason.NEGATIVE_COUNTER_STEP


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 1e6, allow_nan=False)), max_size=40))
def test_counter_baseline_never_decreases_except_by_reset(steps):
    cs = CounterSteps(0.05)
    for ts, value in steps:
        before = cs.last("m")
        ok, is_reset, _ = cs.check("m", ts, value)
        if ok:
            cs.commit("m", ts, value)
        after = cs.last("m")
        if before is not None and after != before:
            assert after[0] > before[0]
            assert after[1] >= before[1] * (1 - 1e-9) or (is_reset and
                                                           after[1] <= 0.05 * before[1])


# -- schema: the fast checks are the JSON schema ---------------------------------------------------

_meter_ids = st.one_of(st.sampled_from(["powerco.power_rate", "a", "x" * 128, "x" * 129, "",
                                        "bad id", "é"]),
                       st.text(max_size=5).filter(lambda s: not s.endswith("\n")))
_numbers = st.one_of(st.integers(-5, 2**40), st.floats(allow_nan=True), st.booleans(),
                     st.none(), st.text(max_size=3), st.just(1), st.just(1.0))
_units = st.one_of(st.sampled_from(["MW", "", "x" * 32, "x" * 33]), st.integers(), st.none())
_fields = {
    "meter": _meter_ids, "ts_ms": _numbers, "value": _numbers, "unit": _units, "seq": _numbers,
    "quality": st.one_of(st.sampled_from(["good", "uncertain", "bad", "GOOD"]), _numbers),
    "v": _numbers, "other": st.integers(),
}


@st.composite
def near_readings(draw):
    keys = draw(st.sets(st.sampled_from(sorted(_fields))))
    required = ["meter", "ts_ms", "value", "unit"]
    if draw(st.booleans()):
        keys |= set(required)
    return {k: draw(_fields[k]) for k in sorted(keys)}


_versions = st.one_of(st.just({}), st.builds(lambda x: {"v": x}, _numbers))
_sources = st.one_of(st.just({}), st.builds(lambda x: {"source": x},
                                            st.one_of(st.text(max_size=3), st.integers(),
                                                      st.just("s" * 129))))
_batches = st.builds(lambda items, v, src, extra: {"readings": items, **v, **src, **extra},
                     st.one_of(st.lists(near_readings(), max_size=3), st.integers(), st.none()),
                     _versions, _sources, st.one_of(st.just({}), st.just({"meter": "a"})))
_docs = st.one_of(near_readings(), _batches, _numbers, st.lists(st.integers(), max_size=2))


@settings(max_examples=400, deadline=None)
@given(_docs)
def test_fast_schema_checks_agree_with_jsonschema(doc):
    assert ps.fast_valid(doc) == ps.schema_valid(doc)


# -- robustness ----------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), _docs.map(lambda d: json.dumps(d).encode())),
       st.sampled_from([POWER, BOARD, "parkmon/gwtest/x/readings", "", "a/b/c/d"]))
def test_every_reading_ends_accepted_or_rejected(park, payload, topic):
    v = Validator(park, now_ms=lambda: NOW)
    res = v.validate(topic, payload)
    if res.is_batch and res.items is not None:
        assert len(res.accepted) + len(res.rejections) == res.readings_total
        assert sorted(r.index for r in res.rejections) == [r.index for r in res.rejections]
    else:
        assert len(res.accepted) + len(res.rejections) == 1
    for r in res.accepted:
        assert math.isfinite(r.value)
        assert r.quality in (None, "uncertain")  # "bad" never accepted, "good" not kept
    for rj in res.rejections:
        assert isinstance(rj.reason, Reason) and rj.message
