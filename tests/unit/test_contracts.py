import json

import jsonschema
import pytest

from parkmon.contracts import (
    Reading,
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
