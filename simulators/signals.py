"""Pure signal building blocks of the simulated fleet (no I/O, no clock, no global randomness).

All functions work on event time (UTC epoch ms) and numpy arrays of meters; the randomness comes
from a `numpy.random.Generator` passed in, so a run is reproducible from its seed.
"""

from __future__ import annotations

import datetime as dt
import math
import zoneinfo
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

PROFILES: tuple[str, ...] = ("continuous", "shifts", "daytime", "heat_demand", "weekdays")
PROFILE_CODE: dict[str, int] = {name: i for i, name in enumerate(PROFILES)}

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class LocalTime:
    hour: float  # local hour of day, 0 <= hour < 24 (fractional)
    weekday: int  # Monday = 0
    day_of_year: float


@lru_cache(maxsize=8)
def _zone(name: str) -> dt.tzinfo:
    return dt.UTC if name == "UTC" else zoneinfo.ZoneInfo(name)


@lru_cache(maxsize=65536)
def _utc_offset_ms(tz_name: str, hour_bucket: int) -> int:
    """UTC offset of the zone during one UTC hour (cached: offsets change on the hour)."""
    t = dt.datetime.fromtimestamp(hour_bucket * 3600, tz=_zone(tz_name))
    off = t.utcoffset()
    return int(off.total_seconds() * 1000) if off else 0


def local_time(ts_ms: int, tz_name: str) -> LocalTime:
    local_ms = ts_ms + _utc_offset_ms(tz_name, ts_ms // HOUR_MS)
    days = local_ms // DAY_MS
    hour = (local_ms - days * DAY_MS) / HOUR_MS
    weekday = int((days + 3) % 7)  # 1970-01-01 was a Thursday
    doy = ((local_ms / DAY_MS) % 365.2425)
    return LocalTime(hour=hour, weekday=weekday, day_of_year=doy)


def _smooth_step(x: float, edge: float, width: float = 0.5) -> float:
    """0 before `edge`, 1 after it, smooth over `width` hours (no discontinuity for ramps)."""
    return 0.5 * (1.0 + math.tanh((x - edge) / (width / 2.0)))


def profile_factors(t: LocalTime) -> FloatArray:
    """Factor on the nominal rate for every profile (index = PROFILE_CODE) at local time t.

    - continuous: 1 (process plants, power station base load)
    - shifts: two shifts on weekdays 06-22 (1.0), night 0.3, weekends 0.25
    - daytime: 08-17 on weekdays (1.0), otherwise 0.15
    - heat_demand: winter high / summer low, morning and evening peaks, mean about 1
    - weekdays: 1.0 on weekdays, 0.6 on weekends
    """
    h, wd = t.hour, t.weekday
    workday = wd < 5
    on_shift = _smooth_step(h, 6.0) * (1.0 - _smooth_step(h, 22.0))
    shifts = (0.3 + 0.7 * on_shift) if workday else 0.25
    on_day = _smooth_step(h, 8.0) * (1.0 - _smooth_step(h, 17.0))
    daytime = (0.15 + 0.85 * on_day) if workday else 0.15
    season = 1.0 + 0.45 * math.cos(2.0 * math.pi * (t.day_of_year - 15.0) / 365.25)
    diurnal = 1.0 + 0.15 * math.exp(-((h - 7.5) ** 2) / 4.0) + 0.1 * math.exp(-((h - 19.0) ** 2) / 6.0) \
        - 0.12 * math.exp(-((h - 3.0) ** 2) / 6.0)
    heat = season * diurnal
    weekdays = 1.0 if workday else 0.6
    return np.array([1.0, shifts, daytime, heat, weekdays], dtype=np.float64)


def ar1_step(state: FloatArray, rng: np.random.Generator, phi: float, sigma: FloatArray) -> FloatArray:
    """One step of a stationary AR(1) noise process with standard deviation `sigma` per meter."""
    eps = rng.standard_normal(state.shape[0])
    return phi * state + math.sqrt(max(0.0, 1.0 - phi * phi)) * sigma * eps


def ramp_limit(previous: FloatArray, target: FloatArray, max_step: FloatArray) -> FloatArray:
    """Move from `previous` towards `target` by at most `max_step` per meter (ramp-rate limit)."""
    return previous + np.clip(target - previous, -max_step, max_step)


def wrap_counter(cumulative: float, rollover: float | None) -> float:
    """The register value of a counter that wraps to 0 at `rollover`."""
    if rollover is None:
        return cumulative
    return math.fmod(cumulative, rollover)
