"""Baseline: robust level, seasonal profile, and not learning from flagged points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detect.baseline import RobustLevel, SeasonalBaseline, SeasonalProfile
from detect.config import DetectorConfig
from detect.drop import DropDetector

pytestmark = pytest.mark.unit

STEP = 10_000
DAY = 86_400_000


def test_robust_level_ignores_outliers_that_move_a_mean():
    rng = np.random.default_rng(1)
    x = 100.0 + rng.standard_normal(5000)
    x[::50] = 0.0  # 2 % wild dropouts
    lvl = RobustLevel(half_life=500)
    for v in x:
        lvl.update(float(v))
    assert abs(lvl.loc - 100.0) < abs(float(np.mean(x)) - 100.0) / 4
    assert 0.5 < lvl.scale < 2.0


def test_robust_level_counts_updates_and_a_zero_mean_is_a_real_mean():
    lvl = RobustLevel(half_life=10)
    assert lvl.n == 0
    lvl.update(0.0)
    lvl.update(0.0)
    assert lvl.n == 2 and lvl.loc == 0.0


def test_seasonal_profile_learns_a_daily_shape():
    def shape(ts: int) -> float:
        h = (ts % DAY) / 3_600_000
        return 1.0 + 0.4 * math.sin(2 * math.pi * h / 24)

    cfg = DetectorConfig()
    b = SeasonalBaseline("day", cfg.level_half_life_samples, profile_alpha=cfg.profile_alpha)
    rng = np.random.default_rng(2)
    for i in range(4 * 8640):
        ts = i * STEP
        b.learn(ts, 50.0 * shape(ts) * (1 + 0.01 * rng.standard_normal()))
    errs = [abs(b.expected(ts) / (50.0 * shape(ts)) - 1) for ts in range(4 * DAY, 5 * DAY, 600_000)]
    assert max(errs) < 0.02


def test_seasonal_profile_prior_is_normalised_and_local_time():
    prof = SeasonalProfile("day", tz="Europe/Copenhagen",
                           prior=lambda ts: 2.0 if 8 <= ((ts + 3_600_000) % DAY) / 3_600_000 < 16 else 1.0)
    # 12:00 local in January is 11:00 UTC; 03:00 local is 02:00 UTC
    noon, night = 11 * 3_600_000, 2 * 3_600_000
    assert prof.factor(noon) == pytest.approx(2 * prof.factor(night))
    assert sum(prof.factors) / len(prof.factors) == pytest.approx(1.0)


def test_week_bins_start_on_monday():
    prof = SeasonalProfile("week", bin_ms=3_600_000)
    monday_0030 = 4 * DAY + 1_800_000  # 1970-01-05 was a Monday
    assert prof.bin(monday_0030) == 0
    assert prof.bin(monday_0030 - DAY) == 6 * 24


def test_detector_does_not_learn_from_the_drop_it_flags():
    cfg = DetectorConfig(season="none")
    det = DropDetector(cfg, season="none")
    rng = np.random.default_rng(3)
    ts = 0
    for _ in range(2000):
        det.step(ts, 100.0 * (1 + 0.01 * rng.standard_normal()))
        ts += STEP
    before = det.baseline.expected(ts)
    flagged = False
    for _ in range(720):  # two hours at 40 % below
        st = det.step(ts, 60.0 * (1 + 0.01 * rng.standard_normal()))
        flagged |= st.alarm_started
        ts += STEP
    assert flagged and det.state == "alarm"
    assert det.baseline.expected(ts) == pytest.approx(before, rel=0.005)


@pytest.mark.parametrize("step_ms", [10_000, 60_000])
def test_warm_up_lasts_the_same_time_whatever_the_sampling(step_ms):
    cfg = DetectorConfig(season="none")
    det = DropDetector(cfg, season="none", step_ms=step_ms)
    warm_ms = cfg.warmup_samples * cfg.reference_period_s * 1000
    ts = 0
    while ts < warm_ms - 2 * step_ms:
        det.step(ts, 10.0)
        ts += step_ms
    assert det.state == "warmup"
    for _ in range(4):
        det.step(ts, 10.0)
        ts += step_ms
    assert det.state == "normal"
