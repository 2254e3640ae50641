"""Signal building blocks: profiles, local time, ramp limit, AR(1) noise."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulators.signals import PROFILE_CODE, ar1_step, local_time, profile_factors, ramp_limit

pytestmark = pytest.mark.unit


def test_local_time_follows_daylight_saving() -> None:
    winter = local_time(1_767_268_800_000, "Europe/Copenhagen")  # 2026-01-01T12:00Z
    summer = local_time(1_782_907_200_000, "Europe/Copenhagen")  # 2026-07-01T12:00Z
    assert (winter.hour, summer.hour) == (13.0, 14.0)
    assert winter.weekday == 3  # Thursday
    assert local_time(1_767_268_800_000, "UTC").hour == 12.0


def test_shift_profile_is_high_on_weekday_days_and_low_at_night_and_weekends() -> None:
    day = profile_factors(local_time(1_767_268_800_000, "UTC"))  # Thursday noon
    night = profile_factors(local_time(1_767_268_800_000 - 10 * 3_600_000, "UTC"))  # 02:00
    sunday = profile_factors(local_time(1_767_268_800_000 + 3 * 86_400_000, "UTC"))
    s = PROFILE_CODE["shifts"]
    assert day[s] > 0.95 and night[s] < 0.35 and sunday[s] < 0.3
    assert day[PROFILE_CODE["continuous"]] == night[PROFILE_CODE["continuous"]] == 1.0


def test_heat_demand_is_higher_in_winter() -> None:
    h = PROFILE_CODE["heat_demand"]
    winter = np.mean([profile_factors(local_time(1_767_225_600_000 + k * 3_600_000, "UTC"))[h]
                      for k in range(24)])
    summer = np.mean([profile_factors(local_time(1_782_864_000_000 + k * 3_600_000, "UTC"))[h]
                      for k in range(24)])
    assert winter > 2 * summer


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=20),
       st.floats(0.01, 10))
def test_ramp_limit_never_moves_more_than_the_limit_and_never_overshoots(
        pairs: list[tuple[float, float]], step: float) -> None:
    prev = np.array([p for p, _ in pairs])
    target = np.array([t for _, t in pairs])
    new = ramp_limit(prev, target, np.full(len(pairs), step))
    assert np.all(np.abs(new - prev) <= step + 1e-9)
    assert np.all(np.abs(new - target) <= np.abs(prev - target) + 1e-9)


def test_ar1_noise_is_stationary_with_the_given_sigma() -> None:
    rng = np.random.default_rng(0)
    sigma = np.full(2000, 0.05)
    x = np.zeros(2000)
    for _ in range(200):
        x = ar1_step(x, rng, 0.9, sigma)
    assert float(np.std(x)) == pytest.approx(0.05, rel=0.1)
