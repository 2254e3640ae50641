"""ExchangeMonitor: every detector of one symbiotic exchange, composed. Pure, no I/O.

Feed it readings `observe(meter, ts_ms, value)` (counter meters cumulative, rate meters per hour,
canonical units) or window results `observe_rate(meter, ts_ms, rate)`, and advance event time with
`tick(now_ms)` so silent meters are noticed. Each call returns the events it caused (events.py):

    SupplyDrop / SupplyDecline   the exchange's supply fell (abruptly / gradually), with the
                                 projected time the consumers' buffer runs out
    DataQuality                  a meter is silent, stuck, out of range, or disagrees with the
                                 other side of the exchange (a dead meter, not a dead supplier)
    Resolved                     one of the above ended (same `key`)

How it decides: each side (suppliers, consumers) is summed onto a time grid (the meters' period)
and watched by its own DropDetector (baseline + CUSUM). When one side alarms, the other side's
residuals since the change start are cross-checked (crosscheck.py): a confirmed change is a supply
event; an unconfirmed one is a data-quality event on the meter that fell. A side with an unusable
meter (silent / stuck / out of range) pauses and cannot raise or refute anything; the other side
then decides alone. Declared maintenance windows pause both sides (suppression.py).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from detect.buffer import deficit_hours, linear_trend, project_exhaustion
from detect.config import DetectorConfig
from detect.crosscheck import Verdict, cross_check, suspect_meter
from detect.dataquality import MeterHealth, Transition
from detect.drop import DropDetector, SideStep
from detect.events import DataQuality, Event, Resolved, SupplyDecline, SupplyDrop
from detect.rates import CounterRate
from detect.suppression import PlannedWindow, Suppressor


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """What the monitor needs to know about a meter (a subset of parkmon.park.Meter)."""

    id: str
    kind: str = "rate"  # "rate" | "counter"
    period_s: float = 10.0
    range_min: float | None = 0.0
    range_max: float | None = None
    rollover: float | None = None
    profile: str = "continuous"
    capacity: float | None = None
    """Largest physical flow per hour: a counter's derived rate above 1.5 x this is a bad reading
    (a register jump after a gap or a clock step), not a flow."""

    @classmethod
    def of(cls, meter: Any) -> MeterSpec:
        """From a parkmon.park.Meter (duck-typed)."""
        rmax = getattr(meter, "range_max", None)
        return cls(id=meter.id, kind=meter.kind, period_s=float(meter.period_s),
                   range_min=getattr(meter, "range_min", 0.0),
                   range_max=None if rmax is None or math.isinf(rmax) else float(rmax),
                   rollover=getattr(meter, "rollover", None),
                   profile=getattr(meter, "profile", "continuous") or "continuous",
                   capacity=getattr(meter, "capacity", None))


def season_for(specs: Iterable[MeterSpec], configured: str) -> str:
    if configured != "auto":
        return configured
    profiles = {s.profile for s in specs}
    if "weekdays" in profiles:
        return "week"
    if profiles <= {"continuous"}:
        return "none"
    return "day"


class _Side:
    """One side of the exchange: its meters' latest rates, their health and its drop detector."""

    def __init__(self, name: str, specs: Sequence[MeterSpec], cfg: DetectorConfig, season: str,
                 tz: str, prior: Callable[[int], float] | None) -> None:
        self.name = name
        self.specs = {s.id: s for s in specs}
        self.step_ms = int(min((s.period_s for s in specs), default=10.0) * 1000) or 10_000
        # bounded: while one meter is silent the others' rates pile up until the side steps again
        self.rates: dict[str, deque[tuple[int, float]]] = {
            s.id: deque(maxlen=4096) for s in specs}
        self.counters = {s.id: CounterRate(s.rollover) for s in specs if s.kind == "counter"}
        self.health = {s.id: MeterHealth(s.id, s.kind, s.period_s, s.range_min, s.range_max, cfg)
                       for s in specs}
        self.detector = DropDetector(cfg, season, tz, prior, self.step_ms)
        self.next_ms: int | None = None
        self.last: SideStep | None = None
        self.ref_rates: dict[str, float] = {}  # per-meter EW rate while the exchange is quiet

    @property
    def present(self) -> bool:
        return bool(self.specs)

    @property
    def usable(self) -> bool:
        return self.present and all(h.usable for h in self.health.values())

    @property
    def available(self) -> bool:
        return self.usable and self.detector.state in ("normal", "alarm")

    def ready_ms(self) -> int | None:
        """Grid time up to which every meter of the side has reported."""
        lasts = [q[-1][0] for q in self.rates.values() if q]
        if len(lasts) < len(self.rates):
            return None
        return min(lasts)

    def value_at(self, t: int, stale_ms: int) -> float:
        """Sum of the meters' latest rates in the step [t, t + step_ms) (held from before when a
        meter has none there); NaN when one of them is older than stale_ms."""
        total = 0.0
        end = t + self.step_ms
        for q in self.rates.values():
            while len(q) > 1 and q[1][0] < end:
                q.popleft()
            if t - q[0][0] > stale_ms:
                return math.nan
            total += q[0][1]
        return total

    def current_rates(self) -> dict[str, float]:
        return {m: q[-1][1] for m, q in self.rates.items() if q}


