"""`parkmon ledger sync` (the scaled mode's ledger writer) against the real InfluxDB: the exchange
windows the KPI core wrote become one entry each, a second sync appends nothing, a revised window
becomes a revision pointing at the entry it corrects, and the chain verifies."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from parkmon.park import example_park_path, load_park
from simulators.scenarios import parse_scenario
from streams.core.ledger import candidates_from_kpis
from streams.core.points import PointSpec, to_points
from streams.influx_sink import InfluxSink
from streams.ledger_store import LedgerStore
from tests.support.edge import fleet_messages, reference_pipeline

pytestmark = pytest.mark.integration

MIN = 60_000


def _sync(ledger: Path, bucket: Any) -> tuple[int, str]:
    env = {**os.environ, "PARKMON_INFLUX_URL": bucket.url, "PARKMON_INFLUX_ORG": bucket.org,
           "PARKMON_INFLUX_BUCKET": bucket.name, "PARKMON_INFLUX_TOKEN": bucket.token}
    p = subprocess.run([sys.executable, "-m", "apps.cli", "ledger", "sync", str(ledger), "--park",
                        str(example_park_path("kalundborg")), "--since=-3d"],
                       env=env, capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    return p.returncode, p.stdout + p.stderr


def test_sync_from_influx_is_idempotent_and_records_revisions(influx_bucket: Any,
                                                              tmp_path: Path) -> None:
    park = load_park(example_park_path("kalundborg"))
    now = int(time.time() * 1000)
    start = (now - 3 * 60 * MIN) // MIN * MIN
    messages, _ = fleet_messages(park, parse_scenario({"name": "ledger", "park": "kalundborg",
                                                      "duration": "90m", "seed": 5}),
                                 start_ms=start, duration_ms=90 * MIN)
    pipe = reference_pipeline(park, messages, final_ms=start + 100 * MIN)
    sink = InfluxSink.connect(influx_bucket.url, influx_bucket.token, influx_bucket.org,
                              influx_bucket.name)
    sink.write(to_points(park.id, list(pipe.kpis.values())))
    units = {x.id: x.quantity_unit for x in park.exchanges}
    expected = candidates_from_kpis(pipe.kpis.values(), units)
    assert len(expected) > 12 * 80

    ledger = tmp_path / "ledger.sqlite"
    rc, out = _sync(ledger, influx_bucket)
    assert rc == 0, out
    assert f"{len(expected)} entries appended" in out
    rc, out = _sync(ledger, influx_bucket)
    assert rc == 0 and "0 entries appended" in out, out

    s = LedgerStore.open_existing(ledger)
    got = {(e.exchange, e.window_start_ms): e for e in s.entries()}
    assert {k: e.content() for k, e in got.items()} == {
        (c.exchange, c.window_start_ms): c.content() for c in expected}
    s.close()

    # a late reading revised the gypsum window at minute 30: the worker rewrites its point
    w = start + 30 * MIN
    old = got[("gypsum", w)]
    sink.write([PointSpec("kpi", (("entity", "gypsum"), ("park", park.id), ("scope", "exchange"),
                                  ("view", "1m")),
                          (("outflow", old.supplier_qty + 1.0), ("inflow", old.consumer_qty),
                           ("imbalance", old.gap + 0.99)), w)])

    rc, out = _sync(ledger, influx_bucket)
    assert rc == 0 and "1 entry appended" in out, out
    s = LedgerStore.open_existing(ledger)
    last = list(s.entries())[-1]
    assert (last.exchange, last.window_start_ms, last.revision, last.corrects) == \
        ("gypsum", w, 1, old.hash)
    assert last.supplier_qty == pytest.approx(old.supplier_qty + 1.0)
    assert s.verify().ok
    s.close()
