"""One-sided (lower) CUSUM on standardised residuals, for drops. Pure, no I/O.

    S_t = max(0, S_{t-1} + min(-z_t - k, h / min_samples)),   alarm when S_t >= h

z is the residual in noise units (negative = below the baseline), k the reference value (half the
shift to detect, in noise units) and h the decision threshold. Capping each step at
h / min_samples is the minimum duration: no single sample, however far off, can raise an alarm.
`start_ms` estimates the change point: the time S last left zero.

`threshold_for_arl` picks h from the wanted average run length between false alarms with
Siegmund's approximation ARL0 ~ (exp(2k(h+1.166)) - 2k(h+1.166) - 1) / (2k^2).
"""

from __future__ import annotations

import math


def siegmund_arl0(k: float, h: float) -> float:
    """Average run length of the lower CUSUM on N(0,1) residuals (no change), in samples."""
    if k <= 0:
        return h * h
    b = 2.0 * k * (h + 1.166)
    return (math.exp(b) - b - 1.0) / (2.0 * k * k)


def threshold_for_arl(k: float, arl0: float, h_min: float = 1.0, h_max: float = 100.0) -> float:
    """Smallest h in [h_min, h_max] with siegmund_arl0(k, h) >= arl0 (bisection)."""
    if siegmund_arl0(k, h_min) >= arl0:
        return h_min
    if siegmund_arl0(k, h_max) < arl0:
        return h_max
    lo, hi = h_min, h_max
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if siegmund_arl0(k, mid) >= arl0:
            hi = mid
        else:
            lo = mid
    return hi


class LowerCusum:
    """Lower CUSUM. update(ts_ms, z) -> True while in alarm (S >= h). reset() clears it."""

    __slots__ = ("k", "h", "cap", "s", "start_ms", "n_up")

    def __init__(self, k: float, h: float, min_samples: int = 1) -> None:
        if k < 0 or h <= 0 or min_samples < 1:
            raise ValueError("need k >= 0, h > 0, min_samples >= 1")
        self.k = k
        self.h = h
        self.cap = h / min_samples
        self.s = 0.0
        self.start_ms: int | None = None
        self.n_up = 0

    def update(self, ts_ms: int, z: float) -> bool:
        inc = min(-z - self.k, self.cap)
        s = self.s + inc
        if s <= 0.0:
            self.s = 0.0
            self.start_ms = None
            self.n_up = 0
            return False
        if self.s == 0.0:
            self.start_ms = ts_ms
        self.s = s
        self.n_up += 1
        return s >= self.h * (1.0 - 1e-12)

    @property
    def alarm(self) -> bool:
        return self.s >= self.h * (1.0 - 1e-12)

    def reset(self) -> None:
        self.s = 0.0
        self.start_ms = None
        self.n_up = 0
