"""Online baseline of a flow: a seasonal profile times a robust level. Pure, no I/O.

    expected(ts) = level x profile[bin(ts)]

* `RobustLevel` is an exponentially weighted M-estimate of location (Huber: each step is clipped
  at 3 scale units, so an outlier moves it by a bounded amount, like an EW median) with an
  exponentially weighted mean absolute deviation as its scale.
* `SeasonalProfile` keeps one multiplicative factor per bin (5 minutes by default) of the day or
  of the week in the park's local time, interpolated linearly between bin centres so a ramp
  (a shift starting at 06:00) is followed smoothly. It can be seeded with a prior (the declared production profile of the meter).
* `SeasonalBaseline` combines them and learns only what the caller hands to `learn()`: the drop
  detector (drop.py) feeds it only samples that were never covered by an alarm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
PRIOR_COUNT = 50
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0): week bins start on Monday


class RobustLevel:
    """EW Huber location and EW mean absolute deviation. `n` counts updates (0 = no data yet)."""

    __slots__ = ("alpha", "clip", "n", "loc", "mad")

    def __init__(self, half_life: float, clip: float = 3.0) -> None:
        self.alpha = 1.0 - 0.5 ** (1.0 / half_life)
        self.clip = clip
        self.n = 0
        self.loc = 0.0
        self.mad = 0.0

    @property
    def scale(self) -> float:
        """Standard-deviation-like scale (MAD of a normal x 1.2533)."""
        return self.mad * 1.2533

    def update(self, x: float) -> None:
        self.n += 1
        if self.n == 1:
            self.loc = x
            return
        a = max(self.alpha, 1.0 / self.n)
        d = x - self.loc
        lim = self.clip * self.scale
        if lim > 0.0:
            d = min(max(d, -lim), lim)
        self.loc += a * d
        self.mad += a * (abs(d) - self.mad)


class LocalClock:
    """Bins of the local day / week in a time zone, with the UTC offset cached per hour."""

    __slots__ = ("_tz", "_hour", "_offset_ms")

    def __init__(self, tz: str = "UTC") -> None:
        self._tz = None if tz in ("UTC", "Etc/UTC") else ZoneInfo(tz)
        self._hour = -1
        self._offset_ms = 0

    def local_ms(self, ts_ms: int) -> int:
        if self._tz is None:
            return ts_ms
        hour = ts_ms // _HOUR_MS
        if hour != self._hour:
            off = datetime.fromtimestamp(hour * 3600, tz=UTC).astimezone(self._tz).utcoffset()
            self._offset_ms = int(off.total_seconds() * 1000) if off is not None else 0
            self._hour = hour
        return ts_ms + self._offset_ms



class SeasonalProfile:
    """Multiplicative factors per bin of bin_ms; `season` is 'day', 'week' or 'none'."""

    __slots__ = ("season", "alpha", "bin_ms", "factors", "counts", "_clock")

    def __init__(self, season: str = "day", alpha: float = 0.02, tz: str = "UTC",
                 prior: Callable[[int], float] | None = None, bin_ms: int = 300_000) -> None:
        if season not in ("day", "week", "none"):
            raise ValueError(f"season must be day, week or none, got {season!r}")
        if bin_ms <= 0 or _DAY_MS % bin_ms:
            raise ValueError(f"bin_ms must divide a day, got {bin_ms}")
        self.season = season
        self.alpha = alpha
        self.bin_ms = bin_ms
        self._clock = LocalClock(tz)
        per_day = _DAY_MS // bin_ms
        nbins = {"day": per_day, "week": 7 * per_day, "none": 1}[season]
        self.factors = [1.0] * nbins
        self.counts = [0] * nbins
        if prior is not None and season != "none":
            self._seed(prior)

    def _seed(self, prior: Callable[[int], float]) -> None:
        """Seed factors from prior(ts_ms) sampled at the middle of each bin (a Monday-start week)."""
        monday = 4 * 86_400_000  # 1970-01-05 was a Monday
        vals = []
        for b in range(len(self.factors)):
            ts = monday + b * self.bin_ms + self.bin_ms // 2
            vals.append(max(float(prior(ts - (self._clock.local_ms(ts) - ts))), 0.0))
        mean = sum(vals) / len(vals) if vals else 0.0
        if mean > 0.0:
            self.factors = [v / mean for v in vals]
            self.counts = [PRIOR_COUNT] * len(vals)  # a prior is worth PRIOR_COUNT samples

    def _pos(self, ts_ms: int) -> tuple[int, int, float]:
        """(bin before, bin after, weight of the bin after) for linear interpolation between bin
        centres, so a smooth ramp is followed without a staircase error."""
        nb = len(self.factors)
        if nb == 1:
            return 0, 0, 0.0
        local = self._clock.local_ms(ts_ms)
        if self.season == "week":
            local += _EPOCH_WEEKDAY * _DAY_MS
        x = (local % (nb * self.bin_ms)) / self.bin_ms - 0.5
        i0 = math.floor(x)
        w = x - i0
        return i0 % nb, (i0 + 1) % nb, w

    def bin(self, ts_ms: int) -> int:
        i0, i1, w = self._pos(ts_ms)
        return i1 if w >= 0.5 else i0

    def factor(self, ts_ms: int) -> float:
        i0, i1, w = self._pos(ts_ms)
        f = self.factors
        return f[i0] + w * (f[i1] - f[i0])

    def learn(self, ts_ms: int, ratio: float, clip: float = math.inf) -> None:
        """ratio = observed / level for a sample at ts_ms; the step is clipped at +-clip (Huber),
        so one wild reading cannot bend a bin."""
        if self.season == "none":
            self.counts[0] += 1
            return
        i0, i1, w = self._pos(ts_ms)
        f = self.factors
        err = ratio - (f[i0] + w * (f[i1] - f[i0]))
        err = min(max(err, -clip), clip)
        near = i1 if w >= 0.5 else i0
        self.counts[near] += 1
        a = max(self.alpha, 1.0 / (self.counts[near] + 1))
        f[i0] += a * (1.0 - w) * err
        f[i1] += a * w * err


class SeasonalBaseline:
    """expected(ts) = level x profile factor; learns from the samples it is given, only."""

    __slots__ = ("level", "profile", "n")

    def __init__(self, season: str = "day", level_half_life: float = 2000.0,
                 profile_alpha: float = 0.02, tz: str = "UTC",
                 prior: Callable[[int], float] | None = None, bin_ms: int = 300_000) -> None:
        self.level = RobustLevel(level_half_life)
        self.profile = SeasonalProfile(season, profile_alpha, tz, prior, bin_ms)
        self.n = 0

    def expected(self, ts_ms: int) -> float:
        if self.n == 0:
            return math.nan
        return self.level.loc * self.profile.factor(ts_ms)

    def learn(self, ts_ms: int, value: float) -> None:
        f = self.profile.factor(ts_ms)
        self.n += 1
        if f > 1e-6:
            self.level.update(value / f)
        loc = self.level.loc
        if loc > 1e-12:
            clip = max(3.0 * self.level.scale / loc, 0.05) if self.level.n > 10 else math.inf
            self.profile.learn(ts_ms, value / loc, clip)
