"""Regression tests for hostile payloads found by the gateway fuzz (tests/e2e/test_gateway_fuzz.py).

Each one stopped or stalled the gateway before its fix:
  * a unit string such as ``9**9**9**9`` made pint compute a power tower (never returned);
  * a lone surrogate in the meter id (``"\\ud800"``, valid JSON) made the dead-letter key
    unencodable: the produce raised and the gateway stopped without acknowledging;
  * a meter id of 1 MB became the dead-letter record's key and field (larger than Kafka accepts);
  * an integer value beyond the float range (JSON allows 4,300 digits) raised OverflowError;
  * a 4,000-digit ts_ms overflowed while formatting the `ts_future` message, a 4,000-digit seq
    was accepted and forwarded;
  * a batch with 10,000 bad readings hashed the whole batch once per bad reading (4-5 s).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.gateway import Gateway
from ingest.validate import Validator
from parkmon import units
from parkmon.config import GatewaySettings
from parkmon.contracts import Reason
from parkmon.park import load_park

pytestmark = pytest.mark.unit

PARK = Path(__file__).parent / "data" / "gateway_park.yaml"
TOPIC = "parkmon/gwtest/powerco/readings"
NOW = 1_800_000_000_000
BASE = {"meter": "powerco.power_rate", "ts_ms": NOW, "value": 1.0, "unit": "MW"}


def within(seconds: float, fn: Any, *args: Any) -> Any:
    """fn(*args) on a daemon thread; fails (instead of hanging the suite) if it takes longer."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__}{args!r} did not return within {seconds} s"
    return out[0]


def validator() -> Validator:
    return Validator(load_park(PARK), now_ms=lambda: NOW)


def reasons(payload: bytes) -> list[Reason]:
    return [rj.reason for rj in validator().validate(TOPIC, payload).rejections]


@pytest.mark.parametrize("unit", ["9**9**9**9", "99**99**99", "(((9**99)**99)**99)**99",
                                  "MW**100**100", "MW ** 2 ** 2", "MW^^3", "x" * 65])
def test_unit_expressions_that_pint_would_evaluate_forever_are_refused_at_once(unit: str):
    def convert() -> str:
        try:
            units.conversion_factor(unit, "MWh/h")
        except units.UnitError as exc:
            return exc.reason
        return "converted"

    assert within(5.0, convert) == "unknown_unit"
    doc = json.dumps({**BASE, "unit": unit[:32]}).encode()
    assert within(5.0, reasons, doc) == [Reason.UNKNOWN_UNIT]


@pytest.mark.parametrize(("unit", "factor"), [("MW", 1.0), ("kW", 0.001), ("m**3/h", None),
                                              ("kg/(m3)", None), ("MW*h/h", 1.0),
                                              ("MW^1", 1.0), ("MW**-1", None)])
def test_ordinary_unit_expressions_still_reach_pint(unit: str, factor: float | None):
    if factor is None:
        with pytest.raises(units.UnitMismatchError):  # parsed by pint, wrong dimension
            units.conversion_factor(unit, "MWh/h")
    else:
        assert units.conversion_factor(unit, "MWh/h") == pytest.approx(factor)


def test_integer_value_beyond_float_range_is_not_finite():
    assert reasons(json.dumps({**BASE, "value": 10**4000}).encode()) == [Reason.NOT_FINITE]
    assert reasons(json.dumps({**BASE, "value": -(10**400)}).encode()) == [Reason.NOT_FINITE]


@pytest.mark.parametrize("field", ["ts_ms", "seq"])
@pytest.mark.parametrize("value", [10**4000, 2**63, 1e300])
def test_ts_and_seq_beyond_int64_are_schema_errors(field: str, value: float):
    assert reasons(json.dumps({**BASE, field: value}).encode()) == [Reason.SCHEMA]


def test_int64_max_seq_is_still_accepted():
    res = validator().validate(TOPIC, json.dumps({**BASE, "seq": 2**63 - 1}).encode())
    assert [r.seq for r in res.accepted] == [2**63 - 1]


