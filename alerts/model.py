"""Alert data model: what the alert service consumes (DetectionEvent) and what it keeps (Alert).

DetectionEvent is the input contract of `parkmon alerts`: one JSON object per Kafka record on
`parkmon.<park>.alerts` (see parkmon.contracts.kafka_alerts_topic), or one call of
`AlertService.handle(event)` in the one-process demo. The detectors emit it; the alert service
turns it into Alerts (firing/resolved), groups them per incident and delivers notifications.

Event time is UTC epoch milliseconds everywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from parkmon.errors import PayloadError


class DetectionKind(StrEnum):
    SUPPLY_DROP = "supply_drop"
    SUPPLY_DECLINE = "supply_decline"
    DATA_QUALITY = "data_quality"
    RESOLVED = "resolved"


class AlertName(StrEnum):
    SUPPLY_DROP = "supply_drop"
    SUPPLY_DECLINE = "supply_decline"
    DATA_QUALITY = "data_quality"


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class DetectionEvent:
    """One detector finding.

    kind          supply_drop | supply_decline | data_quality | resolved
    exchange_id   the symbiotic exchange concerned (supply events; None for a meter-only finding)
    meter_id      the meter concerned (data-quality events; the supplier meter for supply events)
    ts_ms         event time of the finding (detection time), UTC epoch ms
    magnitude     supply events: fraction of the exchange's nominal rate lost, 0..1
    start_ms      when the change started (change point), defaults to ts_ms
    buffer_exhausted_at_ms  supply_decline: projected time the consumers' buffer runs out
    resolves      resolved events: the kind that ends (supply_drop | supply_decline | data_quality);
                  None ends every alert of the exchange / meter
    dq_kind       data-quality kind: silent | stuck | out_of_range | mismatch | ...
    live_rates    optional live rates of meters (meter id -> canonical rate per hour), used to rank
                  alternative suppliers by their current spare capacity
    detail        free-form, copied into the alert annotations
    """

    kind: DetectionKind
    ts_ms: int
    exchange_id: str | None = None
    meter_id: str | None = None
    magnitude: float = 0.0
    start_ms: int | None = None
    buffer_exhausted_at_ms: int | None = None
    resolves: DetectionKind | None = None
    dq_kind: str | None = None
    live_rates: dict[str, float] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind in (DetectionKind.SUPPLY_DROP, DetectionKind.SUPPLY_DECLINE):
            if not self.exchange_id:
                raise PayloadError("schema", f"{self.kind} event needs exchange_id")
            if not (math.isfinite(self.magnitude) and 0.0 <= self.magnitude <= 1.0):
                raise PayloadError("schema", f"magnitude must be a fraction in [0, 1], got {self.magnitude!r}")
        if self.kind == DetectionKind.DATA_QUALITY and not self.meter_id:
            raise PayloadError("schema", "data_quality event needs meter_id")
        if self.kind == DetectionKind.RESOLVED and not (self.exchange_id or self.meter_id):
            raise PayloadError("schema", "resolved event needs exchange_id or meter_id")

    @property
    def alert_name(self) -> AlertName | None:
        """The alert this event fires, None for a resolved event."""
        if self.kind == DetectionKind.RESOLVED:
            return None
        return AlertName(self.kind.value)

    @property
    def event_id(self) -> str:
        """Deterministic id: the same finding replayed (Kafka redelivery, file re-read) is seen once."""
        key = "|".join(str(x) for x in (self.kind, self.exchange_id, self.meter_id, self.ts_ms,
                                         self.resolves, self.dq_kind))
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind.value, "ts_ms": self.ts_ms}
        for name in ("exchange_id", "meter_id", "start_ms", "buffer_exhausted_at_ms", "dq_kind"):
            v = getattr(self, name)
            if v is not None:
                d[name] = v
        if self.kind in (DetectionKind.SUPPLY_DROP, DetectionKind.SUPPLY_DECLINE):
            d["magnitude"] = self.magnitude
        if self.resolves is not None:
            d["resolves"] = self.resolves.value
        if self.live_rates:
            d["live_rates"] = dict(self.live_rates)
        if self.detail:
            d["detail"] = dict(self.detail)
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DetectionEvent:
        if not isinstance(d, dict):
            raise PayloadError("schema", "a detection event is a JSON object")
        try:
            kind = DetectionKind(d["kind"])
            resolves = None if d.get("resolves") is None else DetectionKind(d["resolves"])
            live = {str(k): float(v) for k, v in (d.get("live_rates") or {}).items()}
            return cls(
                kind=kind,
                ts_ms=int(d["ts_ms"]),
                exchange_id=None if d.get("exchange_id") is None else str(d["exchange_id"]),
                meter_id=None if d.get("meter_id") is None else str(d["meter_id"]),
                magnitude=float(d.get("magnitude", 0.0)),
                start_ms=None if d.get("start_ms") is None else int(d["start_ms"]),
                buffer_exhausted_at_ms=(None if d.get("buffer_exhausted_at_ms") is None
                                        else int(d["buffer_exhausted_at_ms"])),
                resolves=resolves,
                dq_kind=None if d.get("dq_kind") is None else str(d["dq_kind"]),
                live_rates=live,
                detail=dict(d.get("detail") or {}),
            )
        except KeyError as exc:
            raise PayloadError("schema", f"detection event is missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise PayloadError("schema", f"detection event has an invalid field: {exc}") from exc

    @classmethod
    def from_json(cls, raw: bytes | str) -> DetectionEvent:
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError("invalid_json", f"detection event is not JSON: {exc}") from exc
        return cls.from_dict(d)


def fingerprint(labels: dict[str, str]) -> str:
    """Stable fingerprint of an alert: a hash of its identifying labels (order-independent)."""
    canon = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert instance. `labels` identify it (and feed the fingerprint); `annotations` describe it.

    group_key groups alerts of one incident into one notification: every supply alert caused by
    the same supplier enterprise shares a group (one trip -> one notification), data-quality
    alerts are grouped per enterprise owning the meter.
    """

    fingerprint: str
    name: AlertName
    state: AlertState
    severity: Severity
    labels: dict[str, str]
    group_key: str
    starts_at_ms: int
    updated_at_ms: int
    ends_at_ms: int | None = None
    summary: str = ""
    annotations: dict[str, Any] = field(default_factory=dict)
    impact: dict[str, Any] | None = None

    def resolved(self, ts_ms: int) -> Alert:
        return replace(self, state=AlertState.RESOLVED, ends_at_ms=ts_ms, updated_at_ms=ts_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "name": self.name.value,
            "state": self.state.value,
            "severity": self.severity.value,
            "labels": dict(self.labels),
            "group_key": self.group_key,
            "starts_at_ms": self.starts_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "ends_at_ms": self.ends_at_ms,
            "summary": self.summary,
            "annotations": dict(self.annotations),
            "impact": self.impact,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Alert:
        return cls(
            fingerprint=d["fingerprint"],
            name=AlertName(d["name"]),
            state=AlertState(d["state"]),
            severity=Severity(d["severity"]),
            labels=dict(d["labels"]),
            group_key=d["group_key"],
            starts_at_ms=int(d["starts_at_ms"]),
            updated_at_ms=int(d["updated_at_ms"]),
            ends_at_ms=None if d.get("ends_at_ms") is None else int(d["ends_at_ms"]),
            summary=d.get("summary", ""),
            annotations=dict(d.get("annotations") or {}),
            impact=d.get("impact"),
        )


def supply_group_key(park_id: str, supplier_enterprise: str) -> str:
    return f"{park_id}/supply/{supplier_enterprise}"


def data_quality_group_key(park_id: str, enterprise: str) -> str:
    return f"{park_id}/data_quality/{enterprise}"
