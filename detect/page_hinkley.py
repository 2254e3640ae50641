"""Page-Hinkley test for a decrease of the mean. Pure, no I/O; an alternative to cusum.py.

    m_t = sum_{i<=t} (x_i - mean_t + delta),   M_t = max_{i<=t} m_i,   alarm when M_t - m_t > lambda

mean_t is the running mean of the points seen since the last reset. Page-Hinkley needs no
baseline (it learns its own mean), so it suits a stream without history; the exchange monitor uses
the CUSUM on baseline residuals instead because the seasonal baseline removes daily swings.
"""

from __future__ import annotations


class PageHinkleyDrop:
    __slots__ = ("delta", "lam", "n", "mean", "m", "m_max", "start_ms", "_max_ms")

    def __init__(self, delta: float, lam: float) -> None:
        if delta < 0 or lam <= 0:
            raise ValueError("need delta >= 0 and lambda > 0")
        self.delta = delta
        self.lam = lam
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m = 0.0
        self.m_max = 0.0
        self.start_ms: int | None = None
        self._max_ms: int | None = None

    def update(self, ts_ms: int, x: float) -> bool:
        """Feed one point; True while a decrease of the mean is detected."""
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.m += x - self.mean + self.delta
        if self.m >= self.m_max or self._max_ms is None:
            self.m_max = self.m
            self._max_ms = ts_ms
        self.start_ms = self._max_ms
        return self.m_max - self.m > self.lam
