"""Validation and normalisation of reading payloads: pure, no I/O, clock injected.

`Validator.validate(topic, payload)` turns one MQTT message into accepted `Reading`s (value in the
meter's canonical unit) and one `Rejection` per refused reading (or one for the whole message), each
with a stable `Reason` code, a human message and, for batches, the index of the reading.

Checks, in order (the first failing check gives the reason):

whole message
  oversized        payload longer than `max_payload_bytes` (not even parsed)
  wrong_topic      topic is not parkmon/<this park>/<enterprise>/readings, or the enterprise is not
                   one of the park's
  invalid_json     not UTF-8 JSON (truncated, garbage, nested too deep)
  schema           the batch envelope does not match the schema (empty, > 10,000 items, extra keys)
per reading
  not_finite       value is NaN or +-Infinity (Python's json accepts these literals, and numbers
                   such as 1e999 overflow to infinity), also after unit conversion
  schema           the reading does not match `$defs/reading` of the payload schema
  unknown_meter    meter id not in the park file
  meter_not_of_enterprise  meter belongs to another enterprise than the topic's
  device_quality_bad  the device flagged the reading `"quality": "bad"` (whatever its value: a NaN
                   or out-of-range value flagged bad gets this reason, the device's own)
  unknown_unit     unit that pint does not know
  unit_mismatch    unit of another dimension than the meter's canonical unit
  out_of_range     canonical value outside [range_min, range_max] of the meter
  ts_future        ts_ms later than now + max_future_ms
  ts_past          ts_ms earlier than now - max_past_ms
  negative_counter_step  see `CounterSteps`

Device quality flag: `good` (or no flag) and `uncertain` readings are accepted; an uncertain one
keeps the flag (`Reading.quality`). A `bad` one is rejected before any value check, so it never
moves a counter baseline, and the gateway never remembers its idempotency key: a corrected reading
for the same (meter, ts_ms) or (meter, seq) is accepted afterwards.

Counter rule (documented in docs/ingest.md), consistent with streams/core/counters.py: for a counter
meter, a reading later in event time than the last accepted one must not be lower, except
  * a drop within a relative tolerance of 1e-9 (rounding of unit conversion) counts as no change;
  * a roll-over: the meter has a `rollover` register limit, the previous value was in its upper half
    and the new one is in the lower half (streams counts limit - prev + cur);
  * a reset: the new value is at most `counter_reset_fraction` (default 5 %) of the previous one
    (meter replaced or cleared; streams counts the new value itself).
  Both are accepted, counted as resets (metric) and become the new baseline.
Any other drop is rejected as negative_counter_step and does not move the baseline. Readings that are
not later than the last accepted one (redeliveries, out-of-order arrivals) are not step-checked;
they are handled by deduplication and by the windowing downstream.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ingest import payload_schema as ps
from parkmon.contracts import Quality, Reading, Reason, parse_mqtt_topic


class MeterLike(Protocol):
    """The part of parkmon.park.Meter the validator reads."""

    id: str
    enterprise: str
    kind: str
    canonical_unit: str
    range_min: float | None
    range_max: float | None


class ParkLike(Protocol):
    id: str

    @property
    def meters_by_id(self) -> dict[str, Any]: ...

    @property
    def enterprises(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """Validation limits (from GatewaySettings)."""

    max_payload_bytes: int = 1_048_576
    max_future_ms: int = 5 * 60_000
    max_past_ms: int = 7 * 24 * 3_600_000
    counter_reset_fraction: float = 0.05


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    message: str
    index: int | None = None  # position in a batch; None for a single reading / the whole message
    meter: str | None = None


@dataclass(slots=True)
class ValidationResult:
    accepted: list[Reading] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    counter_resets: int = 0
    readings_total: int = 0  # readings found in the message (1 for a message rejected whole)
    is_batch: bool = False
    items: list[Any] | None = None  # the parsed readings of a batch (for dead-letter records)


class UnitConversionError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = reason
        super().__init__(message)


Converter = Callable[[str, str], tuple[float, float]]


def _default_converter(unit: str, canonical: str) -> tuple[float, float]:
    """(factor, offset) so that canonical = value * factor + offset (parkmon.units: offset 0)."""
    from parkmon import units

    try:
        return units.conversion_factor(unit, canonical), 0.0
    except units.UnitError as exc:  # translated at this boundary into a reason code
        reason = Reason.UNKNOWN_UNIT if exc.reason == Reason.UNKNOWN_UNIT else Reason.UNIT_MISMATCH
        raise UnitConversionError(reason, f"{exc.message} (meter unit {canonical!r})") from exc


class CounterSteps:
    """Per-meter last accepted (ts_ms, value) of counter meters, with the reset rule above."""

    __slots__ = ("_last", "reset_fraction")

    def __init__(self, reset_fraction: float = 0.05) -> None:
        self._last: dict[str, tuple[int, float]] = {}
        self.reset_fraction = reset_fraction

    def check(self, meter: str, ts_ms: int, value: float,
              rollover: float | None = None) -> tuple[bool, bool, str]:
        """(ok, is_reset, message) for a counter reading; does not change state."""
        last = self._last.get(meter)
        if last is None or ts_ms <= last[0]:
            return True, False, ""
        prev = last[1]
        if value >= prev or prev - value <= 1e-9 * abs(prev):
            return True, False, ""
        if rollover is not None and prev >= rollover / 2 and value < rollover / 2:
            return True, True, ""  # the register wrapped at `rollover`
        if value <= self.reset_fraction * prev:
            return True, True, ""  # reset to (near) zero: meter replaced or cleared
        wrap = (f" or a roll-over (previous value in the upper half of the register "
                f"{rollover:g})" if rollover is not None else "")
        return False, False, (
            f"counter went down from {prev:g} (ts_ms {last[0]}) to {value:g} (ts_ms {ts_ms}); "
            f"a drop is only accepted as a reset to at most {self.reset_fraction:.0%} of the "
            f"previous value{wrap}")

    def commit(self, meter: str, ts_ms: int, value: float) -> None:
        last = self._last.get(meter)
        if last is None or ts_ms > last[0]:
            self._last[meter] = (ts_ms, value)

    def last(self, meter: str) -> tuple[int, float] | None:
        return self._last.get(meter)


_decode = json.JSONDecoder().decode


class Validator:
    """Validates payloads of one park. Keeps only the counter baselines as state."""

    def __init__(self, park: ParkLike, *, now_ms: Callable[[], int], limits: Limits | None = None,
                 converter: Converter | None = None) -> None:
        self.park_id: str = park.id
        self.meters: dict[str, Any] = dict(park.meters_by_id)
        # per meter: (enterprise, canonical unit, range_min, range_max, is counter, rollover)
        self._meta: dict[str, tuple[str, str, float | None, float | None, bool, float | None]] = {
            mid: (m.enterprise, m.canonical_unit, m.range_min, m.range_max, m.kind == "counter",
                  getattr(m, "rollover", None)) for mid, m in self.meters.items()}
        self.enterprises: frozenset[str] = frozenset(_enterprise_ids(park.enterprises))
        self.limits = limits or Limits()
        self.now_ms = now_ms
        self.counters = CounterSteps(self.limits.counter_reset_fraction)
        self._convert = converter or _default_converter
        self._factors: dict[tuple[str, str], tuple[float, float] | UnitConversionError] = {}
        # valid readings topics seen -> their enterprise (bounded by the park's enterprises)
        self._topics: dict[str, str] = {}

    # -- the whole message -------------------------------------------------------------------
    def validate(self, topic: str, payload: bytes) -> ValidationResult:
        res = ValidationResult()
        lim = self.limits
        if len(payload) > lim.max_payload_bytes:
            return self._whole(res, Reason.OVERSIZED,
                               f"payload is {len(payload)} bytes, the limit is "
                               f"{lim.max_payload_bytes} bytes")
        enterprise = self._topics.get(topic)
        if enterprise is None:
            problem = self._topic_problem(topic)
            if problem is not None:
                return self._whole(res, Reason.WRONG_TOPIC, problem)
            enterprise = self._topics[topic] = topic.split("/")[2]
        try:
            doc = _decode(payload.decode("utf-8"))  # str: skips json's encoding detection
        except RecursionError:
            return self._whole(res, Reason.INVALID_JSON, "JSON nested too deeply")
        except UnicodeDecodeError as exc:
            return self._whole(res, Reason.INVALID_JSON, f"payload is not UTF-8: {exc}")
        except ValueError as exc:
            return self._whole(res, Reason.INVALID_JSON, f"payload is not valid JSON: {exc}")
        if ps.is_batch(doc):
            res.is_batch = True
            if not ps.envelope_ok(doc):
                return self._whole(res, Reason.SCHEMA, ps.explain_envelope(doc))
            items = res.items = doc["readings"]
            res.readings_total = len(items)
            now = self.now_ms()
            for i, r in enumerate(items):
                self._one(res, r, i, enterprise, now)
        else:
            res.readings_total = 1
            self._one(res, doc, None, enterprise, self.now_ms())
        return res

    def _topic_problem(self, topic: str) -> str | None:
        parsed = parse_mqtt_topic(topic)
        if parsed is None:
            return f"topic {topic!r} is not parkmon/<park>/<enterprise>/readings"
        park_id, enterprise = parsed
        if park_id != self.park_id:
            return (f"topic {topic!r} is for park {park_id!r}, this gateway serves park "
                    f"{self.park_id!r}")
        if enterprise not in self.enterprises:
            return f"topic {topic!r}: enterprise {enterprise!r} is not in park {self.park_id!r}"
        return None

    @staticmethod
    def _whole(res: ValidationResult, reason: Reason, message: str) -> ValidationResult:
        res.rejections.append(Rejection(reason, message))
        res.readings_total = max(res.readings_total, 1)
        return res

    # -- one reading -------------------------------------------------------------------------
    def _one(self, res: ValidationResult, r: Any, index: int | None, enterprise: str,
             now: int) -> None:
        out = self._check(res, r, enterprise, now)
        if type(out) is Reading:
            res.accepted.append(out)
            return
        reason, message = out  # type: ignore[misc]
        meter_id = r.get("meter") if type(r) is dict else None
        where = "" if index is None else f"reading {index}: "
        # only a well-formed id becomes the dead-letter record's key and `meter` field: a 1 MB
        # string would make the record too large for Kafka, a lone surrogate is not encodable
        res.rejections.append(Rejection(reason, where + message, index,
                                        meter_id if ps.meter_id_ok(meter_id) else None))

    def _check(self, res: ValidationResult, r: Any, enterprise: str,
               now: int) -> Reading | tuple[Reason, str]:
        """The accepted Reading, or (reason, message). Hot path: no allocation but the Reading."""
        if type(r) is dict:
            v = r.get("value")
            if type(v) is float and not math.isfinite(v) and r.get("quality") != Quality.BAD:
                return Reason.NOT_FINITE, f"value is {v!r}; only finite numbers are accepted"
        if not ps.reading_ok(r):
            return Reason.SCHEMA, ps.explain_reading(r)
        meter_id = r["meter"]
        meta = self._meta.get(meter_id)
        if meta is None:
            return Reason.UNKNOWN_METER, f"meter {meter_id!r} is not in park {self.park_id!r}"
        m_enterprise, canonical, lo, hi, is_counter, rollover = meta
        if m_enterprise != enterprise:
            return (Reason.METER_NOT_OF_ENTERPRISE,
                    f"meter {meter_id!r} belongs to enterprise {m_enterprise!r}, "
                    f"not to {enterprise!r} of the topic")
        quality = r.get("quality")
        if quality is not None:
            if quality == Quality.BAD:
                return Reason.DEVICE_QUALITY_BAD, _bad_message(meter_id, r["ts_ms"], r["value"],
                                                               unit=r["unit"])
            if quality == Quality.GOOD:
                quality = None
        unit = r["unit"]
        conv = self._factors.get((unit, canonical))
        if conv is None:
            try:
                conv = self._convert(unit, canonical)
            except UnitConversionError as exc:
                conv = exc
            if len(self._factors) < 10_000:
                self._factors[(unit, canonical)] = conv
        if type(conv) is UnitConversionError:
            return conv.reason, f"meter {meter_id!r}: {conv}"
        factor, offset = conv  # type: ignore[misc]
        try:
            value = r["value"] * factor + offset
        except OverflowError:  # an integer beyond the float range (JSON allows 4,300 digits)
            return (Reason.NOT_FINITE,
                    f"value is an integer of {len(str(abs(r['value'])))} digits, beyond the "
                    f"range of a 64-bit float; only finite numbers are accepted")
        if not math.isfinite(value):
            return (Reason.NOT_FINITE,
                    f"value {r['value']!r} {unit} is not finite in {canonical}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return (Reason.OUT_OF_RANGE,
                    f"meter {meter_id!r}: {value:g} {canonical} is outside the physical range "
                    f"[{_num(lo)}, {_num(hi)}] {canonical}")
        ts_ms = int(r["ts_ms"])
        lim = self.limits
        if ts_ms > now + lim.max_future_ms:
            return (Reason.TS_FUTURE,
                    f"ts_ms {ts_ms} is {(ts_ms - now) / 1000:.1f} s ahead of the gateway clock "
                    f"(limit {lim.max_future_ms / 1000:g} s)")
        if ts_ms < now - lim.max_past_ms:
            return (Reason.TS_PAST,
                    f"ts_ms {ts_ms} is {(now - ts_ms) / 1000:.1f} s behind the gateway clock "
                    f"(limit {lim.max_past_ms / 1000:g} s)")
        if is_counter:
            ok, is_reset, msg = self.counters.check(meter_id, ts_ms, value, rollover)
            if not ok:
                return Reason.NEGATIVE_COUNTER_STEP, f"meter {meter_id!r}: {msg}"
            if is_reset:
                res.counter_resets += 1
            self.counters.commit(meter_id, ts_ms, value)
        seq = r.get("seq")
        return Reading(meter_id, ts_ms, value, None if seq is None else int(seq), quality)

    def observe_accepted(self, readings: Iterable[Reading]) -> None:
        """Warm the counter baselines from readings accepted earlier (replayed from Kafka)."""
        for rd in readings:
            m = self.meters.get(rd.meter)
            if m is not None and m.kind == "counter":
                self.counters.commit(rd.meter, rd.ts_ms, rd.value)


def _bad_message(meter_id: str, ts: float, value: Any, unit: str) -> str:
    ts_ms = int(ts)
    try:
        when = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        at = f"ts_ms {ts_ms} ({when}Z)"
    except (OverflowError, ValueError, OSError):
        at = f"ts_ms {ts_ms}"
    return (f"meter {meter_id!r} at {at}: the device flagged this reading bad "
            f"(quality \"bad\", value {value!r} {unit}); it was not forwarded, no KPI uses it. "
            f"Check the device or sensor; a corrected reading for the same ts_ms is not blocked "
            f"by this one")


def _num(x: float | None) -> str:
    return "none" if x is None else f"{x:g}"


def _enterprise_ids(enterprises: Any) -> list[str]:
    if isinstance(enterprises, dict):
        return [str(k) for k in enterprises]
    out = []
    for e in enterprises:
        out.append(e if isinstance(e, str) else str(e.id))
    return out