class ExchangeMonitor:
    """Detectors of one exchange; see the module docstring. Not thread-safe (one per partition)."""

    def __init__(self, exchange_id: str, suppliers: Sequence[MeterSpec],
                 consumers: Sequence[MeterSpec], buffer_h: float = 0.0,
                 cfg: DetectorConfig | None = None, windows: Iterable[PlannedWindow] = (),
                 tz: str = "UTC", prior: Callable[[int], float] | None = None) -> None:
        if not suppliers and not consumers:
            raise ValueError(f"exchange {exchange_id!r} has no meters")
        self.exchange_id = exchange_id
        self.cfg = cfg or DetectorConfig()
        self.buffer_h = buffer_h
        season = season_for([*suppliers, *consumers], self.cfg.season)
        self.sup = _Side("suppliers", suppliers, self.cfg, season, tz, prior)
        self.con = _Side("consumers", consumers, self.cfg, season, tz, prior)
        self._side_of = {**{m.id: self.sup for m in suppliers}, **{m.id: self.con for m in consumers}}
        ids = [*self._side_of]
        self.suppress = Suppressor(windows, ids, self.cfg.maintenance_grace_ms)
        self._pending: tuple[_Side, int, int] | None = None  # (lead side, start_ms, detected_ms)
        self._supply: tuple[_Side, str] | None = None  # (lead side, kind) while a supply alert is on
        self._suspect: dict[str, str] = {}  # side name -> meter reported as disagreeing
        self.now_ms = 0
        periods = [s.period_s for s in (*suppliers, *consumers)]
        self._stale_ms = max(int(self.cfg.silent_periods * max(periods) * 1000),
                             self.cfg.silent_min_ms)

    @classmethod
    def from_park(cls, park: Any, exchange_id: str, cfg: DetectorConfig | None = None,
                  windows: Iterable[PlannedWindow] | None = None,
                  prior: Callable[[int], float] | None = None) -> ExchangeMonitor:
        x = park.exchange(exchange_id)
        sup = [MeterSpec.of(park.meter(m)) for m in x.suppliers]
        con = [MeterSpec.of(park.meter(m)) for m in x.consumers]
        if windows is None:
            windows = maintenance_windows(park)
        return cls(x.id, sup, con, float(x.buffer_h or 0.0), cfg, windows,
                   getattr(park, "timezone", "UTC") or "UTC", prior)

    @property
    def meters(self) -> list[str]:
        return list(self._side_of)

    # ----------------------------------------------------------------------------- input
    def observe(self, meter: str, ts_ms: int, value: float) -> list[Event]:
        """A raw reading: cumulative for counter meters, per hour for rate meters."""
        side = self._side_of.get(meter)
        if side is None:
            return []
        counter = side.counters.get(meter)
        if counter is None:
            return self._ingest(side, meter, ts_ms, value, value, False)
        h = side.health[meter]
        if h.last_ts is not None and ts_ms <= h.last_ts:
            return []
        ok = math.isfinite(value) and h.range_min <= value <= h.range_max
        rate = counter.update(ts_ms, value) if ok else None
        if not ok:
            counter.reset()
        cap = side.specs[meter].capacity
        if rate is not None and cap is not None and rate > 1.5 * cap:
            rate = None  # a register jump, not a flow: skip this interval
        return self._ingest(side, meter, ts_ms, value, rate, counter.went_backwards)

    def observe_rate(self, meter: str, ts_ms: int, rate: float) -> list[Event]:
        """A rate (per hour) for any meter kind, e.g. a streams window result."""
        side = self._side_of.get(meter)
        if side is None:
            return []
        h = side.health[meter]
        if side.specs[meter].kind == "counter":  # range of a counter is the register's: skip it
            h = side.health[meter]
            h.range_min, h.range_max = 0.0, math.inf
        return self._ingest(side, meter, ts_ms, rate, rate, False)

    def tick(self, now_ms: int) -> list[Event]:
        """Advance event time: meters silent for too long raise data-quality events."""
        out: list[Event] = []
        self.now_ms = max(self.now_ms, now_ms)
        for side in (self.sup, self.con):
            for mid, h in side.health.items():
                self._dq_events(mid, h.tick(now_ms), now_ms, out)
        return out

    def _ingest(self, side: _Side, meter: str, ts_ms: int, raw: float, rate: float | None,
                invalid: bool) -> list[Event]:
        out: list[Event] = []
        h = side.health[meter]
        if h.last_ts is not None and ts_ms <= h.last_ts:
            return out
        self.now_ms = max(self.now_ms, ts_ms)
        self._dq_events(meter, h.observe(ts_ms, raw, invalid), ts_ms, out)
        if (rate is None or h.last_bad or not math.isfinite(rate) or "out_of_range" in h.active
                or rate < 0):
            return out
        side.rates[meter].append((ts_ms, rate))
        self._advance(side, out)
        return out

    # ----------------------------------------------------------------------------- stepping
    def _advance(self, side: _Side, out: list[Event]) -> None:
        ready = side.ready_ms()
        if ready is None:
            return
        step = side.step_ms
        if side.next_ms is None:
            side.next_ms = (ready // step) * step
        while side.next_ms <= ready:
            t = side.next_ms
            side.next_ms = t + step
            self._step(side, t, side.value_at(t, self._stale_ms), out)

    def _step(self, side: _Side, t: int, x: float, out: list[Event]) -> None:
        det = side.detector
        if (math.isnan(x) or self.suppress.suppressed(t) or not side.usable
                or self.suppress.changed_recently(t)):
            det.pause()
            if self._pending is not None and self._pending[0] is side:
                self._pending = None
                det.end_alarm()
            return
        st = det.step(t, x, self.suppress.factor(t))
        side.last = st
        if det.state == "normal" and self._pending is None and self._supply is None:
            for m, q in side.rates.items():
                if q:
                    prev = side.ref_rates.get(m, q[0][1])
                    side.ref_rates[m] = prev + 0.05 * (q[0][1] - prev)
        other = self.con if side is self.sup else self.sup
        if st.alarm_started:
            if self._supply is not None or side.name in self._suspect:
                pass
            elif other.name in self._suspect:
                self._fire_supply(side, t, side.name, out)
            elif self._pending is None:
                assert det.alarm_start_ms is not None
                self._pending = (side, det.alarm_start_ms, t)
        if self._pending is not None:
            self._decide(t, out)
        if st.recovered:
            self._recovered(side, t, out)

    def _decide(self, t: int, out: list[Event]) -> None:
        assert self._pending is not None
        lead, start, detected = self._pending
        other = self.con if lead is self.sup else self.sup
        mag = self._magnitude(lead, start)
        od = other.detector
        verdict = Verdict.UNCHECKED
        if self.cfg.crosscheck:
            verdict = cross_check(
                mag, od.mean_r_since(start), od.count_since(start), other.available,
                od.state == "alarm", self.cfg.confirm_fraction, self.cfg.refute_fraction,
                self.cfg.crosscheck_samples)
        if verdict is Verdict.METER_SUSPECT and any(
                (since := h.stuck_since()) is not None and since <= start
                for h in other.health.values()):
            # the side that "holds" repeats one value since the change began: a meter freezing
            # (not yet long enough to be called stuck) cannot refute the drop
            verdict = Verdict.UNCHECKED
        if verdict is Verdict.PENDING and t - detected >= self.cfg.crosscheck_timeout_ms:
            verdict = Verdict.UNCHECKED
        if verdict is Verdict.PENDING:
            return
        self._pending = None
        if verdict is Verdict.METER_SUSPECT:
            meter = suspect_meter(lead.ref_rates, lead.current_rates()) or next(iter(lead.specs))
            self._suspect[lead.name] = meter
            out.append(DataQuality(meter, "disagrees", t, start, self.exchange_id,
                                   f"{lead.name} fell {mag:.0%} while the {other.name} did not"))
            return
        confirmed = "both" if verdict is Verdict.CONFIRMED else lead.name
        self._fire_supply(lead, t, confirmed, out)

    def _magnitude(self, side: _Side, start: int) -> float:
        s = side.detector.samples_since(start)[-6:]
        if not s:
            return 0.0
        return min(max(-sum(r for _, r in s) / len(s), 0.0), 1.0)

    def _fire_supply(self, lead: _Side, t: int, confirmed: str, out: list[Event]) -> None:
        det = lead.detector
        start = det.alarm_start_ms if det.alarm_start_ms is not None else t
        samples = det.samples_since(start)
        mag = self._magnitude(lead, start)
        st = lead.last
        expected = st.expected if st is not None else math.nan
        observed = st.value if st is not None else math.nan
        # drop or decline? A decline is explained by the trend of the last trend_window: the
        # fitted line already reaches the shortfall; after a step, the line lags far behind it.
        window = [x for x in det.recent if x[0] > t - self.cfg.trend_window_ms]
        r_fit, slope = linear_trend(window)
        abrupt = not (len(window) >= 30 and slope < 0 and r_fit <= -0.6 * mag)
        used = deficit_hours(samples)
        if abrupt:
            recent = samples[-6:]
            r_now, slope = (sum(r for _, r in recent) / len(recent) if recent else -mag), 0.0
        else:
            r_now = r_fit
        exhausted = project_exhaustion(t, used, self.buffer_h, r_now, slope,
                                       self.cfg.projection_horizon_h)
        sup_meters = tuple(self.sup.specs)
        ev: SupplyDrop | SupplyDecline
        if abrupt:
            ev = SupplyDrop(self.exchange_id, start, t, mag, expected, observed, exhausted,
                            confirmed, sup_meters)
        else:
            ev = SupplyDecline(self.exchange_id, start, t, mag, expected, observed, exhausted,
                               slope, confirmed, sup_meters)
        self._supply = (lead, ev.kind)
        out.append(ev)

    def _recovered(self, side: _Side, t: int, out: list[Event]) -> None:
        if side.name in self._suspect:
            meter = self._suspect.pop(side.name)
            out.append(Resolved(f"dq:{meter}:disagrees", "data_quality", t, self.exchange_id,
                                meter, "disagrees"))
        if self._pending is not None and self._pending[0] is side:
            self._pending = None
        if self._supply is not None:
            in_alarm = [s for s in (self.sup, self.con)
                        if s.detector.state == "alarm" and s.name not in self._suspect]
            if not in_alarm:
                kind = self._supply[1]
                self._supply = None
                out.append(Resolved(f"supply:{self.exchange_id}", kind, t, self.exchange_id))

    def _dq_events(self, meter: str, trans: list[Transition], t: int, out: list[Event]) -> None:
        for kind, begins, since in trans:
            if begins:
                out.append(DataQuality(meter, kind, t, since, self.exchange_id))  # type: ignore[arg-type]
            else:
                out.append(Resolved(f"dq:{meter}:{kind}", "data_quality", t, self.exchange_id,
                                    meter, kind))
            side = self._side_of[meter]
            if begins and side.detector.state == "alarm" and self._supply is None:
                # the side's alarm came from a broken meter: forget it (no supply verdict)
                if self._pending is not None and self._pending[0] is side:
                    self._pending = None
                if side.name not in self._suspect:
                    side.detector.end_alarm()

    # ----------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """A snapshot for dashboards and debugging (not a stable contract)."""
        def side(s: _Side) -> dict[str, Any]:
            d = s.detector
            return {"state": d.state, "usable": s.usable, "sigma": d.sigma,
                    "expected": None if s.last is None else s.last.expected,
                    "value": None if s.last is None else s.last.value,
                    "cusum": d.cusum.s, "threshold": d.cusum.h}
        return {"exchange": self.exchange_id, "suppliers": side(self.sup),
                "consumers": side(self.con), "supply_alert": self._supply is not None,
                "pending": self._pending is not None, "suspect": dict(self._suspect)}


def maintenance_windows(park: Any) -> list[PlannedWindow]:
    """The park's declared maintenance windows as PlannedWindows over meter ids."""
    out = []
    for w in getattr(park, "maintenance", ()):
        meters = frozenset(w.meters) if w.meters else frozenset(
            m.id for m in park.meters if m.enterprise == w.enterprise)
        out.append(PlannedWindow(meters, int(w.start_ms), int(w.end_ms), None,
                                 w.description or ""))
    return out
