"""Webhook bodies: the documented parkmon JSON payload (JSON Schema: alerts/schemas/alert.schema.json)
and, as an option per endpoint, the Alertmanager webhook format (version 4) so that existing
Alertmanager receivers (e.g. chat bridges) can consume parkmon notifications.

Bodies are rendered once, when the notification is enqueued; retries send the same bytes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from typing import Any

from alerts.delivery.webhook import PayloadFormat
from alerts.lifecycle import Notification
from alerts.model import Alert, AlertState

PAYLOAD_VERSION = "1"
EVENT_TYPE = "parkmon.alert.notification"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end time"


def iso(ts_ms: int | None) -> str | None:
    if ts_ms is None:
        return None
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _alert_json(a: Alert) -> dict[str, Any]:
    return {
        "fingerprint": a.fingerprint,
        "name": a.name.value,
        "state": a.state.value,
        "severity": a.severity.value,
        "labels": dict(sorted(a.labels.items())),
        "summary": a.summary,
        "starts_at": iso(a.starts_at_ms),
        "ends_at": iso(a.ends_at_ms),
        "starts_at_ms": a.starts_at_ms,
        "ends_at_ms": a.ends_at_ms,
        "annotations": a.annotations,
        "impact": a.impact,
    }


def affected_consumers(note: Notification) -> list[str]:
    """Every enterprise directly hit by a firing supply alert of the notification, once."""
    seen: dict[str, None] = {}
    for a in note.alerts:
        if a.impact and a.state == AlertState.FIRING:
            for c in a.impact.get("consumers", []):
                seen.setdefault(c["enterprise"], None)
    return list(seen)


def downstream_consumers(note: Notification) -> list[str]:
    """Enterprises hit second-order (through a direct consumer's outputs), not hit directly."""
    direct = set(affected_consumers(note))
    seen: dict[str, None] = {}
    for a in note.alerts:
        if a.impact and a.state == AlertState.FIRING:
            for c in a.impact.get("second_order", []):
                if c["enterprise"] not in direct:
                    seen.setdefault(c["enterprise"], None)
    return list(seen)


def parkmon_payload(note: Notification, park_id: str) -> dict[str, Any]:
    return {
        "version": PAYLOAD_VERSION,
        "type": EVENT_TYPE,
        "park": park_id,
        "notification_key": note.key,
        "group_key": note.group_key,
        "sequence": note.seq,
        "status": note.status.value,
        "reason": note.reason,
        "created_at": iso(note.created_at_ms),
        "affected_consumers": affected_consumers(note),
        "downstream_consumers": downstream_consumers(note),
        "alerts": [_alert_json(a) for a in note.alerts],
    }


def alertmanager_payload(note: Notification, park_id: str, receiver: str) -> dict[str, Any]:
    alerts: list[dict[str, Any]] = []
    label_sets: list[dict[str, str]] = []
    for a in note.alerts:
        ann: dict[str, str] = {"summary": a.summary}
        if a.impact:
            ann["impact"] = json.dumps(a.impact, separators=(",", ":"), sort_keys=True)
        for k, v in a.annotations.items():
            ann[k] = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        labels = {"alertname": a.name.value, "severity": a.severity.value, **a.labels}
        label_sets.append(labels)
        alerts.append({
            "status": a.state.value,
            "labels": labels,
            "annotations": ann,
            "startsAt": iso(a.starts_at_ms),
            "endsAt": iso(a.ends_at_ms) or ZERO_TIME,
            "generatorURL": "",
            "fingerprint": a.fingerprint,
        })
    common = dict(set.intersection(*(set(ls.items()) for ls in label_sets))) if label_sets else {}
    return {
        "version": "4",
        "groupKey": note.group_key,
        "truncatedAlerts": 0,
        "status": note.status.value,
        "receiver": receiver,
        "groupLabels": {"park": park_id, "group": note.group_key},
        "commonLabels": dict(sorted(common.items())),
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts,
    }


def render(note: Notification, park_id: str, fmt: PayloadFormat, receiver: str) -> bytes:
    body = (parkmon_payload(note, park_id) if fmt == PayloadFormat.PARKMON
            else alertmanager_payload(note, park_id, receiver))
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@lru_cache(maxsize=1)
def alert_payload_schema() -> dict[str, Any]:
    text = resources.files("alerts.schemas").joinpath("alert.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema
