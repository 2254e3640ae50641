"""Smoke test of benchmarks/bench_e2e.py: the quick configuration runs end to end on the real
services and writes a complete results file whose windows match an exact recount.

Not a timed test: the figures are printed by the benchmark, nothing here asserts a speed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_writes_complete_results_with_exact_recount(
        kafka: Any, influx: Any, tmp_path: Path) -> None:
    out = tmp_path / "e2e-quick.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_e2e.py"), "--quick",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(out.read_text())

    assert len(res["machine"]["load_at_start"]) == 3 and len(res["machine"]["load_at_end"]) == 3
    assert set(res["engines"]) == {"batch", "faust"}
    for engine, er in res["engines"].items():
        for workload, runs in er["throughput"].items():
            assert runs, (engine, workload)
            for run in runs:
                raw, e2e = run["raw"], run["e2e"]
                assert raw["readings_per_s"] > 0 and e2e["e2e_readings_per_s"] > 0
                assert raw["readings"] == e2e["published_readings"]
                rc = e2e["recount"]
                assert rc["windows_expected"] > 0, (engine, workload, rc)
                assert rc["exact"], (engine, workload, rc)
                assert set(e2e["cpu_us_per_reading"]) >= {"gateway", "streams", "detect", "alerts"}
                assert all(v > 0 for v in e2e["rss_mb"].values())
                assert e2e["lag"], "consumer lag was sampled"
    summary = res["summary"]
    for engine in res["engines"]:
        for workload in ("single", f"batch{res['config']['batch_size']}"):
            assert summary[engine][workload]["ratio"] is not None
    live = next(er["live"] for er in res["engines"].values() if "live" in er)
    assert live["trip"]["webhook_received"] and live["trip"]["bad_signatures"] == 0
    assert live["trip"]["detection_to_webhook_s"] is not None
    assert live["publish_to_queryable"]["windows"] > 0
    assert live["backlog"]["backlog_readings"] > 0
    assert live["backlog"]["streams"]["time_to_current_s"] is not None
    assert any(row["phase"] == "stopped" for row in live["lag"])
    assert res["faster_engine"]["engine"] in ("batch", "faust")
    so = res["scale_out"]
    assert so["single"]["gateways"] == 2 and so["single"]["workers"] == 2
    assert so["single"]["recount"]["exact"], so["single"]["recount"]
