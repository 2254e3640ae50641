"""The InfluxDB store: idempotent overwrite by window start, NaN visible, downsampling task."""

from __future__ import annotations

import math
import time

import httpx
import pytest

from streams.core.points import PointSpec
from streams.influx_setup import ensure_long_term, run_task_now
from streams.influx_sink import InfluxSink
from tests.support.streams import wait_for

pytestmark = pytest.mark.integration

HOUR = 3_600_000


def _query(influx, bucket, flux_filter):
    from influxdb_client import InfluxDBClient

    flux = f'from(bucket: "{bucket}") |> range(start: 0) |> filter(fn: (r) => {flux_filter})'
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as c:
        return [(r.get_time(), r.values) for t in c.query_api().query(flux) for r in t.records]


def _mw(meter, ts, q):
    return PointSpec("meter_window", (("meter", meter), ("park", "st"), ("view", "1m")),
                     (("quantity", q), ("count", 1)), ts)


def test_replay_overwrites_and_nonfinite_is_visible(influx, influx_bucket):
    dead = []
    sink = InfluxSink.connect(influx.url, influx.token, influx.org, influx_bucket.name,
                              on_deadletter=lambda p, r: dead.append(r))
    t = 1_790_000_000_000
    sink.write([_mw("m1", t, 1.0), _mw("m1", t + 60_000, 2.0)])
    sink.write([_mw("m1", t, 5.0)])  # the corrected / replayed window
    rows = _query(influx, influx_bucket.name, 'r._field == "quantity"')
    assert sorted(r[1]["_value"] for r in rows) == [2.0, 5.0]
    sink.write([_mw("m2", t, math.nan)])
    rows = _query(influx, influx_bucket.name, 'r.meter == "m2"')
    fields = {r[1]["_field"]: r[1]["_value"] for r in rows}
    assert fields == {"count": 1, "nonfinite_fields": "quantity"}
    assert dead == ["not_finite"] and sink.stats.nonfinite_fields == 1


def test_downsampling_task_sums_hours_into_long_term_bucket(influx, influx_bucket):
    now = int(time.time() * 1000)
    h0 = now - now % HOUR - HOUR  # the previous full hour, inside the task's 2 h look-back
    sink = InfluxSink.connect(influx.url, influx.token, influx.org, influx_bucket.name)
    # 60 one-minute windows of 0.5 t and up to 10 of 1.0 t in the current hour; only windows
    # already started count (the task's range stops at now: early in an hour there are fewer)
    current = [h0 + HOUR + i * 60_000 for i in range(10) if h0 + HOUR + i * 60_000 < now]
    sink.write([_mw("m1", h0 + i * 60_000, 0.5) for i in range(60)]
               + [_mw("m1", t, 1.0) for t in current])
    res = ensure_long_term(influx.url, influx.token, influx.org, influx_bucket.name,
                           raw_retention_days=7, hourly_retention_days=30)
    try:
        run_task_now(influx.url, influx.token, res["task_id"])

        def hourly():
            rows = _query(influx, res["bucket_1h"],
                          'r._measurement == "meter_window" and r._field == "quantity"')
            return {int(t.timestamp() * 1000): v["_value"] for t, v in rows} or None

        got = wait_for(hourly, 60, 1)
        expected = {h0: pytest.approx(30.0)}
        if current:
            expected[h0 + HOUR] = pytest.approx(1.0 * len(current))
        assert got == expected
    finally:
        with httpx.Client(base_url=influx.url,
                          headers={"Authorization": f"Token {influx.token}"}) as c:
            c.delete(f"/api/v2/tasks/{res['task_id']}")
            bs = c.get("/api/v2/buckets", params={"name": res["bucket_1h"]}).json()["buckets"]
            for b in bs:
                c.delete(f"/api/v2/buckets/{b['id']}")
