"""Typed events emitted by the detectors. Plain frozen dataclasses, no I/O.

Every event has a stable `key` naming the condition it is about; a `Resolved` carries the key of
the condition that ended, so a consumer can pair them without knowing detector internals:

    supply:<exchange>            SupplyDrop / SupplyDecline of an exchange
    dq:<meter>:<kind>            DataQuality of a meter (kind: silent | stuck | out_of_range |
                                 disagrees)

`to_detection_event(ev)` turns one into the alert service's input contract
(alerts.model.DetectionEvent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

DQKind = Literal["silent", "stuck", "out_of_range", "disagrees"]


@dataclass(frozen=True, slots=True)
class SupplyDrop:
    """The supply of an exchange dropped abruptly.

    magnitude       relative shortfall vs the expected supply, 0..1 (0.3 = 30 % below)
    start_ms        estimated change point; detected_ms: when the detector decided
    expected_rate / observed_rate   supplier-side (or consumer-side) rate, canonical per hour
    buffer_exhausted_at_ms  projected time the consumers' buffer (exchange.buffer_h) runs out
    confirmed_by    which meters show it: "both", "suppliers" (consumers unavailable) or
                    "consumers" (supplier meters unavailable)
    """

    exchange: str
    start_ms: int
    detected_ms: int
    magnitude: float
    expected_rate: float
    observed_rate: float
    buffer_exhausted_at_ms: int | None
    confirmed_by: str = "both"
    supplier_meters: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"supply:{self.exchange}"

    kind = "supply_drop"


@dataclass(frozen=True, slots=True)
class SupplyDecline:
    """The supply of an exchange is declining gradually: an early warning with a buffer projection.

    slope_per_h     trend of the relative residual, per hour (negative = declining)
    Other fields as SupplyDrop.
    """

    exchange: str
    start_ms: int
    detected_ms: int
    magnitude: float
    expected_rate: float
    observed_rate: float
    buffer_exhausted_at_ms: int | None
    slope_per_h: float = 0.0
    confirmed_by: str = "both"
    supplier_meters: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"supply:{self.exchange}"

    kind = "supply_decline"


@dataclass(frozen=True, slots=True)
class DataQuality:
    """A meter is not to be trusted: silent, stuck, out of range, or disagreeing with the other
    side of its exchange (a dead meter, not a dead supplier)."""

    meter: str
    dq_kind: DQKind
    detected_ms: int
    since_ms: int
    exchange: str | None = None
    detail: str = ""

    @property
    def key(self) -> str:
        return f"dq:{self.meter}:{self.dq_kind}"

    kind = "data_quality"


@dataclass(frozen=True, slots=True)
class Resolved:
    """The condition `key` ended at resolved_ms. `of_kind` is the kind of the event it ends."""

    key: str
    of_kind: str
    resolved_ms: int
    exchange: str | None = None
    meter: str | None = None
    dq_kind: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    kind = "resolved"


Event = SupplyDrop | SupplyDecline | DataQuality | Resolved


def event_ts(ev: Event) -> int:
    return ev.resolved_ms if isinstance(ev, Resolved) else ev.detected_ms


def to_detection_event(ev: Event, live_rates: dict[str, float] | None = None) -> Any:
    """The alert service's DetectionEvent for `ev` (imported lazily: alerts.model is optional)."""
    from alerts.model import DetectionEvent, DetectionKind

    rates = dict(live_rates or {})
    if isinstance(ev, SupplyDrop | SupplyDecline):
        kind = DetectionKind.SUPPLY_DROP if isinstance(ev, SupplyDrop) else DetectionKind.SUPPLY_DECLINE
        detail: dict[str, Any] = {
            "expected_rate": ev.expected_rate, "observed_rate": ev.observed_rate,
            "confirmed_by": ev.confirmed_by,
        }
        if isinstance(ev, SupplyDecline):
            detail["slope_per_h"] = ev.slope_per_h
        return DetectionEvent(
            kind=kind, ts_ms=ev.detected_ms, exchange_id=ev.exchange,
            meter_id=ev.supplier_meters[0] if ev.supplier_meters else None,
            magnitude=min(max(ev.magnitude, 0.0), 1.0), start_ms=ev.start_ms,
            buffer_exhausted_at_ms=ev.buffer_exhausted_at_ms, live_rates=rates, detail=detail)
    if isinstance(ev, DataQuality):
        return DetectionEvent(
            kind=DetectionKind.DATA_QUALITY, ts_ms=ev.detected_ms, exchange_id=ev.exchange,
            meter_id=ev.meter, start_ms=ev.since_ms, dq_kind=ev.dq_kind, live_rates=rates,
            detail={"detail": ev.detail} if ev.detail else {})
    return DetectionEvent(
        kind=DetectionKind.RESOLVED, ts_ms=ev.resolved_ms, exchange_id=ev.exchange,
        meter_id=ev.meter, resolves=DetectionKind(ev.of_kind), dq_kind=ev.dq_kind,
        live_rates=rates, detail=dict(ev.detail))
