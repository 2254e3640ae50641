"""Tuning of the supply and data-quality detectors, as one frozen pydantic model.

Defaults are chosen for meters sampled every 10 s and the issue's goals: drops of >= 20 % found
within a minute, fewer than one false alarm per 30 days of normal operation per park.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class DetectorConfig(BaseModel):
    """Counts of samples (`*_samples`, half-lives, `profile_alpha`) are given at the reference
    period of 10 s; a side sampled every p seconds scales them to the same durations (a warm-up of
    720 samples is 2 h whatever the period), except `min_samples` and `crosscheck_samples`, which
    count evidence and stay as they are."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    reference_period_s: float = 10.0

    # --- baseline (baseline.py) ---------------------------------------------------------------
    season: Literal["auto", "none", "day", "week"] = "auto"
    """Seasonal profile: `day`, `week`, `none`, or `auto` (week when a meter of the exchange has
    the `weekdays` profile, none when all are `continuous`, else day)."""
    season_bin_ms: int = 300_000
    """Width of a seasonal bin (5 min: 288 bins a day, 2016 a week)."""
    level_half_life_samples: float = 6000.0
    """Half-life of the robust level, in samples (6000 x 10 s ~ 17 h): long against the daily
    cycle, so the seasonal profile, not the level, learns the daily shape."""
    profile_alpha: float = 0.05
    """Learning rate of a seasonal bin per sample falling in it (~20 samples memory per bin:
    a daily shape is learned in about three days without a prior)."""
    learn_delay_samples: int = 30
    """A sample is learned only once it is this many samples old and no alarm covered it, so a
    drop is never learned from its first points (they are still pending when the alarm fires)."""
    warmup_samples: int = 720
    """Samples learned before a side may alarm (720 x 10 s = 2 h: long against the process
    noise's correlation time, so the level is not caught on one excursion)."""
    min_bin_samples: int = 20
    """A seasonal bin must have learned this many samples (or be seeded by a prior) before a
    sample falling in it is judged: the first day (week) without a prior is warm-up."""
    sigma_floor: float = 0.01
    """Smallest relative noise scale assumed (1 %): a perfectly quiet meter must not make the
    detector infinitely sensitive."""
    ref_floor: float = 0.2
    """Residuals are relative to max(expected, ref_floor x level) so a night-time low does not
    blow relative deviations up."""

    # --- change detection (cusum.py) ----------------------------------------------------------
    evidence_min: float = 0.10
    evidence_max: float = 0.15
    evidence_sigmas: float = 5.0
    """Only samples more than k below the expectation add evidence to the CUSUM, with
    k = clip(evidence_sigmas x sigma, evidence_min, evidence_max) (relative): slow, autocorrelated
    process wander of a few percent never accumulates into an alarm, while a 20 % drop adds
    evidence with every sample."""
    arl0_samples: float = 5e7
    """Target average run length between false alarms of one side, in samples."""
    min_samples: int = 2
    """A single sample can add at most h / min_samples: no alarm from fewer than this many
    samples, so a one-sample dropout never fires (minimum duration). Two are enough because a
    side's alarm must still pass the cross-check with the other side's meters."""
    h_min: float = 4.0
    h_max: float = 60.0
    resolve_tolerance: float = 0.05
    """A side counts as recovered when its residual is above -max(tolerance, 2.5 sigma) ..."""
    resolve_samples: int = 6
    """... for this many consecutive samples (hysteresis)."""

    # --- cross-check (crosscheck.py) ----------------------------------------------------------
    crosscheck: bool = True
    confirm_fraction: float = 0.5
    """The other side confirms a drop when its mean residual since the change start is below
    -confirm_fraction x magnitude ..."""
    refute_fraction: float = 0.25
    """... and refutes it (meter suspect) when above -refute_fraction x magnitude."""
    crosscheck_samples: int = 3
    crosscheck_timeout_ms: int = 120_000
    """Undecided after this long: the supply alert fires (safety first)."""

    # --- buffer projection (buffer.py) --------------------------------------------------------
    trend_window_ms: int = 1_800_000
    """Residuals of this last stretch are fitted with a line: when the line explains the shortfall
    (a declining trend reaching >= 60 % of it) the change is a decline (SupplyDecline, projected
    along the trend), otherwise an abrupt drop (SupplyDrop, projected at the current shortfall)."""
    projection_horizon_h: float = 168.0

    # --- data quality (dataquality.py) --------------------------------------------------------
    silent_periods: float = 5.0
    silent_min_ms: int = 60_000
    stuck_min_ms: int = 300_000
    stuck_min_changes: int = 10
    """A meter is only called stuck if it was seen changing this many times before."""
    out_of_range_count: int = 3
    """Out-of-range readings within the last 10 before a data-quality alert."""
    dq_resolve_ms: int = 60_000

    # --- suppression (suppression.py) ---------------------------------------------------------
    maintenance_grace_ms: int = 1_800_000
    """After a maintenance / planned window ends, detection resumes after this ramp-up time."""
