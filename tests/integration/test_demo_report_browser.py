"""What a person sees: the demo's HTML report rendered by a real headless Chromium.

The report must show, after its scripts ran, the alerts table and one flow chart per alerted
exchange with the alert shaded, plus the indicator charts. Chromium comes from Debian (installed by
scripts/provision.sh)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from apps import demo

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--virtual-time-budget=8000"]


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run scripts/provision.sh (Debian package chromium)")
    return exe


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    report, js = out / "report.html", out / "summary.json"
    assert demo.main(["--quiet", "--report", str(report), "--json", str(js)]) == 0
    summary = json.loads(js.read_text())
    profile = out / "profile"
    dom = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                          report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = out / "report.png"
    subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                    "--window-size=1300,2600", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return summary, dom.stdout, shot


def test_charts_are_drawn_by_the_browser(rendered):
    summary, dom, shot = rendered
    # plotly draws each figure as an <svg class="main-svg"> only when its script ran
    figures = dom.count('class="plot-container plotly"')
    assert figures >= 4
    assert dom.count('class="main-svg"') >= figures
    assert shot.stat().st_size > 50_000  # a real picture, not a blank page


def test_every_notification_is_a_row_of_the_alerts_table(rendered):
    summary, dom, _ = rendered
    table = dom[dom.index('id="alerts"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r'<tr class="(firing|resolved)"', table)
    expected = [a["state"] for n in summary["notifications"] for a in n["alerts"]]
    assert len(rows) == len(expected) > 0


def test_alerted_exchanges_have_a_flow_chart_with_the_alert_shaded(rendered):
    summary, dom, _ = rendered
    alerted = {a["labels"]["exchange"] for n in summary["notifications"] for a in n["alerts"]
               if a["labels"].get("exchange")}
    assert alerted, "the demo scenario should raise supply alerts"
    for x in alerted:
        start = dom.index(f'id="flow-{x}"')
        chunk = dom[start:start + 200_000]
        assert ">alert<" in chunk, f"no shaded alert on the {x} chart"
