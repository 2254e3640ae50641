"""The alert service: detection events in, grouped and signed webhook notifications out.

    service = AlertService.create(park, db_path, endpoints, now_ms=clock)
    service.handle(event)       # a DetectionEvent (or a detector event from alerts.detect.events)
    service.tick()              # flush groups whose group_wait / interval / repeat is due
    service.deliver_due()       # one synchronous delivery pass (the service runs a thread instead)

`handle` is idempotent per event (event ids are remembered in the outbox database) and atomic:
the lifecycle state, the event id and the notifications for every endpoint are committed in one
SQLite transaction before it returns. After a crash, restarting on the same database resumes
delivery of everything committed; a replayed event is a counted duplicate.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from alerts.delivery.formats import render
from alerts.delivery.outbox import NewMessage, Outbox
from alerts.delivery.ssrf import SsrfPolicy
from alerts.delivery.webhook import Endpoint, RetryPolicy, WebhookSender
from alerts.delivery.worker import DeliveryWorker
from alerts.impact import Impact, ImpactAnalyzer
from alerts.lifecycle import Lifecycle, LifecycleConfig, MaintenanceWindow, Notification, Silence
from alerts.model import (
    Alert,
    AlertName,
    AlertState,
    DetectionEvent,
    DetectionKind,
    Severity,
    data_quality_group_key,
    fingerprint,
    supply_group_key,
)
from parkmon.errors import PayloadError
from parkmon.park import Park

log = logging.getLogger("parkmon.alerts")


class AlertServiceConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    lifecycle: LifecycleConfig = LifecycleConfig()
    retry: RetryPolicy = RetryPolicy()
    critical_within_h: float = Field(default=1.0, ge=0)  # buffer out sooner -> severity critical
    event_retention_ms: int = Field(default=30 * 86_400_000, gt=0)


@dataclass
class ServiceCounters:
    events: int = 0
    duplicates: int = 0
    rejected: int = 0
    alerts_fired: int = 0
    alerts_resolved: int = 0
    notifications: int = 0


class AnnotationSink:
    """Where alert state changes go besides webhooks (InfluxDB annotations). No-op by default."""

    def write(self, alerts: list[Alert]) -> None:  # pragma: no cover - interface
        return None


def maintenance_windows(park: Park) -> list[MaintenanceWindow]:
    """The park's declared maintenance as lifecycle windows: an enterprise, or its listed meters
    (and the exchanges those meters supply)."""
    out: list[MaintenanceWindow] = []
    for w in park.maintenance:
        why = w.description or "declared maintenance"
        if not w.meters:
            out.append(MaintenanceWindow(w.start_ms, w.end_ms, enterprise=w.enterprise, reason=why))
            continue
        for mid in w.meters:
            out.append(MaintenanceWindow(w.start_ms, w.end_ms, meter=mid, reason=why))
            x = park.exchange_of_meter.get(mid)
            if x is not None and mid in x.suppliers:
                out.append(MaintenanceWindow(w.start_ms, w.end_ms, exchange=x.id, reason=why))
    return out


def _coerce(event: Any) -> DetectionEvent:
    if isinstance(event, DetectionEvent):
        return event
    if isinstance(event, dict):
        return DetectionEvent.from_dict(event)
    if isinstance(event, bytes | str):
        return DetectionEvent.from_json(event)
    from detect.events import to_detection_event  # a detector's typed event

    converted: DetectionEvent = to_detection_event(event)
    return converted


class AlertService:
    def __init__(self, park: Park, outbox: Outbox, endpoints: list[Endpoint], *,
                 now_ms: Callable[[], int], config: AlertServiceConfig | None = None,
                 ssrf: SsrfPolicy | None = None, transport: httpx.BaseTransport | None = None,
                 annotations: AnnotationSink | None = None, rng: random.Random | None = None
                 ) -> None:
        self.park = park
        self.outbox = outbox
        self.endpoints = list(endpoints)
        self.config = config or AlertServiceConfig()
        self._now_ms = now_ms
        self.ssrf = ssrf or SsrfPolicy()
        self._transport = transport
        self._rng = rng or random.Random()
        self.annotations = annotations
        self.impact = ImpactAnalyzer(park)
        self.counters = ServiceCounters()
        self.lifecycle = Lifecycle.restore(outbox.load_state(), self.config.lifecycle,
                                           maintenance=maintenance_windows(park))
        self._worker: DeliveryWorker | None = None
        self._last_prune_ms = 0
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique, got {names}")

    @classmethod
    def create(cls, park: Park, db_path: str | Path, endpoints: list[Endpoint], *,
               now_ms: Callable[[], int], **kw: Any) -> AlertService:
        return cls(park, Outbox(db_path, now_ms), endpoints, now_ms=now_ms, **kw)

    # -- intake ---------------------------------------------------------------------------------
    def handle(self, event: Any) -> list[Notification]:
        """Apply one detection event; returns the notifications it made due (already enqueued).

        A malformed event raises PayloadError (the caller dead-letters it); nothing is applied.
        """
        ev = _coerce(event)
        self.counters.events += 1
        if self.outbox.seen_event(ev.event_id):
            self.counters.duplicates += 1
            return []
        now = self._now_ms()
        changed = self._apply(ev, now)
        notes = self.lifecycle.flush(now)
        self._commit(notes, event_ids=[ev.event_id])
        if changed and self.annotations is not None:
            self._annotate(changed)
        return notes

    def handle_many(self, events: Iterable[Any]) -> list[Notification]:
        """Apply several detection events (one detection step's) in one durable step.

        The same notifications as `handle` called for each in turn (every event is applied and
        the lifecycle flushed after it), but one state snapshot and one transaction for all of
        them: the snapshot holds every open group, so one commit per event grew with the square
        of the open alerts (minutes on a generated 10,000-meter park). All or nothing: a crash
        leaves none of them applied, and a replay applies them once (event ids). A malformed
        event raises PayloadError before anything is applied.
        """
        evs = [_coerce(e) for e in events]
        if len(evs) <= 1:
            return self.handle(evs[0]) if evs else []
        now = self._now_ms()
        notes: list[Notification] = []
        changed: list[Alert] = []
        ids: list[str] = []
        for ev in evs:
            self.counters.events += 1
            if ev.event_id in ids or self.outbox.seen_event(ev.event_id):
                self.counters.duplicates += 1
                continue
            ids.append(ev.event_id)
            changed.extend(self._apply(ev, now))
            notes.extend(self.lifecycle.flush(now))
        if not ids:
            return []
        self._commit(notes, event_ids=ids)
        if changed and self.annotations is not None:
            self._annotate(changed)
        return notes

    def tick(self) -> list[Notification]:
        """Flush groups that became due with time (group_wait, group_interval, repeat, silences)."""
        now = self._now_ms()
        notes = self.lifecycle.flush(now)
        if notes:
            self._commit(notes, event_ids=())
        if now - self._last_prune_ms >= 3_600_000:  # forget event ids older than the retention
            self.outbox.prune_events(now - self.config.event_retention_ms)
            self._last_prune_ms = now
        return notes

    def apply_commands(self) -> int:
        """Apply operator commands queued in the database (`parkmon alerts silence ...`)."""
        cmds = self.outbox.commands()
        if not cmds:
            return 0
        for _cid, kind, payload in cmds:
            if kind == "silence.add":
                self.lifecycle.add_silence(Silence.from_dict(payload))
            elif kind == "silence.expire":
                self.lifecycle.expire_silence(str(payload["id"]))
            else:
                log.warning("unknown operator command %r ignored", kind)
        self._commit([], event_ids=(), done_commands=[c[0] for c in cmds])
        return len(cmds)

    def add_silence(self, silence: Silence) -> None:
        self.lifecycle.add_silence(silence)
        self._commit([], event_ids=())

    def expire_silence(self, silence_id: str) -> None:
        self.lifecycle.expire_silence(silence_id)
        self._commit([], event_ids=())

    def _commit(self, notes: list[Notification], event_ids: Sequence[str],
                done_commands: list[int] | None = None) -> None:
        try:
            messages = [NewMessage(ep.name, n.key, render(n, self.park.id, ep.format, ep.name))
                        for n in notes for ep in self.endpoints]
            self.outbox.commit(state=self.lifecycle.snapshot(), messages=messages,
                               event_ids=event_ids, done_commands=done_commands)
        except BaseException:
            # the in-memory state ran ahead of the durable one: go back to what is committed, so
            # a retry of the same event produces the same notifications again
            self.lifecycle = Lifecycle.restore(self.outbox.load_state(), self.config.lifecycle,
                                               maintenance=self.lifecycle.maintenance)
            raise
        self.counters.notifications += len(notes)
        for n in notes:
            log.info("notification %s (%s, %s): %d alert(s)", n.key, n.status.value, n.reason,
                     len(n.alerts))

    def _annotate(self, alerts: list[Alert]) -> None:
        assert self.annotations is not None
        try:
            self.annotations.write(alerts)
        except Exception as exc:  # annotations are best effort: never lose the webhook path
            log.warning("writing %d alert annotation(s) failed: %s", len(alerts), exc)

    # -- event -> alerts ------------------------------------------------------------------------
    def _apply(self, ev: DetectionEvent, now: int) -> list[Alert]:
        if ev.kind == DetectionKind.RESOLVED:
            return self._resolve(ev, now)
        if ev.kind == DetectionKind.DATA_QUALITY:
            alert = self._dq_alert(ev)
        else:
            alert = self._supply_alert(ev, now)
        if self.lifecycle.fire(alert, now):
            self.counters.alerts_fired += 1
            return [alert]
        return []

    def _resolve(self, ev: DetectionEvent, now: int) -> list[Alert]:
        supply = {AlertName.SUPPLY_DROP, AlertName.SUPPLY_DECLINE}
        done = []
        for a in self.lifecycle.firing():
            if ev.resolves is None:
                hit = (ev.exchange_id is not None and a.name in supply
                       and a.labels.get("exchange") == ev.exchange_id) or \
                      (ev.meter_id is not None and a.name == AlertName.DATA_QUALITY
                       and a.labels.get("meter") == ev.meter_id)
            elif ev.resolves == DetectionKind.DATA_QUALITY:
                hit = a.name == AlertName.DATA_QUALITY and a.labels.get("meter") == ev.meter_id \
                    and (ev.dq_kind is None or a.labels.get("dq_kind") == ev.dq_kind)
            else:  # a supply condition is one per exchange: its end ends drop and decline alike
                hit = a.name in supply and a.labels.get("exchange") == ev.exchange_id
            if hit and self.lifecycle.resolve(a.fingerprint, ev.ts_ms, now):
                self.counters.alerts_resolved += 1
                done.append(a.resolved(ev.ts_ms))
        return done

    def _supply_alert(self, ev: DetectionEvent, now: int) -> Alert:
        assert ev.exchange_id is not None and ev.alert_name is not None
        if ev.exchange_id not in self.park.exchanges_by_id:
            raise PayloadError("unknown_exchange", f"no exchange {ev.exchange_id!r} in park "
                               f"{self.park.id!r}")
        x = self.park.exchange(ev.exchange_id)
        start = ev.start_ms if ev.start_ms is not None else ev.ts_ms
        imp = self.impact.analyze(x.id, ev.magnitude, start,
                                  buffer_exhausted_at_ms=ev.buffer_exhausted_at_ms,
                                  live_rates=ev.live_rates)
        labels = {"alertname": ev.alert_name.value, "park": self.park.id, "exchange": x.id,
                  "supplier": imp.supplier, "carrier": x.carrier}
        if x.material:
            labels["material"] = x.material
        earliest = imp.earliest_exhaustion_ms
        soon = earliest is not None and earliest - now <= self.config.critical_within_h * 3_600_000
        if ev.kind == DetectionKind.SUPPLY_DROP:
            severity = Severity.CRITICAL if soon or x.criticality in ("high", "critical") \
                else Severity.WARNING
        else:
            severity = Severity.CRITICAL if soon else Severity.WARNING
        return Alert(
            fingerprint=fingerprint(labels), name=ev.alert_name, state=AlertState.FIRING,
            severity=severity, labels=labels,
            group_key=supply_group_key(self.park.id, imp.supplier),
            starts_at_ms=start, updated_at_ms=ev.ts_ms, summary=supply_summary(imp, ev.kind),
            annotations={"detected_at_ms": ev.ts_ms, **ev.detail}, impact=imp.to_dict())

    def _dq_alert(self, ev: DetectionEvent) -> Alert:
        assert ev.meter_id is not None
        if ev.meter_id not in self.park.meters_by_id:
            raise PayloadError("unknown_meter", f"no meter {ev.meter_id!r} in park {self.park.id!r}")
        m = self.park.meter(ev.meter_id)
        kind = ev.dq_kind or "unknown"
        labels = {"alertname": AlertName.DATA_QUALITY.value, "park": self.park.id,
                  "meter": m.id, "enterprise": m.enterprise, "dq_kind": kind}
        x = self.park.exchange_of_meter.get(m.id)
        ann: dict[str, Any] = {"detected_at_ms": ev.ts_ms, **ev.detail}
        if x is not None:
            ann["exchange"] = x.id
        return Alert(
            fingerprint=fingerprint(labels), name=AlertName.DATA_QUALITY, state=AlertState.FIRING,
            severity=Severity.WARNING, labels=labels,
            group_key=data_quality_group_key(self.park.id, m.enterprise),
            starts_at_ms=ev.start_ms if ev.start_ms is not None else ev.ts_ms,
            updated_at_ms=ev.ts_ms,
            summary=f"meter {m.id} of {m.enterprise} is {kind}: data quality, not a supply change",
            annotations=ann, impact=None)

    # -- delivery -------------------------------------------------------------------------------
    def make_senders(self) -> dict[str, WebhookSender]:
        return {ep.name: WebhookSender(ep, policy=self.config.retry, ssrf=self.ssrf,
                                       transport=self._transport, now_ms=self._now_ms,
                                       rng=self._rng) for ep in self.endpoints}

    def make_worker(self, outbox: Outbox | None = None) -> DeliveryWorker:
        return DeliveryWorker(outbox or self.outbox, self.make_senders(), self._now_ms)

    def deliver_due(self) -> int:
        """One synchronous delivery pass over every endpoint (tests, one-process demo)."""
        if self._worker is None:
            self._worker = self.make_worker()
        return self._worker.deliver_due()

    def close(self) -> None:
        if self._worker is not None:
            for s in self._worker.senders.values():
                s.close()
        self.outbox.close()


def supply_summary(imp: Impact, kind: DetectionKind) -> str:
    what = "dropped" if kind == DetectionKind.SUPPLY_DROP else "is declining"
    parts = []
    for c in imp.consumers:
        if c.hours_to_exhaustion is None:
            buf = "buffer not at risk"
        elif c.hours_to_exhaustion <= 0:
            buf = "no buffer"
        else:
            buf = f"buffer out in {c.hours_to_exhaustion:.1f} h"
        parts.append(f"{c.enterprise} ({c.share_at_risk:.0%} of its {imp.material or imp.carrier} "
                     f"input, {buf})")
    text = (f"{imp.carrier if not imp.material else imp.material} supply of exchange "
            f"{imp.exchange} from {imp.supplier} {what} by {imp.magnitude:.0%} "
            f"({imp.lost_rate:.3g} {imp.rate_unit}); consumers hit: {', '.join(parts) or 'none'}")
    if imp.second_order:
        text += "; then " + ", ".join(sorted({c.enterprise for c in imp.second_order}))
    if imp.alternatives:
        best = imp.alternatives[0]
        text += (f"; best alternative: {best.enterprise} ({best.spare_capacity:.3g} "
                 f"{best.rate_unit} spare)")
    return text