class RecordingOut:
    """The gateway's Kafka seam: records what would be produced, reports delivery at once."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        assert isinstance(key, bytes) and isinstance(value, bytes)
        self.records.append((topic, key, value))
        if on_delivery is not None:
            on_delivery(None, None)


def gateway() -> tuple[Gateway, RecordingOut]:
    gw = Gateway(load_park(PARK), gateway=GatewaySettings(metrics_port=-1), now_ms=lambda: NOW)
    out = RecordingOut()
    gw.out = out  # type: ignore[assignment]
    return gw, out


@pytest.mark.parametrize("meter", ["\ud800", "x" * 1_000_000, "bad meter", "é" * 200])
def test_malformed_meter_ids_are_dead_lettered_without_stopping_the_gateway(meter: str):
    gw, out = gateway()
    payload = json.dumps({**BASE, "meter": meter}).encode()
    gw.handle(TOPIC, payload, 1, 1, 0)
    assert not gw.stop_event.is_set() and not gw.draining
    [(topic, key, value)] = out.records
    rec = json.loads(value)
    assert topic == gw.topics.deadletter and rec["reason"] == Reason.SCHEMA.value
    assert rec["meter"] is None and key == TOPIC.encode()
    assert len(key) + len(value) < 128 * 1024  # far below Kafka's 1 MiB message limit
    # and the gateway goes on: the next valid reading is produced
    gw.handle(TOPIC, json.dumps({**BASE, "seq": 1}).encode(), 2, 1, 0)
    assert out.records[-1][0] == gw.topics.readings


def test_batch_of_ten_thousand_bad_readings_is_hashed_once_not_per_reading():
    gw, out = gateway()
    items = [{**BASE, "meter": "nope"}] * 10_000
    payload = json.dumps({"readings": items}).encode()
    t0 = time.perf_counter()
    gw.handle(TOPIC, payload, 1, 1, 0)
    took = time.perf_counter() - t0
    assert len(out.records) == 10_000 and not gw.stop_event.is_set()
    shas = {json.loads(v)["batch_sha256"] for _t, _k, v in out.records}
    assert len(shas) == 1
    # 4-5 s before the fix on the 2-core dev machine, about 0.12 s after; generous bound
    assert took < 2.0, f"{took:.2f} s"


def test_child_processes_import_this_checkout(tmp_path: Path):
    """Subprocess helpers run the code under test, not the tree the venv's editable install names
    (tests/support/ingest.py once put tests/ on the path, so worktrees tested main's gateway)."""
    import subprocess
    import sys

    from tests.support import detect as detect_support
    from tests.support import ingest as ingest_support

    root = Path(__file__).resolve().parents[2]
    assert ingest_support.REPO_ROOT == root == detect_support.REPO_ROOT
    assert (root / "pyproject.toml").exists()
    out = subprocess.run([sys.executable, "-c", "import ingest; print(ingest.__file__)"],
                         cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert Path(out.strip()).resolve().is_relative_to(root)


def test_a_topic_that_is_not_utf8_reaches_the_validator_instead_of_ending_paho_loop():
    """paho's `msg.topic` raises on invalid UTF-8, and an exception in on_message ends paho's
    network loop. Mosquitto disconnects such publishers itself; the gateway decodes leniently
    anyway, so the message is refused `wrong_topic` like any other foreign topic."""
    import paho.mqtt.client as mqtt

    from ingest.mqtt_in import MqttIn
    from parkmon.config import MqttSettings

    seen: list[str] = []
    mq = MqttIn(MqttSettings(), GatewaySettings(), "parkmon/gwtest/+/readings",
                lambda topic, payload, mid, qos, gen: seen.append(topic))
    msg = mqtt.MQTTMessage(mid=1, topic=b"parkmon/gwtest/\xff\xfe/readings")
    msg.payload = b"{}"
    mq._on_message(mq._client, None, msg)
    assert seen == ["parkmon/gwtest/\\xff\\xfe/readings"]
    gw, out = gateway()
    gw.handle(seen[0], b"{}", 1, 1, 0)
    [(_t, _k, value)] = out.records
    assert json.loads(value)["reason"] == Reason.WRONG_TOPIC.value
