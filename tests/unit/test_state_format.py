"""The versioned JSON state format (parkmon/state.py, docs/state-format.md)."""

from __future__ import annotations

import json
import pickle
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from detect import ParkMonitor
from detect.core import load_checkpoint, save_checkpoint
from ingest.dedup import Deduplicator
from parkmon import state
from parkmon.park import example_park_path, load_park
from parkmon.state import StateFormatError

pytestmark = pytest.mark.unit
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "state"


def test_plain_and_tagged_values_round_trip() -> None:
    value = {"a": [1, 2.5, None, True, "x"], "t": (1, (2, 3)), "s": {1, 2}, "f": frozenset("ab"),
             "d": deque([1, 2], maxlen=3), 7: "int key", "$odd": 1, "nan": float("inf"),
             "b": b"\x00\xff", "arr": np.arange(3, dtype="float64"), "np": np.int64(4)}
    back = state.loads(state.dumps(value, "test"), "test")
    assert back["a"] == value["a"] and back["t"] == (1, (2, 3)) and back["s"] == {1, 2}
    assert back["f"] == frozenset("ab") and back["d"] == deque([1, 2]) and back["d"].maxlen == 3
    assert back[7] == "int key" and back["$odd"] == 1 and back["nan"] == float("inf")
    assert back["b"] == b"\x00\xff" and back["np"] == 4
    assert np.array_equal(back["arr"], value["arr"]) and back["arr"].dtype == np.float64


def test_shared_objects_stay_shared() -> None:
    dd = Deduplicator(per_meter=4)
    dd.seen_or_add("m1", 7)
    back = state.loads(state.dumps({"x": dd, "y": dd}, "test"), "test")
    assert back["x"] is back["y"] and type(back["x"]) is Deduplicator
    assert back["x"].seen_or_add("m1", 7) and not back["x"].seen_or_add("m1", 8)


def test_detect_checkpoint_is_json_and_restores(tmp_path: Path) -> None:
    park = load_park(example_park_path("kalundborg"))
    mon = ParkMonitor(park)
    path = tmp_path / "detect.ckpt"
    save_checkpoint(path, {"v": 1, "monitor": mon, "offsets": {0: 5}})
    doc = json.loads(path.read_bytes())
    assert doc["format"] == "parkmon-state" and doc["version"] == state.VERSION
    back = load_checkpoint(path)
    assert back is not None and back["offsets"] == {0: 5}
    assert isinstance(back["monitor"], ParkMonitor)
    assert set(back["monitor"].exchanges) == set(mon.exchanges)


def test_restores_the_committed_version_1_document() -> None:
    """A document written by format version 1 (committed fixture) still restores."""
    blob = (FIXTURES / "v1-detect-checkpoint.json").read_bytes()
    back = state.loads(blob, "detect-checkpoint")
    assert back["offsets"] == {0: 41, 1: 17} and back["max_ts"] == 1_700_000_000_000
    assert back["window"] == (1_700_000_000_000, 1_700_000_600_000)


def test_unknown_version_says_what_to_do() -> None:
    blob = json.dumps({"format": "parkmon-state", "version": 99, "kind": "k", "state": 1}).encode()
    with pytest.raises(StateFormatError, match=r"version 99 is not one this release reads .*1"):
        state.loads(blob, "k", "ckpt.json")


def test_a_pickle_from_an_earlier_release_is_recognised() -> None:
    with pytest.raises(StateFormatError, match="pickle format .* delete it and restart"):
        state.loads(pickle.dumps({"monitor": 1}), "detect-checkpoint", "old.ckpt")


def test_wrong_kind_and_garbage_are_clear_errors() -> None:
    with pytest.raises(StateFormatError, match="holds 'a' state, expected 'b'"):
        state.loads(state.dumps(1, "a"), "b")
    with pytest.raises(StateFormatError, match="not a parkmon state document"):
        state.loads(b"hello", "b")


def test_refuses_foreign_classes_both_ways() -> None:
    with pytest.raises(StateFormatError, match=r"state path \$.p: cannot store a pathlib"):
        state.dumps({"p": Path("/")}, "k")
    evil = {"format": "parkmon-state", "version": 1, "kind": "k",
            "state": {"$obj": "os:system", "$id": 0, "state": {}}}
    with pytest.raises(StateFormatError, match="refuses to restore os:system"):
        state.loads(json.dumps(evil).encode(), "k")
    gone = dict(evil, state={"$obj": "detect:NoSuchDetector", "$id": 0, "state": {}})
    with pytest.raises(StateFormatError, match="no longer exists in this release"):
        state.loads(json.dumps(gone).encode(), "k")
