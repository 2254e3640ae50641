"""CUSUM and Page-Hinkley: false-alarm control, speed, minimum duration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from detect.cusum import LowerCusum, siegmund_arl0, threshold_for_arl
from detect.page_hinkley import PageHinkleyDrop

pytestmark = pytest.mark.unit


def test_threshold_for_arl_inverts_siegmund():
    for k in (0.5, 1.0, 2.0):
        h = threshold_for_arl(k, 1e6, 0.1, 100)
        assert siegmund_arl0(k, h) >= 1e6
        assert siegmund_arl0(k, h * 0.95) < 1e6


def test_no_false_alarm_on_white_noise_with_a_tuned_threshold():
    rng = np.random.default_rng(4)
    k = 1.0
    h = threshold_for_arl(k, 1e7)
    c = LowerCusum(k, h)
    z = rng.standard_normal(200_000)
    assert not any(c.update(i, float(v)) for i, v in enumerate(z))


def test_detects_a_shift_and_estimates_its_start():
    rng = np.random.default_rng(5)
    c = LowerCusum(1.0, 5.0, min_samples=3)
    z = np.concatenate([rng.standard_normal(500), rng.standard_normal(50) - 6.0])
    first = next(i for i, v in enumerate(z) if c.update(i, float(v)))
    assert 500 <= first < 510
    assert c.start_ms is not None and 495 <= c.start_ms <= 502


@given(st.floats(min_value=-1e9, max_value=0.0), st.integers(min_value=2, max_value=6))
def test_a_single_sample_never_raises_an_alarm(outlier, min_samples):
    c = LowerCusum(0.5, 4.0, min_samples=min_samples)
    for i in range(10):
        c.update(i, 0.0)
    assert not c.update(10, outlier)


def test_reset_clears_the_alarm():
    c = LowerCusum(0.5, 2.0)
    for i in range(10):
        c.update(i, -5.0)
    assert c.alarm
    c.reset()
    assert not c.alarm and c.s == 0.0 and c.start_ms is None


def test_page_hinkley_detects_a_decrease_not_an_increase():
    rng = np.random.default_rng(6)
    up = PageHinkleyDrop(delta=0.1, lam=20.0)
    x = np.concatenate([rng.normal(10, 0.5, 500), rng.normal(14, 0.5, 500)])
    assert not any(up.update(i, float(v)) for i, v in enumerate(x))
    down = PageHinkleyDrop(delta=0.1, lam=20.0)
    x = np.concatenate([rng.normal(10, 0.5, 500), rng.normal(7, 0.5, 500)])
    hits = [i for i, v in enumerate(x) if down.update(i, float(v))]
    assert hits and 500 <= hits[0] < 520
