"""Drop detector for one side (suppliers or consumers) of an exchange. Pure, no I/O.

Fed one sample per time step (the side's summed rate), it keeps a seasonal baseline, turns each
sample into a relative residual r = (x - expected) / max(expected, ref_floor x level), scales it by
the learned noise and runs a lower CUSUM on it. Samples are learned with a delay
(`learn_delay_samples`) and only while the CUSUM is quiet, so the first points of a drop are never
learned (the baseline does not learn from points it flags). In alarm, the side waits for
`resolve_samples` consecutive recovered samples (hysteresis) before it reports recovery.

States: warmup -> normal <-> alarm; `paused` steps (maintenance, a meter of the side unusable)
neither learn nor detect and reset the CUSUM.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from detect.baseline import RobustLevel, SeasonalBaseline
from detect.config import DetectorConfig
from detect.cusum import LowerCusum, threshold_for_arl


@dataclass(frozen=True, slots=True)
class SideStep:
    ts_ms: int
    value: float
    expected: float
    r: float  # relative residual
    alarm_started: bool = False
    in_alarm: bool = False
    recovered: bool = False


class DropDetector:
    __slots__ = ("cfg", "baseline", "noise", "cusum", "state", "alarm_start_ms", "alarm_ms",
                 "magnitude", "recent", "_pending", "_ok_run", "_sigma_for_h", "_k", "_h",
                 "_warmup", "_learn_delay", "_resolve", "_min_bin")

    def __init__(self, cfg: DetectorConfig | None = None, season: str = "day", tz: str = "UTC",
                 prior: Callable[[int], float] | None = None, step_ms: int = 10_000) -> None:
        self.cfg = cfg or DetectorConfig()
        c = self.cfg
        ratio = c.reference_period_s * 1000.0 / max(step_ms, 1)  # samples per reference sample

        def n(count: float, least: int = 1) -> int:
            return max(least, round(count * ratio))

        self._warmup = n(c.warmup_samples, 2)
        self._learn_delay = n(c.learn_delay_samples)
        self._resolve = n(c.resolve_samples, 2)
        self._min_bin = n(c.min_bin_samples) if c.min_bin_samples > 0 else 0
        half_life = max(c.level_half_life_samples * ratio, 10.0)
        alpha = 1.0 - (1.0 - c.profile_alpha) ** (1.0 / ratio) if ratio > 0 else c.profile_alpha
        self.baseline = SeasonalBaseline(season, half_life, alpha, tz, prior, c.season_bin_ms)
        self.noise = RobustLevel(half_life / 2)
        self.cusum = LowerCusum(1.0, c.h_min, c.min_samples)
        self._sigma_for_h = -1.0
        self._k = 1.0
        self._h = c.h_min
        self.state = "warmup"
        self.alarm_start_ms: int | None = None
        self.alarm_ms: int | None = None
        self.magnitude = 0.0
        self.recent: deque[tuple[int, float]] = deque(maxlen=2048)
        self._pending: deque[tuple[int, float, float]] = deque()
        self._ok_run = 0

    @property
    def sigma(self) -> float:
        return max(self.noise.scale, self.cfg.sigma_floor)

    def _tune(self) -> None:
        s = self.sigma
        if abs(s - self._sigma_for_h) <= 0.05 * self._sigma_for_h:
            return
        self._sigma_for_h = s
        c = self.cfg
        k_rel = min(max(c.evidence_sigmas * s, c.evidence_min), c.evidence_max)
        self._k = k_rel / s
        self._h = threshold_for_arl(self._k, self.cfg.arl0_samples, self.cfg.h_min, self.cfg.h_max)
        self.cusum.k = self._k
        self.cusum.h = self._h
        self.cusum.cap = self._h / self.cfg.min_samples

    def _learn(self, ts: int, x: float, r: float) -> None:
        self.baseline.learn(ts, x)
        self.noise.update(r)

    def _commit(self, keep: int) -> None:
        p = self._pending
        while len(p) > keep:
            ts, x, r = p.popleft()
            self._learn(ts, x, r)

    def pause(self) -> None:
        """A step that must not be judged: forget unlearned samples, reset the CUSUM."""
        self._pending.clear()
        if self.state != "alarm":
            self.cusum.reset()

    def residual(self, ts_ms: int, x: float, factor: float = 1.0) -> tuple[float, float]:
        e = self.baseline.expected(ts_ms) * factor
        ref = max(e, self.cfg.ref_floor * self.baseline.level.loc * factor, 1e-9)
        return e, (x - e) / ref

    def step(self, ts_ms: int, x: float, factor: float = 1.0) -> SideStep:
        c = self.cfg
        if self.baseline.n == 0:
            self.baseline.learn(ts_ms, x)
            return SideStep(ts_ms, x, x, 0.0)
        e, r = self.residual(ts_ms, x, factor)
        self.recent.append((ts_ms, r))
        if self.state == "warmup":
            self._learn(ts_ms, x, r)
            if self.baseline.n >= self._warmup:
                self.state = "normal"
            return SideStep(ts_ms, x, e, r)
        if self.state == "normal" and (
                self.baseline.profile.counts[self.baseline.profile.bin(ts_ms)]
                < self._min_bin):
            self._learn(ts_ms, x, r)  # this bin of the season is still being learned
            return SideStep(ts_ms, x, e, r)
        if self.state == "normal":
            self._tune()
            z = r / self.sigma
            fired = self.cusum.update(ts_ms, z)
            self._pending.append((ts_ms, x, r))
            if fired:
                start = self.cusum.start_ms if self.cusum.start_ms is not None else ts_ms
                while self._pending and self._pending[0][0] < start:
                    t0, x0, r0 = self._pending.popleft()
                    self._learn(t0, x0, r0)
                self._pending.clear()
                self.state = "alarm"
                self.alarm_start_ms = start
                self.alarm_ms = ts_ms
                self.magnitude = max(-self.mean_r_since(start), 0.0)
                self._ok_run = 0
                return SideStep(ts_ms, x, e, r, alarm_started=True, in_alarm=True)
            if self.cusum.s < 0.5 * self.cusum.h:
                self._commit(self._learn_delay)
            elif len(self._pending) > 4 * self._learn_delay + 2000:
                self._pending.popleft()
            return SideStep(ts_ms, x, e, r)
        # alarm
        self.magnitude += 0.2 * (max(-r, 0.0) - self.magnitude)
        if r > -max(c.resolve_tolerance, 2.5 * self.sigma):
            self._ok_run += 1
        else:
            self._ok_run = 0
        if self._ok_run >= self._resolve:
            self.end_alarm()
            return SideStep(ts_ms, x, e, r, recovered=True)
        return SideStep(ts_ms, x, e, r, in_alarm=True)

    def end_alarm(self) -> None:
        self.state = "normal"
        self.cusum.reset()
        self._pending.clear()
        self.alarm_start_ms = None
        self.alarm_ms = None
        self.magnitude = 0.0
        self._ok_run = 0

    def samples_since(self, ts_ms: int) -> list[tuple[int, float]]:
        out = []
        for t, r in reversed(self.recent):
            if t < ts_ms:
                break
            out.append((t, r))
        out.reverse()
        return out

    def mean_r_since(self, ts_ms: int) -> float:
        s = self.samples_since(ts_ms)
        return sum(r for _, r in s) / len(s) if s else math.nan

    def count_since(self, ts_ms: int) -> int:
        n = 0
        for t, _ in reversed(self.recent):
            if t < ts_ms:
                break
            n += 1
        return n
