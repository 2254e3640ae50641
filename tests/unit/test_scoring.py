"""The scoring itself, on a tiny hand-labelled case worked out by hand."""

from __future__ import annotations

import math

import pytest

from detect.scoring import (
    AlertRecord,
    Label,
    dq_classified,
    label_category,
    percentile,
    score_category,
)

pytestmark = pytest.mark.unit

M = 60_000

# Hand-labelled day: two supply drops on exchange A, one on B, a maintenance window on B, and a
# silent meter m1 belonging to A.
LABELS = [
    Label("supply_drop", "A", 10 * M, 20 * M, 0.5),
    Label("supply_drop", "A", 100 * M, 110 * M, 0.3),
    Label("supply_drop", "B", 50 * M, 60 * M, 0.9),
    Label("maintenance", "B", 200 * M, 300 * M),
    Label("meter_silent", "m1", 400 * M, 420 * M),
]
ALERTS = [
    AlertRecord("supply", "A", 10 * M + 30_000),  # detects drop 1 after 30 s
    AlertRecord("supply", "A", 15 * M),  # a repeat within drop 1: neither TP nor FP
    AlertRecord("supply", "B", 51 * M),  # detects B's drop after 60 s
    AlertRecord("supply", "B", 250 * M),  # during maintenance: a false alarm
    AlertRecord("supply", "A", 405 * M),  # the silent meter taken for a supply drop: false alarm
    AlertRecord("data_quality", "m1", 401 * M),  # the right classification
    AlertRecord("supply", "C", 5 * M),  # nothing there: false alarm
]
# drop 2 on A (100-110 min) is missed.


def test_supply_scores_by_hand():
    s = score_category(ALERTS, LABELS, "supply", grace_ms=10 * M)
    assert s.labels == 3 and s.detected == 2
    assert s.alerts == 6 and s.repeats == 1 and s.false_alarms == 3 and s.matched_alerts == 2
    assert s.precision == pytest.approx(2 / 5)
    assert s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))
    assert sorted(s.delays_ms) == [30_000, 60_000]


def test_alert_after_grace_is_false():
    late = [AlertRecord("supply", "A", 20 * M + 10 * M + 1)]
    s = score_category(late, LABELS, "supply", grace_ms=10 * M)
    assert s.detected == 0 and s.false_alarms == 1


def test_label_filter_scores_a_subset_but_matches_against_all():
    s = score_category(ALERTS, LABELS, "supply", grace_ms=10 * M,
                       label_filter=lambda lb: lb.magnitude >= 0.5)
    assert s.labels == 2 and s.detected == 2


def test_data_quality_and_classification():
    s = score_category(ALERTS, LABELS, "data_quality")
    assert (s.labels, s.detected, s.false_alarms) == (1, 1, 0)
    # m1 got a DQ alert but A also got a supply alert during the outage: misclassified
    assert dq_classified(ALERTS, LABELS, {"m1": "A"}) == (0, 1)
    assert dq_classified([a for a in ALERTS if a.detected_ms != 405 * M], LABELS, {"m1": "A"}) == (1, 1)


def test_lead_time_against_buffer_exhaustion():
    lb = Label("supply_decline", "A", 0, 10 * 60 * M, 0.8, exhausted_at_ms=5 * 60 * M)
    s = score_category([AlertRecord("supply", "A", 60 * M)], [lb], "supply")
    assert s.leads_ms == (4 * 60 * M,)


def test_categories_and_percentile():
    assert label_category("supply_drop") == "supply"
    assert label_category("meter_stuck") == "data_quality"
    assert label_category("planned_change") == "benign"
    assert label_category("something_else") is None
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert math.isnan(percentile([], 50))
    empty = score_category([], [], "supply")
    assert math.isnan(empty.precision) and math.isnan(empty.recall)


def test_neutral_labels_absorb_alerts_but_are_not_counted():
    labels = [Label("meter_silent", "m1", 0, 10 * M),
              Label("dq_minor_duplicates", "m2", 0, 10 * M, extra={"scored": False})]
    alerts = [AlertRecord("data_quality", "m1", M), AlertRecord("data_quality", "m2", M),
              AlertRecord("data_quality", "m3", M)]
    s = score_category(alerts, labels, "data_quality")
    assert (s.labels, s.detected, s.false_alarms) == (1, 1, 1)  # only m3 is false
    assert dq_classified(alerts, labels, {}) == (1, 1)
