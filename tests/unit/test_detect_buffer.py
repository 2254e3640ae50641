"""Buffer projection: deficit integration, trend fit, time to exhaustion."""

from __future__ import annotations

import math

import pytest

from detect.buffer import deficit_hours, linear_trend, project_exhaustion

pytestmark = pytest.mark.unit

H = 3_600_000


def test_deficit_of_a_constant_half_shortfall():
    samples = [(i * 60_000, -0.5) for i in range(121)]  # two hours at 50 % short
    assert deficit_hours(samples) == pytest.approx(1.0)


def test_surplus_does_not_count_as_negative_deficit():
    samples = [(i * 60_000, 0.3) for i in range(61)]
    assert deficit_hours(samples) == 0.0


def test_linear_trend_recovers_a_slope():
    samples = [(i * 60_000, -0.1 * (i / 60)) for i in range(91)]
    r_now, slope = linear_trend(samples)
    assert slope == pytest.approx(-0.1)
    assert r_now == pytest.approx(-0.15)


def test_constant_shortfall_exhausts_at_buffer_over_shortfall():
    t = project_exhaustion(0, used_h=0.0, buffer_h=2.0, r_now=-0.5, slope_per_h=0.0)
    assert t == pytest.approx(4 * H, abs=1000)


def test_ramp_matches_the_closed_form():
    # shortfall d(tau) = 0.2 tau (per hour) -> deficit 0.1 tau^2 = buffer 1.6 -> tau = 4 h
    t = project_exhaustion(0, used_h=0.0, buffer_h=1.6, r_now=0.0, slope_per_h=-0.2)
    assert t == pytest.approx(4 * H, rel=0.01)


def test_ramp_saturates_at_total_loss():
    # shortfall reaches 1 after 1 h (deficit 0.5), then 1 per hour: 3 h buffer -> 1 + 2.5 h
    t = project_exhaustion(0, used_h=0.0, buffer_h=3.0, r_now=0.0, slope_per_h=-1.0)
    assert t == pytest.approx(3.5 * H, rel=0.01)


def test_no_shortfall_or_recovery_never_exhausts():
    assert project_exhaustion(0, 0.0, 2.0, r_now=0.05, slope_per_h=0.0) is None
    assert project_exhaustion(0, 0.0, 2.0, r_now=0.0, slope_per_h=0.5) is None


def test_already_used_up_is_now_and_horizon_limits():
    assert project_exhaustion(123, used_h=2.5, buffer_h=2.0, r_now=-0.1, slope_per_h=0) == 123
    assert project_exhaustion(0, 0.0, 1000.0, r_now=-0.01, slope_per_h=0, horizon_h=10) is None
    assert math.isfinite(project_exhaustion(0, 0.0, 1.0, -0.01, 0, horizon_h=200) or math.inf)
