"""The chaos soak in CI: the whole scaled pipeline (2 gateways on a shared subscription, 2 batch
streams workers in one group, detect, alerts, a failing signed-webhook receiver) on private
Mosquitto, Kafka and InfluxDB instances, with kill -9 / SIGTERM / SIGSTOP of parkmon processes,
service restarts and an InfluxDB outage at seeded random times, then the exact recount
(tests/support/soak.py; `scripts/soak` runs the long version).

PARKMON_SOAK_S (default 200 s of load) and PARKMON_SOAK_SEED (default 3) choose the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.soak import run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_soak_under_chaos_ends_in_an_exact_recount(tmp_path: Path) -> None:
    seed = int(os.environ.get("PARKMON_SOAK_SEED", "3"))
    rep = run(duration_s=float(os.environ.get("PARKMON_SOAK_S", "200")), seed=seed,
              workdir=tmp_path / "soak", mean_gap_s=15.0)
    summary = json.dumps({k: v for k, v in rep.items() if k != "faults"}, indent=1, default=str)
    faults = "\n".join(f"{f['at_s']:7.1f}s {f['kind']} {f['target']} recovered in "
                       f"{f['recovered_s']} s {f['note']}" for f in rep["faults"])
    assert rep["faults"], "the chaos driver injected no fault"
    assert all(f["recovered_s"] is not None for f in rep["faults"]), faults
    w, acc, al = rep["windows"], rep["accounting"], rep["alerts"]
    # every window equals the recount of the readings the pipeline accepted (late ones are
    # dead-lettered with their reason, counted in the report), nothing lost at the gateway
    assert (w["missing"], w["extra"], w["wrong"]) == (0, 0, 0), summary + faults
    assert acc["lost"] == 0 and acc["published"] == rep["readings"], summary
    # the uninterrupted run's incidents, each delivered and signed; nothing it does not raise
    assert al["expected_incidents"] and not al["missing"] and not al["unexpected"], summary
    assert al["bad_signatures"] == 0, summary
    assert rep["passed"], summary + faults
