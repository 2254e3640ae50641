"""`parkmon simulate` without a broker (--stdout) and its error handling."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from simulators.cli import main
from simulators.scenarios import read_labels

pytestmark = pytest.mark.unit


def test_stdout_run_is_deterministic_and_writes_labels(tmp_path: Path) -> None:
    outs = []
    for _ in range(2):
        out, err = io.StringIO(), io.StringIO()
        labels = tmp_path / "labels.jsonl"
        code = main(["--stdout", "--scenario", "gypsum_trip", "--duration", "10h",
                     "--start", "2026-01-05T00:00:00Z", "--labels", str(labels)], out=out, err=err)
        assert code == 0, err.getvalue()
        outs.append(out.getvalue())
    assert outs[0] == outs[1]
    lines = [json.loads(x) for x in outs[0].splitlines()]
    assert len(lines) == 49 * 600  # 49 meters, one reading a minute for 10 h
    assert {"enterprise", "meter", "ts_ms", "value", "unit", "seq"} == set(lines[0])
    (label,) = [lb for lb in read_labels(labels) if lb.category == "supply"]
    assert (label.kind, label.exchange) == ("trip", "gypsum")


def test_bad_scenario_reference_exits_2_without_traceback(tmp_path: Path) -> None:
    sc = tmp_path / "s.yaml"
    sc.write_text("name: s\nevents:\n  - {kind: trip, exchange: nope, duration: 1h}\n")
    err = io.StringIO()
    assert main(["--stdout", "--scenario", str(sc), "--duration", "1h"], out=io.StringIO(), err=err) == 2
    assert "events[0].exchange: no exchange 'nope'" in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_unknown_scenario_name_lists_the_known_ones() -> None:
    err = io.StringIO()
    assert main(["--stdout", "--scenario", "nonesuch"], out=io.StringIO(), err=err) == 2
    msg = err.getvalue()
    assert "no scenario 'nonesuch'; scenarios are: " in msg
    assert "gypsum_trip" in msg and "mixed_week" in msg


def test_synthetic_park_on_stdout() -> None:
    out = io.StringIO()
    assert main(["--stdout", "--synthetic", "10x80", "--duration", "5m", "--start", "2026-01-05T00:00:00Z"],
                out=out, err=io.StringIO()) == 0
    meters = {json.loads(x)["meter"] for x in out.getvalue().splitlines()}
    assert len(meters) == 80
