"""Meter health: silent, stuck, out of range, and recovery."""

from __future__ import annotations

import numpy as np
import pytest

from detect.config import DetectorConfig
from detect.dataquality import MeterHealth
from detect.rates import CounterRate

pytestmark = pytest.mark.unit

S = 10_000


def _noisy(h: MeterHealth, n: int, t0: int = 0, seed: int = 0) -> tuple[list, int]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out += h.observe(t0 + i * S, 10.0 + float(rng.standard_normal()))
    return out, t0 + n * S


def test_silent_after_timeout_and_back_with_the_next_reading():
    cfg = DetectorConfig()
    h = MeterHealth("m", period_s=10, cfg=cfg)
    _, t = _noisy(h, 20)
    last = t - S
    assert h.tick(last + cfg.silent_min_ms - 1) == []
    assert h.tick(last + cfg.silent_min_ms + 1) == [("silent", True, last)]
    assert not h.usable
    assert h.tick(last + 10 * cfg.silent_min_ms) == []  # once
    assert h.observe(last + 10 * cfg.silent_min_ms, 10.0) == [("silent", False, last)]
    assert h.usable


def test_stuck_value_after_a_meter_that_moved():
    cfg = DetectorConfig()
    h = MeterHealth("m", period_s=10, cfg=cfg)
    _, t = _noisy(h, 50)
    trans = []
    for i in range(cfg.stuck_min_ms // S + 2):
        trans += h.observe(t + i * S, 7.5)
    assert trans == [("stuck", True, t)]
    assert h.observe(t + 10**6, 7.6) == [("stuck", False, t)]


def test_a_quiet_constant_meter_and_a_stopped_flow_are_not_stuck():
    h = MeterHealth("m", period_s=10)
    assert all(h.observe(i * S, 5.0) == [] for i in range(100))  # never moved
    h2 = MeterHealth("m", period_s=10)
    _noisy(h2, 50)
    assert all(h2.observe(10**7 + i * S, 0.0) == [] for i in range(100))  # zero: cross-check's job


def test_out_of_range_needs_several_bad_readings_then_recovers():
    cfg = DetectorConfig()
    h = MeterHealth("m", period_s=10, range_min=0.0, range_max=50.0, cfg=cfg)
    _, t = _noisy(h, 20)
    assert h.observe(t, 80.0) == [] and h.last_bad
    assert h.observe(t + S, float("nan")) == []
    assert h.observe(t + 2 * S, -1.0) == [("out_of_range", True, t + 2 * S)]
    trans = []
    for i in range(3, 3 + cfg.dq_resolve_ms // S + 2):
        trans += h.observe(t + i * S, 10.0 + i % 2)
    assert trans == [("out_of_range", False, t + 2 * S)]


def test_counter_rate_and_rollover():
    c = CounterRate(rollover=1000.0)
    assert c.update(0, 990.0) is None
    assert c.update(3_600_000, 995.0) == pytest.approx(5.0)
    assert c.update(7_200_000, 3.0) == pytest.approx(8.0)  # wrapped
    c2 = CounterRate()
    c2.update(0, 10.0)
    assert c2.update(1000, 5.0) is None and c2.went_backwards
