"""Alert annotations in a real InfluxDB 2: points readable by Flux, a replay overwrites, not adds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from influxdb_client import InfluxDBClient

from alerts.impact import MS_PER_H, ImpactAnalyzer
from alerts.influx_annotations import MEASUREMENT, InfluxAnnotationWriter
from alerts.model import Alert, AlertName, AlertState, Severity, fingerprint
from tests.support.alerts import toy_park

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


@pytest.fixture()
def bucket() -> Iterator[tuple[Any, str]]:
    from parkmon import devservices

    influx: Any = devservices.ensure("influxdb", quiet=True)
    name = f"alerts-test-{uuid.uuid4().hex[:8]}"
    b = influx.create_bucket(name)
    try:
        yield influx, name
    finally:
        influx.delete_bucket(b["id"])


def supply_alert(state: AlertState = AlertState.FIRING) -> Alert:
    impact = ImpactAnalyzer(toy_park()).analyze("steam", 0.5, T0).to_dict()
    labels = {"alertname": "supply_drop", "park": "toy", "exchange": "steam", "supplier": "power"}
    a = Alert(fingerprint=fingerprint(labels), name=AlertName.SUPPLY_DROP, state=AlertState.FIRING,
              severity=Severity.CRITICAL, labels=labels, group_key="toy/supply/power",
              starts_at_ms=T0, updated_at_ms=T0, summary="steam down", impact=impact)
    return a if state == AlertState.FIRING else a.resolved(T0 + MS_PER_H)


def query(influx: Any, bucket: str) -> list[dict[str, Any]]:
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as c:
        tables = c.query_api().query(
            f'from(bucket: "{bucket}") |> range(start: 0) '
            f'|> filter(fn: (r) => r._measurement == "{MEASUREMENT}") '
            '|> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")')
        return [rec.values for t in tables for rec in t.records]


def test_firing_and_resolved_points(bucket) -> None:
    influx, name = bucket
    with InfluxAnnotationWriter(influx.url, influx.token, influx.org, name) as w:
        w.write([supply_alert()])
        w.write([supply_alert(AlertState.RESOLVED)])
        w.write([supply_alert()])  # a replay of the same state change
    rows = sorted(query(influx, name), key=lambda r: r["_time"])
    assert [(r["state"], r["active"]) for r in rows] == [("firing", 1), ("resolved", 0)]
    first = rows[0]
    assert int(first["_time"].timestamp() * 1000) == T0
    assert first["exchange"] == "steam" and first["supplier"] == "power"
    assert first["consumers"] == "refinery,biotech" and first["magnitude"] == 0.5
    assert first["title"] == "FIRING supply_drop steam"
