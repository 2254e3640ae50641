"""Fast structural check of reading payloads, equivalent to parkmon/schemas/reading.schema.json.

`jsonschema` costs tens of microseconds per reading, which is most of the gateway's per-reading
budget. The checks below implement exactly the constraints of the schema (a hypothesis property in
tests/unit/test_gateway_validate.py keeps them equivalent to `jsonschema`); when a check fails,
`jsonschema` itself is run to produce the human-readable message, so the explanation in the
dead-letter record is always the schema's own.

The payload is checked in two parts so that one bad reading in a batch does not reject the others:
the envelope (a single reading, or {"readings": [...], "v"?, "source"?}) and each reading against
`$defs/reading`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import jsonschema

from parkmon.contracts import reading_payload_schema

_METER_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_READING_KEYS = frozenset({"v", "meter", "ts_ms", "value", "unit", "seq", "quality"})
_REQUIRED = ("meter", "ts_ms", "value", "unit")
_QUALITY = ("good", "uncertain", "bad")
_BATCH_KEYS = frozenset({"v", "source", "readings"})
MAX_BATCH = 10_000
#: ts_ms and seq are signed 64-bit integers (the schema's "maximum"): what Kafka consumers in other
#: languages, SQLite and InfluxDB hold; a 4,000-digit seq would otherwise travel downstream.
MAX_INT64 = 2**63 - 1


def meter_id_ok(x: object) -> bool:
    """A string that may be a meter id (the schema's pattern): safe as a Kafka key and in logs."""
    return type(x) is str and _METER_RE.fullmatch(x) is not None


def _is_integer(x: object) -> bool:
    # JSON Schema "integer": a number with a zero fractional part; booleans are not numbers.
    if type(x) is int:
        return True
    return type(x) is float and x.is_integer()


def _is_number(x: object) -> bool:
    return type(x) is int or type(x) is float


def _is_v1(x: object) -> bool:
    # {"const": 1} compares by JSON equality: 1 and 1.0 match, true does not.
    return _is_number(x) and x == 1


def reading_ok(r: object) -> bool:
    """True when `r` satisfies `$defs/reading` of the payload schema.

    The hot path of the gateway (once per reading): type checks are inlined on purpose.
    """
    if type(r) is not dict:
        return False
    try:
        meter = r["meter"]
        ts = r["ts_ms"]
        value = r["value"]
        unit = r["unit"]
    except KeyError:
        return False
    n = len(r)
    if n > 4 and not r.keys() <= _READING_KEYS:
        return False
    if type(meter) is not str or _METER_RE.fullmatch(meter) is None:
        return False
    t = type(ts)
    if not ((t is int and 0 <= ts <= MAX_INT64)
            or (t is float and 0 <= ts <= MAX_INT64 and ts.is_integer())):
        return False
    t = type(value)
    if t is not float and t is not int:
        return False
    if type(unit) is not str or not (0 < len(unit) <= 32):
        return False
    if n > 4:
        if "seq" in r:
            seq = r["seq"]
            t = type(seq)
            if not ((t is int and 0 <= seq <= MAX_INT64)
                    or (t is float and 0 <= seq <= MAX_INT64 and seq.is_integer())):
                return False
        if "quality" in r and r["quality"] not in _QUALITY:
            return False
        if "v" in r and not _is_v1(r["v"]):
            return False
    return True


def is_batch(doc: object) -> bool:
    """A payload is treated as a batch when it is an object with a "readings" member."""
    return type(doc) is dict and "readings" in doc


def envelope_ok(doc: dict[str, Any]) -> bool:
    """True when a batch's envelope (everything but the items) satisfies the schema."""
    if not doc.keys() <= _BATCH_KEYS:
        return False
    items = doc["readings"]
    if type(items) is not list or not (1 <= len(items) <= MAX_BATCH):
        return False
    if "v" in doc and not _is_v1(doc["v"]):
        return False
    if "source" in doc:
        src = doc["source"]
        if type(src) is not str or len(src) > 128:
            return False
    return True


@lru_cache(maxsize=1)
def _validators() -> tuple[jsonschema.protocols.Validator, jsonschema.protocols.Validator,
                           jsonschema.protocols.Validator]:
    schema = reading_payload_schema()
    cls = jsonschema.validators.validator_for(schema)
    whole = cls(schema)
    reading = cls({**schema["$defs"]["reading"], "$defs": schema["$defs"]})
    envelope_schema = dict(schema["oneOf"][1])
    envelope_schema["properties"] = {**envelope_schema["properties"],
                                     "readings": {"type": "array", "minItems": 1,
                                                  "maxItems": MAX_BATCH}}
    envelope = cls(envelope_schema)
    return whole, reading, envelope


def _explain(validator: jsonschema.protocols.Validator, doc: object, where: str) -> str:
    found = validator.iter_errors(doc)  # type: ignore[arg-type]
    errors = sorted(found, key=lambda e: (len(e.path), str(e.path)))
    if not errors:  # pragma: no cover - only reached if the fast check and the schema disagree
        return f"{where}does not match the reading payload schema"
    e = errors[0]
    path = "/".join(str(p) for p in e.path)
    at = f" at '{path}'" if path else ""
    msg = e.message if len(e.message) <= 300 else e.message[:300] + "..."
    return f"{where}schema violation{at}: {msg}"


def explain_reading(r: object) -> str:
    return _explain(_validators()[1], r, "")


def explain_envelope(doc: object) -> str:
    return _explain(_validators()[2], doc, "batch envelope: ")


def schema_valid(doc: object) -> bool:
    """Reference answer from jsonschema for the whole payload (used by the equivalence tests)."""
    return _validators()[0].is_valid(doc)  # type: ignore[arg-type]


def fast_valid(doc: object) -> bool:
    """The fast checks applied to the whole payload (same answer as `schema_valid`)."""
    if is_batch(doc):
        assert isinstance(doc, dict)
        return envelope_ok(doc) and all(reading_ok(r) for r in doc["readings"])
    return reading_ok(doc)
