"""Data contracts shared by every stage: the MQTT topic scheme, the reading payload, Kafka topics.

See docs/contracts.md for the prose version. Event time is always UTC epoch milliseconds (`ts_ms`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from importlib import resources
from typing import Any

MQTT_TOPIC_PREFIX = "parkmon"


def mqtt_topic(park_id: str, enterprise_id: str) -> str:
    """Topic a device of `enterprise_id` publishes readings (single or batch) on."""
    return f"{MQTT_TOPIC_PREFIX}/{park_id}/{enterprise_id}/readings"


def mqtt_subscription(park_id: str) -> str:
    return f"{MQTT_TOPIC_PREFIX}/{park_id}/+/readings"


def parse_mqtt_topic(topic: str) -> tuple[str, str] | None:
    """Return (park_id, enterprise_id) for a readings topic, None when the topic is not one."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != MQTT_TOPIC_PREFIX or parts[3] != "readings":
        return None
    if not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def kafka_readings_topic(park_id: str) -> str:
    return f"parkmon.{park_id}.readings"


def kafka_deadletter_topic(park_id: str) -> str:
    return f"parkmon.{park_id}.deadletter"


def kafka_streams_deadletter_topic(park_id: str) -> str:
    return f"parkmon.{park_id}.streams-deadletter"


def kafka_alerts_topic(park_id: str) -> str:
    return f"parkmon.{park_id}.alerts"


class Reason(StrEnum):
    """Stable reason codes for rejected messages (dead-letter topic, metrics label)."""

    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    WRONG_TOPIC = "wrong_topic"
    UNKNOWN_METER = "unknown_meter"
    METER_NOT_OF_ENTERPRISE = "meter_not_of_enterprise"
    UNIT_MISMATCH = "unit_mismatch"
    UNKNOWN_UNIT = "unknown_unit"
    NOT_FINITE = "not_finite"
    OUT_OF_RANGE = "out_of_range"
    NEGATIVE_COUNTER_STEP = "negative_counter_step"
    TS_FUTURE = "ts_future"
    TS_PAST = "ts_past"
    OVERSIZED = "oversized"
    PROCESSING_ERROR = "processing_error"
    DEVICE_QUALITY_BAD = "device_quality_bad"


class Quality(StrEnum):
    """The device's own quality flag of a reading (`quality` in the payload, optional).

    `bad` readings are dead-lettered (`Reason.DEVICE_QUALITY_BAD`); `uncertain` ones are accepted
    and keep the flag on the readings topic (`Reading.quality`); `good` is the same as no flag.
    """

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated, normalised reading: value in the meter's canonical unit.

    `quality` is the device's flag when it is not good: None means good (or no flag sent), the
    gateway only ever forwards "uncertain" (a "bad" reading is dead-lettered). It is serialised
    only when set and not "good", so records of good readings are unchanged.
    """

    meter: str
    ts_ms: int
    value: float
    seq: int | None = None
    quality: str | None = None

    def to_json(self) -> bytes:
        d: dict[str, Any] = {"meter": self.meter, "ts_ms": self.ts_ms, "value": self.value}
        if self.seq is not None:
            d["seq"] = self.seq
        if self.quality is not None and self.quality != Quality.GOOD:
            d["quality"] = self.quality
        return json.dumps(d, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Reading:
        """Parse a readings-topic record; records without `quality` (written before the field
        existed) and records with "good" give `quality=None`."""
        d = json.loads(raw)
        q = d.get("quality")
        return cls(meter=str(d["meter"]), ts_ms=int(d["ts_ms"]), value=float(d["value"]),
                   seq=None if d.get("seq") is None else int(d["seq"]),
                   quality=None if q is None or q == Quality.GOOD else str(q))

    @property
    def idempotency_key(self) -> tuple[str, int]:
        """(meter, seq) when a sequence number is present, else (meter, event time)."""
        return (self.meter, self.seq if self.seq is not None else self.ts_ms)


@lru_cache(maxsize=1)
def reading_payload_schema() -> dict[str, Any]:
    text = resources.files("parkmon.schemas").joinpath("reading.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema
