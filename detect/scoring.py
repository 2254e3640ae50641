"""Scoring detections against labelled scenarios. Pure functions, no I/O.

Labels come from the scenario runs: (kind, target, start_ms, end_ms, magnitude), targets being an
exchange id for supply events and a meter id for meter faults (`evaluate` expands an enterprise
trip into one label per exchange it supplies). Alerts are reduced to (category, target,
detected_ms).

Matching: an alert matches a label when both are of the same category ("supply" or
"data_quality"), the targets are equal and start_ms <= detected_ms <= end_ms + grace_ms. A label is
detected by its earliest matching alert (delay = detected_ms - start_ms); further alerts matching
an already detected label are neither true nor false positives (repeats); every other alert is a
false alarm. Labels of "benign" kinds (maintenance, planned changes) never match anything: alerts
during them are false alarms. A neutral label (`scored` False, e.g. a duplicated reading) absorbs
the alerts of its category that match it but is not counted as a label.

    precision = matched alerts / (matched + false alarms)
    recall    = detected labels / labels
    F1        = 2 P R / (P + R)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SUPPLY_KINDS = frozenset({"supply_drop", "supply_decline", "supplier_trip", "trip", "drop", "decline",
                          "gradual_decline", "step_drop", "intermittent"})
DQ_PREFIXES = ("meter_", "dq_", "data_quality")
BENIGN_KINDS = frozenset({"maintenance", "planned_change", "planned", "production_change"})


def label_category(kind: str) -> str | None:
    """'supply', 'data_quality', 'benign' or None (not scored) for a label kind."""
    if kind in SUPPLY_KINDS:
        return "supply"
    if kind.startswith(DQ_PREFIXES) or kind in ("silent", "stuck", "out_of_range", "dead_meter"):
        return "data_quality"
    if kind in BENIGN_KINDS:
        return "benign"
    return None


@dataclass(frozen=True, slots=True)
class Label:
    kind: str
    target: str
    start_ms: int
    end_ms: int
    magnitude: float = 0.0
    exhausted_at_ms: int | None = None  # gradual declines: when the consumers' buffer runs out
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str | None:
        return label_category(self.kind)

    @property
    def scored(self) -> bool:
        """False for a neutral label (extra["scored"] = False): an alert on it is neither
        required nor a false alarm."""
        return bool(self.extra.get("scored", True))


@dataclass(frozen=True, slots=True)
class AlertRecord:
    category: str  # "supply" | "data_quality"
    target: str  # exchange id (supply) or meter id (data quality)
    detected_ms: int
    kind: str = ""


@dataclass(frozen=True, slots=True)
class Match:
    label: Label
    alert: AlertRecord | None

    @property
    def delay_ms(self) -> int | None:
        return None if self.alert is None else self.alert.detected_ms - self.label.start_ms

    @property
    def lead_ms(self) -> int | None:
        if self.alert is None or self.label.exhausted_at_ms is None:
            return None
        return self.label.exhausted_at_ms - self.alert.detected_ms


@dataclass(frozen=True, slots=True)
class CategoryScore:
    labels: int
    detected: int
    alerts: int
    matched_alerts: int
    repeats: int
    false_alarms: int
    delays_ms: tuple[int, ...]
    leads_ms: tuple[int, ...]

    @property
    def precision(self) -> float:
        judged = self.matched_alerts + self.false_alarms
        return self.matched_alerts / judged if judged else math.nan

    @property
    def recall(self) -> float:
        return self.detected / self.labels if self.labels else math.nan

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        if math.isnan(p) or math.isnan(r) or p + r == 0:
            return 0.0 if not (math.isnan(p) or math.isnan(r)) else math.nan
        return 2 * p * r / (p + r)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def match(alerts: Iterable[AlertRecord], labels: Iterable[Label], category: str,
          grace_ms: int = 600_000,
          label_filter: Callable[[Label], bool] | None = None) -> tuple[list[Match], list[AlertRecord], int]:
    """(one Match per label of `category`, the false-alarm alerts, the repeat count)."""
    mine = sorted((a for a in alerts if a.category == category), key=lambda a: a.detected_ms)
    labs = [lb for lb in labels if lb.category == category]
    scored = [lb for lb in labs if lb.scored and (label_filter is None or label_filter(lb))]
    scored_ids = {id(lb) for lb in scored}
    first: dict[int, AlertRecord] = {}
    false: list[AlertRecord] = []
    repeats = 0
    for a in mine:
        hits = [lb for lb in labs if lb.target == a.target
                and lb.start_ms <= a.detected_ms <= lb.end_ms + grace_ms]
        if not hits:
            false.append(a)
            continue
        fresh = [lb for lb in hits if id(lb) not in first]
        if fresh:
            for lb in fresh:
                first[id(lb)] = a
        else:
            repeats += 1
    matches = [Match(lb, first.get(id(lb))) for lb in labs if id(lb) in scored_ids]
    return matches, false, repeats


def score_category(alerts: Sequence[AlertRecord], labels: Sequence[Label], category: str,
                   grace_ms: int = 600_000,
                   label_filter: Callable[[Label], bool] | None = None) -> CategoryScore:
    matches, false, repeats = match(alerts, labels, category, grace_ms, label_filter)
    n_alerts = sum(1 for a in alerts if a.category == category)
    detected = [m for m in matches if m.alert is not None]
    matched_alerts = n_alerts - len(false) - repeats
    return CategoryScore(
        labels=len(matches), detected=len(detected), alerts=n_alerts,
        matched_alerts=matched_alerts, repeats=repeats, false_alarms=len(false),
        delays_ms=tuple(m.delay_ms for m in detected if m.delay_ms is not None),
        leads_ms=tuple(m.lead_ms for m in detected if m.lead_ms is not None),
    )


def dq_classified(alerts: Sequence[AlertRecord], labels: Sequence[Label],
                  supply_target_of: Mapping[str, str], grace_ms: int = 600_000) -> tuple[int, int]:
    """(meter-fault labels answered by a data-quality alert and by no supply alert on the meter's
    exchange during the fault, all meter-fault labels)."""
    good = 0
    dq_labels = [lb for lb in labels if lb.category == "data_quality" and lb.scored]
    for lb in dq_labels:
        lo, hi = lb.start_ms, lb.end_ms + grace_ms
        has_dq = any(a.category == "data_quality" and a.target == lb.target
                     and lo <= a.detected_ms <= hi for a in alerts)
        ex = supply_target_of.get(lb.target)
        has_supply = ex is not None and any(
            a.category == "supply" and a.target == ex and lo <= a.detected_ms <= hi
            for a in alerts)
        good += has_dq and not has_supply
    return good, len(dq_labels)
