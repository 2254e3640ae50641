import json

import jsonschema
import pytest

from parkmon.contracts import (
    Quality,
    Reading,
    Reason,
    mqtt_subscription,
    mqtt_topic,
    parse_mqtt_topic,
    reading_payload_schema,
)

pytestmark = pytest.mark.unit


def test_topic_round_trip():
    topic = mqtt_topic("kalundborg", "asnaes")
    assert topic == "parkmon/kalundborg/asnaes/readings"
    assert parse_mqtt_topic(topic) == ("kalundborg", "asnaes")
    assert mqtt_subscription("kalundborg") == "parkmon/kalundborg/+/readings"


@pytest.mark.parametrize(
    "topic",
    ["parkmon/kalundborg/asnaes", "other/kalundborg/asnaes/readings", "parkmon//asnaes/readings",
     "parkmon/kalundborg/asnaes/readings/extra", "parkmon/k/a/status"],
)
def test_parse_rejects_other_topics(topic):
    assert parse_mqtt_topic(topic) is None


def test_reading_json_round_trip_and_key():
    r = Reading("asnaes.steam_out", 1_700_000_000_000, 12.5, seq=7)
    back = Reading.from_json(r.to_json())
    assert back == r
    assert back.idempotency_key == ("asnaes.steam_out", 7)
    no_seq = Reading("m", 5, 1.0)
    assert Reading.from_json(no_seq.to_json()).idempotency_key == ("m", 5)


def test_schema_accepts_single_and_batch_and_rejects_junk():
    schema = reading_payload_schema()
    v = jsonschema.Draft202012Validator(schema)
    one = {"meter": "a.b", "ts_ms": 1, "value": 2.5, "unit": "MWh", "seq": 3}
    assert not list(v.iter_errors(one))
    assert not list(v.iter_errors({"readings": [one, one]}))
    assert list(v.iter_errors({"meter": "a.b", "ts_ms": "1", "value": 2.5, "unit": "MWh"}))
    assert list(v.iter_errors({"readings": []}))
    assert list(v.iter_errors({**one, "extra": 1}))
    json.dumps(schema)  # the shipped schema is plain JSON


def test_reading_quality_is_serialised_only_when_not_good():
    assert Reading("m", 5, 1.0, 2).to_json() == b'{"meter":"m","ts_ms":5,"value":1.0,"seq":2}'
    assert Reading("m", 5, 1.0, 2, "good").to_json() == Reading("m", 5, 1.0, 2).to_json()
    unc = Reading("m", 5, 1.0, 2, "uncertain")
    assert unc.to_json() == b'{"meter":"m","ts_ms":5,"value":1.0,"seq":2,"quality":"uncertain"}'
    assert Reading.from_json(unc.to_json()) == unc
    assert Reading("m", 5, 1.0, quality=Quality.UNCERTAIN).to_json() == \
        b'{"meter":"m","ts_ms":5,"value":1.0,"quality":"uncertain"}'
    assert unc.idempotency_key == ("m", 2)  # the flag is not part of the identity


@pytest.mark.parametrize("raw", [
    b'{"meter":"m","ts_ms":5,"value":1.0,"seq":2}',                    # written before the field
    b'{"meter":"m","ts_ms":5,"value":1.0,"seq":2,"quality":"good"}',
    b'{"meter":"m","ts_ms":5,"value":1.0,"seq":2,"quality":null}',
])
def test_reading_from_json_without_a_flag_is_good(raw):
    assert Reading.from_json(raw) == Reading("m", 5, 1.0, 2)
    assert Reading.from_json(raw).quality is None


def test_quality_values_are_the_schema_enum_and_bad_has_a_reason():
    reading_def = reading_payload_schema()["$defs"]["reading"]
    assert [q.value for q in Quality] == reading_def["properties"]["quality"]["enum"]
    assert Reason("device_quality_bad") is Reason.DEVICE_QUALITY_BAD
