"""`parkmon report` on a real InfluxDB filled with a simulated Kalundborg run, opened in a real
headless Chromium: the page renders without script errors, plotly draws the network and the
Sankey, and the figures on the page equal values queried here from InfluxDB with Flux written in
this test (not the report's queries)."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from typing import Any

import pytest

from apps import control_report
from tests.integration.test_demo_report_browser import CHROMIUM_FLAGS, _chromium
from tests.support.control_room import START_MS, fill_bucket

pytestmark = pytest.mark.integration

START, STOP = "2026-11-02T00:00:00Z", "2026-11-02T08:03:00Z"


@pytest.fixture(scope="module")
def page(influx: Any, tmp_path_factory: pytest.TempPathFactory):
    from influxdb_client import InfluxDBClient

    out = tmp_path_factory.mktemp("control-report")
    created = influx.create_bucket(f"report-{os.getpid()}-{uuid.uuid4().hex[:10]}")
    try:
        run = fill_bucket(influx.url, influx.token, influx.org, created["name"])
        assert run.start_ms == START_MS
        report = out / "report.html"
        assert control_report.main(["--url", influx.url, "--token", influx.token, "--org",
                                    influx.org, "--bucket", created["name"], "--start", START,
                                    "--stop", STOP, "--out", str(report)]) == 0
        profile = out / "profile"
        dom = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                              "--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri()],
                             capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = out / "report.png"
        subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        "--window-size=1300,3000", f"--screenshot={shot}", report.as_uri()],
                       capture_output=True, timeout=120, check=True)
        client = InfluxDBClient(url=influx.url, token=influx.token, org=influx.org,
                                timeout=60_000)

        def query(flux: str) -> list[dict[str, Any]]:
            flux = flux.replace("BUCKET", created["name"])
            return [dict(r.values) for t in client.query_api().query(flux, org=influx.org)
                    for r in t.records]

        yield dom, shot, query, run
        client.close()
    finally:
        influx.delete_bucket(created["id"])


def _data_value(dom: str, element_id: str) -> float:
    m = re.search(rf'id="{re.escape(element_id)}" data-value="([^"]+)"', dom)
    assert m, f"no #{element_id} on the page"
    return float(m.group(1))


def test_the_page_renders_without_script_errors(page):
    dom, shot, _, _ = page
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [c for c in console if "rror" in c or "Uncaught" in c], console
    errors = re.search(r'<div id="js-errors">(.*?)</div>', dom.stdout, re.S)
    assert errors is not None and errors.group(1).strip() == ""
    assert dom.stdout.count('class="plot-container plotly"') == 2  # network and Sankey
    assert 'class="sankey"' in dom.stdout  # plotly drew the Sankey's svg group
    assert shot.stat().st_size > 50_000


def test_indicators_on_the_page_equal_influxdb(page):
    dom, _, query, _ = page
    rows = query(f"""
from(bucket: "BUCKET")
  |> range(start: {START}, stop: 2026-11-02T08:03:00Z)
  |> filter(fn: (r) => r._measurement == "kpi" and r.scope == "park" and r.view == "1h")
  |> filter(fn: (r) => r._time <= 2026-11-02T07:03:00Z)
  |> last()""")
    expected = {r["_field"]: float(r["_value"]) for r in rows}
    shown = 0
    for key, _label, _kind in control_report.KPIS:
        if key in expected:
            assert _data_value(dom.stdout, f"kpi-1h-{key}") == pytest.approx(expected[key],
                                                                             rel=1e-12)
            shown += 1
    assert shown >= 8


def test_open_incidents_and_exchange_rates_equal_influxdb(page):
    dom, _, query, run = page
    firing = [f for f, s in run.last_state.items() if s == "firing"]
    assert _data_value(dom.stdout, "open-count") == len(firing) >= 1
    # the gypsum edge's live rate: mean of the consumer meter over the last 15 min of the range
    rows = query(f"""
from(bucket: "BUCKET")
  |> range(start: 2026-11-02T07:48:00Z, stop: {STOP})
  |> filter(fn: (r) => r._measurement == "meter_window" and r.meter == "gyproc.gypsum_in"
                       and r._field == "rate_per_h")
  |> mean()""")
    assert _data_value(dom.stdout, "rate-gypsum:asnaes&gt;gyproc") == pytest.approx(
        rows[0]["_value"], rel=1e-9)
    assert re.search(r'<tr class="declining"><td>gypsum:asnaes&gt;gyproc</td>', dom.stdout)
    # every alert state change written to InfluxDB is a row of the incidents table
    table = dom.stdout[dom.stdout.index('id="incidents"'):]
    table = table[:table.index("</table>")]
    assert len(re.findall(r'<tr class="(firing|resolved)">', table)) == run.alerts
