"""Cross-check verdicts (supplier vs consumer meters)."""

from __future__ import annotations

import math

import pytest

from detect.crosscheck import Verdict, cross_check, suspect_meter

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("mag", "other_r", "n", "available", "in_alarm", "verdict"), [
    (0.5, -0.45, 3, True, False, Verdict.CONFIRMED),
    (0.5, -0.30, 1, True, False, Verdict.CONFIRMED),
    (0.5, 0.01, 3, True, False, Verdict.METER_SUSPECT),
    (0.5, 0.01, 2, True, False, Verdict.PENDING),  # too few samples to refute
    (0.5, -0.20, 5, True, False, Verdict.PENDING),  # in between
    (0.5, 0.00, 5, False, False, Verdict.UNCHECKED),
    (0.5, 0.00, 5, True, True, Verdict.CONFIRMED),
    (0.5, math.nan, 0, True, False, Verdict.PENDING),
])
def test_verdicts(mag, other_r, n, available, in_alarm, verdict):
    assert cross_check(mag, other_r, n, available, in_alarm) is verdict


def test_suspect_is_the_meter_that_fell_most():
    assert suspect_meter({"a": 10.0, "b": 20.0}, {"a": 9.8, "b": 0.0}) == "b"
    assert suspect_meter({}, {"a": 1.0}) is None
