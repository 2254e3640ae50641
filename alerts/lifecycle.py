"""The alert lifecycle as a pure state machine: no I/O, the clock is passed in.

    lc = Lifecycle(LifecycleConfig(), maintenance=[...])
    lc.fire(alert, now_ms)              # firing alert (new or update): deduplicated by fingerprint
    lc.resolve(fingerprint, ts_ms)      # the condition ended
    notes = lc.flush(now_ms)            # notifications that are due now (call on every event/tick)
    state = lc.snapshot(); Lifecycle.restore(state, config)   # JSON round trip, persisted by the outbox

Rules (Alertmanager-like, with the resolve loss of Alertmanager #226/#2754 designed out):
- Alerts are grouped by `Alert.group_key` (one incident = one group = one notification stream).
- A new group waits `group_wait_ms` so that alerts of the same incident (every exchange of a tripped
  supplier) arrive in one notification; later changes wait at least `group_interval_ms` after the
  previous notification and `group_wait_ms` after the first of them (the supplier's exchanges
  recovering together give one notification too); an unchanged group with firing alerts is re-sent every `repeat_interval_ms`.
- A firing alert that is already known produces nothing (deduplication). A severity escalation counts
  as a change.
- Silences and maintenance windows hide firing alerts from notifications.
- Resolved notifications are always delivered for an alert whose firing was delivered, even if a
  silence or maintenance window covers it by the time it resolves. An alert that fired and resolved
  before its group was first notified is delivered once as resolved unless it is suppressed.
- Every notification gets a key `<group_key>#<seq>` with a per-group sequence number that never
  repeats (the outbox derives the webhook-id from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from alerts.model import SEVERITY_RANK, Alert, AlertState, Severity


class LifecycleConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    group_wait_ms: int = Field(default=10_000, ge=0)
    group_interval_ms: int = Field(default=60_000, ge=0)
    repeat_interval_ms: int = Field(default=4 * 3_600_000, gt=0)


@dataclass(frozen=True, slots=True)
class Silence:
    """Hide firing alerts whose labels equal every matcher, between starts and ends (UTC ms)."""

    id: str
    matchers: dict[str, str]
    starts_at_ms: int
    ends_at_ms: int
    comment: str = ""
    created_by: str = ""

    def active(self, now_ms: int) -> bool:
        return self.starts_at_ms <= now_ms < self.ends_at_ms

    def matches(self, alert: Alert, now_ms: int) -> bool:
        return self.active(now_ms) and all(alert.labels.get(k) == v for k, v in self.matchers.items())

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "matchers": dict(self.matchers), "starts_at_ms": self.starts_at_ms,
                "ends_at_ms": self.ends_at_ms, "comment": self.comment, "created_by": self.created_by}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Silence:
        return cls(id=d["id"], matchers=dict(d["matchers"]), starts_at_ms=int(d["starts_at_ms"]),
                   ends_at_ms=int(d["ends_at_ms"]), comment=d.get("comment", ""),
                   created_by=d.get("created_by", ""))


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A declared maintenance window (from the park file): an enterprise, an exchange or a meter.

    It covers a supply alert whose supplier / exchange / consumer is the target and a data-quality
    alert on a meter of that enterprise or on that meter.
    """

    starts_at_ms: int
    ends_at_ms: int
    enterprise: str | None = None
    exchange: str | None = None
    meter: str | None = None
    reason: str = ""

    def matches(self, alert: Alert, now_ms: int) -> bool:
        if not (self.starts_at_ms <= now_ms < self.ends_at_ms):
            return False
        lab = alert.labels
        if self.exchange is not None and lab.get("exchange") == self.exchange:
            return True
        if self.meter is not None and lab.get("meter") == self.meter:
            return True
        if self.enterprise is not None:
            if self.enterprise in (lab.get("supplier"), lab.get("enterprise")):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to every endpoint: the current view of one alert group."""

    key: str
    group_key: str
    seq: int
    status: AlertState
    reason: str  # "new" | "update" | "repeat"
    alerts: tuple[Alert, ...]
    created_at_ms: int

    @property
    def firing(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.state == AlertState.FIRING)

    @property
    def resolved(self) -> tuple[Alert, ...]:
        return tuple(a for a in self.alerts if a.state == AlertState.RESOLVED)


@dataclass(slots=True)
class _Group:
    key: str
    first_seen_ms: int
    alerts: dict[str, Alert] = field(default_factory=dict)
    last_notified_ms: int | None = None
    changed_at_ms: int | None = None  # first unsent change since the last notification
    notified_firing: dict[str, Severity] = field(default_factory=dict)

    def mark_changed(self, now_ms: int) -> None:
        if self.changed_at_ms is None:
            self.changed_at_ms = now_ms

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "first_seen_ms": self.first_seen_ms,
                "alerts": [a.to_dict() for a in self.alerts.values()],
                "last_notified_ms": self.last_notified_ms,
                "changed_at_ms": self.changed_at_ms,
                "notified_firing": {k: v.value for k, v in self.notified_firing.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> _Group:
        alerts = [Alert.from_dict(a) for a in d["alerts"]]
        return cls(key=d["key"], first_seen_ms=int(d["first_seen_ms"]),
                   alerts={a.fingerprint: a for a in alerts},
                   last_notified_ms=d.get("last_notified_ms"),
                   changed_at_ms=d.get("changed_at_ms"),
                   notified_firing={k: Severity(v) for k, v in d["notified_firing"].items()})


class Lifecycle:
    def __init__(self, config: LifecycleConfig | None = None, *,
                 silences: list[Silence] | None = None,
                 maintenance: list[MaintenanceWindow] | None = None) -> None:
        self.config = config or LifecycleConfig()
        self._groups: dict[str, _Group] = {}
        self._by_fp: dict[str, str] = {}  # fingerprint -> group key
        self._seq: dict[str, int] = {}
        self._silences: dict[str, Silence] = {s.id: s for s in (silences or [])}
        self.maintenance: list[MaintenanceWindow] = list(maintenance or [])

    # -- inputs ---------------------------------------------------------------------------------
    def fire(self, alert: Alert, now_ms: int) -> bool:
        """Record a firing alert. Returns True when it is new (not a duplicate of a firing one)."""
        if alert.state != AlertState.FIRING:
            raise ValueError("fire() takes a firing alert")
        gk = self._by_fp.get(alert.fingerprint)
        if gk is not None and gk != alert.group_key:
            # the incident attribution changed: move the alert (rare; keeps one home per alert)
            old = self._groups[gk]
            old.alerts.pop(alert.fingerprint, None)
            old.notified_firing.pop(alert.fingerprint, None)
            self._drop_if_empty(old)
            gk = None
        group = self._groups.get(alert.group_key)
        if group is None:
            group = _Group(key=alert.group_key, first_seen_ms=now_ms)
            self._groups[alert.group_key] = group
        self._by_fp[alert.fingerprint] = alert.group_key
        prev = group.alerts.get(alert.fingerprint)
        if prev is not None and prev.state == AlertState.FIRING:
            group.alerts[alert.fingerprint] = replace(alert, starts_at_ms=prev.starts_at_ms)
            if SEVERITY_RANK[alert.severity] > SEVERITY_RANK[prev.severity]:
                group.mark_changed(now_ms)
            return False
        group.alerts[alert.fingerprint] = alert
        group.mark_changed(now_ms)
        return True

    def resolve(self, fingerprint: str, ts_ms: int, now_ms: int | None = None) -> bool:
        """Mark a firing alert resolved at event time `ts_ms` (seen at wall time `now_ms`, default
        ts_ms). Returns False when it is unknown or already resolved."""
        gk = self._by_fp.get(fingerprint)
        if gk is None:
            return False
        group = self._groups[gk]
        alert = group.alerts.get(fingerprint)
        if alert is None or alert.state != AlertState.FIRING:
            return False
        group.alerts[fingerprint] = alert.resolved(ts_ms)
        group.mark_changed(ts_ms if now_ms is None else now_ms)
        return True

    def add_silence(self, silence: Silence) -> None:
        self._silences[silence.id] = silence

    def expire_silence(self, silence_id: str) -> None:
        self._silences.pop(silence_id, None)

    # -- queries --------------------------------------------------------------------------------
    def firing(self) -> list[Alert]:
        return [a for g in self._groups.values() for a in g.alerts.values()
                if a.state == AlertState.FIRING]

    def get(self, fingerprint: str) -> Alert | None:
        gk = self._by_fp.get(fingerprint)
        return None if gk is None else self._groups[gk].alerts.get(fingerprint)

    def silences(self) -> list[Silence]:
        return list(self._silences.values())

    def suppressed_by(self, alert: Alert, now_ms: int) -> str | None:
        """Why a firing alert is hidden: 'silence:<id>' or 'maintenance', None when visible."""
        for s in self._silences.values():
            if s.matches(alert, now_ms):
                return f"silence:{s.id}"
        for w in self.maintenance:
            if w.matches(alert, now_ms):
                return "maintenance"
        return None

    def next_due_ms(self) -> int | None:
        """Earliest time at which flush() could emit something (for a sleeping loop)."""
        due: list[int] = []
        for g in self._groups.values():
            if g.last_notified_ms is None:
                due.append(g.first_seen_ms + self.config.group_wait_ms)
            else:
                due.append(g.last_notified_ms + min(self.config.group_interval_ms,
                                                    self.config.repeat_interval_ms))
        return min(due) if due else None

    # -- output ---------------------------------------------------------------------------------
    def flush(self, now_ms: int) -> list[Notification]:
        out: list[Notification] = []
        for group in list(self._groups.values()):
            note = self._flush_group(group, now_ms)
            if note is not None:
                out.append(note)
        return out

    def has_unsent_changes(self) -> bool:
        """Whether some group holds a change (new/worse firing, resolve) not notified yet,
        ignoring silences (a conservative answer for 'is there still something to send')."""
        for g in self._groups.values():
            for fp, a in g.alerts.items():
                if a.state == AlertState.RESOLVED:
                    return True
                sev = g.notified_firing.get(fp)
                if sev is None or SEVERITY_RANK[a.severity] > SEVERITY_RANK[sev]:
                    return True
        return False

    def _flush_group(self, g: _Group, now_ms: int) -> Notification | None:
        cfg = self.config
        visible: list[Alert] = []
        resolved_to_send: list[Alert] = []
        drop: list[str] = []
        for fp, a in g.alerts.items():
            hidden = self.suppressed_by(a, now_ms) is not None
            if a.state == AlertState.FIRING:
                if not hidden:
                    visible.append(a)
            elif fp in g.notified_firing or not hidden:
                resolved_to_send.append(a)
            else:
                drop.append(fp)  # fired and resolved while suppressed, never told: forget it
        for fp in drop:
            del g.alerts[fp]
            self._by_fp.pop(fp, None)

        new_or_worse = any(
            a.fingerprint not in g.notified_firing
            or SEVERITY_RANK[a.severity] > SEVERITY_RANK[g.notified_firing[a.fingerprint]]
            for a in visible)
        changed = new_or_worse or bool(resolved_to_send)
        if changed:
            if g.last_notified_ms is None:
                due = g.first_seen_ms + cfg.group_wait_ms
            else:  # not before group_interval, and let the rest of a burst of changes arrive
                due = max(g.last_notified_ms + cfg.group_interval_ms,
                          (g.changed_at_ms or 0) + cfg.group_wait_ms)
            if now_ms < due:
                return None
            reason = "new" if g.last_notified_ms is None else "update"
        elif visible and g.last_notified_ms is not None and \
                now_ms - g.last_notified_ms >= cfg.repeat_interval_ms:
            reason = "repeat"
        else:
            self._drop_if_empty(g)
            return None

        seq = self._seq.get(g.key, 0) + 1
        self._seq[g.key] = seq
        alerts = tuple(sorted(visible, key=lambda a: (a.starts_at_ms, a.fingerprint))) + \
            tuple(sorted(resolved_to_send, key=lambda a: (a.ends_at_ms or 0, a.fingerprint)))
        note = Notification(
            key=f"{g.key}#{seq}", group_key=g.key, seq=seq,
            status=AlertState.FIRING if visible else AlertState.RESOLVED,
            reason=reason, alerts=alerts, created_at_ms=now_ms)
        g.last_notified_ms = now_ms
        g.changed_at_ms = None
        for a in resolved_to_send:
            g.notified_firing.pop(a.fingerprint, None)
            del g.alerts[a.fingerprint]
            self._by_fp.pop(a.fingerprint, None)
        for a in visible:
            g.notified_firing[a.fingerprint] = a.severity
        self._drop_if_empty(g)
        return note

    def _drop_if_empty(self, g: _Group) -> None:
        if not g.alerts and self._groups.get(g.key) is g:
            del self._groups[g.key]

    # -- persistence ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"version": 1,
                "groups": [g.to_dict() for g in self._groups.values()],
                "seq": dict(self._seq),
                "silences": [s.to_dict() for s in self._silences.values()]}

    @classmethod
    def restore(cls, state: dict[str, Any] | None, config: LifecycleConfig | None = None, *,
                maintenance: list[MaintenanceWindow] | None = None) -> Lifecycle:
        lc = cls(config, maintenance=maintenance)
        if not state:
            return lc
        for gd in state.get("groups", []):
            g = _Group.from_dict(gd)
            lc._groups[g.key] = g
            for fp in g.alerts:
                lc._by_fp[fp] = g.key
        lc._seq = {k: int(v) for k, v in state.get("seq", {}).items()}
        for sd in state.get("silences", []):
            s = Silence.from_dict(sd)
            lc._silences[s.id] = s
        return lc
