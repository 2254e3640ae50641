"""Alert state changes as InfluxDB points, for Grafana annotations.

Measurement `alerts`, one point per state change, written synchronously (no batching: a failure is
an exception the caller sees, PITFALLS.md):

    tags    park, alertname, severity, state (firing|resolved), group (incident group key),
            fingerprint, exchange / meter / supplier / enterprise when the alert has them
            (all bounded by the park's size: no values in tags)
    fields  title (str), text (str: the summary), consumers (str: comma-separated enterprises),
            magnitude (float, supply alerts), active (int 1 firing / 0 resolved)
    time    starts_at_ms for firing, ends_at_ms for resolved (event time, ms precision), so a
            replay overwrites the same point instead of adding one.

Grafana: an annotation query on `alerts` with `title`/`text` fields and the tags as annotation tags;
a firing point and its resolved point of the same fingerprint delimit a region.
"""

from __future__ import annotations

from typing import Any

from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from alerts.model import Alert, AlertState
from alerts.service import AnnotationSink
from parkmon.errors import SinkError

MEASUREMENT = "alerts"
_TAG_LABELS = ("exchange", "meter", "supplier", "enterprise", "dq_kind")


def alert_point(a: Alert) -> Point:
    ts = a.ends_at_ms if a.state == AlertState.RESOLVED and a.ends_at_ms is not None \
        else a.starts_at_ms
    p = (Point(MEASUREMENT)
         .tag("park", a.labels.get("park", ""))
         .tag("alertname", a.name.value)
         .tag("severity", a.severity.value)
         .tag("state", a.state.value)
         .tag("group", a.group_key)
         .tag("fingerprint", a.fingerprint))
    for k in _TAG_LABELS:
        if a.labels.get(k):
            p = p.tag(k, a.labels[k])
    consumers: list[str] = []
    if a.impact:
        consumers = [c["enterprise"] for c in a.impact.get("consumers", [])]
        p = p.field("magnitude", float(a.impact.get("magnitude", 0.0)))
    title = f"{a.state.value.upper()} {a.name.value} " + \
        (a.labels.get("exchange") or a.labels.get("meter") or "")
    return (p.field("title", title.strip())
            .field("text", a.summary)
            .field("consumers", ",".join(consumers))
            .field("active", 1 if a.state == AlertState.FIRING else 0)
            .time(ts, WritePrecision.MS))


class InfluxAnnotationWriter(AnnotationSink):
    def __init__(self, url: str, token: str, org: str, bucket: str, timeout_ms: int = 10_000) -> None:
        self.bucket = bucket
        self.org = org
        self._client = InfluxDBClient(url=url, token=token, org=org, timeout=timeout_ms)
        self._write = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        try:
            self._write.write(bucket=self.bucket, org=self.org,
                              record=[alert_point(a) for a in alerts])
        except Exception as exc:
            raise SinkError(f"InfluxDB refused {len(alerts)} alert annotation(s): {exc}") from exc

    def close(self) -> None:
        self._write.close()
        self._client.close()

    def __enter__(self) -> InfluxAnnotationWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
