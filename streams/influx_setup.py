"""Retention and downsampling of the KPI store through InfluxDB buckets and a task.

`ensure_long_term(...)` is idempotent: it sets the raw bucket's retention, creates the hourly
bucket and (re)creates the downsampling task. See docs/influxdb-schema.md.
"""

from __future__ import annotations

from typing import Any

import httpx

from parkmon.errors import SinkError


def downsample_flux(bucket: str, target: str, org: str, every: str = "1h",
                    lookback: str = "-2h") -> str:
    return f'''
option task = {{name: "parkmon-downsample-{bucket}", every: {every}, offset: 5m}}

from(bucket: "{bucket}")
  |> range(start: {lookback})
  |> filter(fn: (r) => r._measurement == "meter_window"
                       and (r._field == "quantity" or r._field == "co2e_t"))
  |> aggregateWindow(every: {every}, fn: sum, createEmpty: false, timeSrc: "_start")
  |> set(key: "view", value: "{every}")
  |> to(bucket: "{target}", org: "{org}")

from(bucket: "{bucket}")
  |> range(start: {lookback})
  |> filter(fn: (r) => r._measurement == "kpi" and (r.view == "1h" or r.view == "24h"))
  |> to(bucket: "{target}", org: "{org}")
'''


class _Api:
    def __init__(self, url: str, token: str) -> None:
        self.c = httpx.Client(base_url=url, timeout=30,
                              headers={"Authorization": f"Token {token}"})

    def req(self, method: str, path: str, missing_ok: bool = False, **kw: Any) -> Any:
        r = self.c.request(method, path, **kw)
        if missing_ok and r.status_code == 404:
            return None
        if r.status_code >= 300:
            raise SinkError(f"InfluxDB {method} {path}: {r.status_code} {r.text[:300]}")
        return r.json() if r.content else None


def ensure_long_term(url: str, token: str, org: str, bucket: str, *,
                     raw_retention_days: int = 30, hourly_retention_days: int = 5 * 365,
                     hourly_bucket: str | None = None) -> dict[str, str]:
    """Returns {"bucket_1h": name, "task_id": id}."""
    api = _Api(url, token)
    target = hourly_bucket or f"{bucket}_1h"
    orgs = api.req("GET", "/api/v2/orgs", params={"org": org})["orgs"]
    if not orgs:
        raise SinkError(f"InfluxDB org {org!r} not found")
    org_id = orgs[0]["id"]

    def find(name: str) -> dict[str, Any] | None:
        bs = api.req("GET", "/api/v2/buckets", missing_ok=True,
                     params={"name": name, "orgID": org_id})
        return bs["buckets"][0] if bs and bs["buckets"] else None

    raw = find(bucket)
    if raw is None:
        raise SinkError(f"InfluxDB bucket {bucket!r} not found")
    api.req("PATCH", f"/api/v2/buckets/{raw['id']}", json={"retentionRules": [
        {"type": "expire", "everySeconds": raw_retention_days * 86400}]})
    rules = [{"type": "expire", "everySeconds": hourly_retention_days * 86400}]
    hb = find(target)
    if hb is None:
        api.req("POST", "/api/v2/buckets",
                json={"orgID": org_id, "name": target, "retentionRules": rules})
    name = f"parkmon-downsample-{bucket}"
    for t in api.req("GET", "/api/v2/tasks", params={"name": name, "orgID": org_id})["tasks"]:
        api.req("DELETE", f"/api/v2/tasks/{t['id']}")
    task = api.req("POST", "/api/v2/tasks",
                   json={"orgID": org_id, "flux": downsample_flux(bucket, target, org),
                         "status": "active"})
    return {"bucket_1h": target, "task_id": task["id"]}


def run_task_now(url: str, token: str, task_id: str) -> str:
    """Start a run of the task immediately (tests, backfills); returns the run id."""
    run = _Api(url, token).req("POST", f"/api/v2/tasks/{task_id}/runs", json={})
    return str(run["id"])
