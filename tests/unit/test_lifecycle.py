"""The alert lifecycle state machine: dedup, grouping, intervals, silences, maintenance, resolves."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.lifecycle import Lifecycle, LifecycleConfig, MaintenanceWindow, Silence
from alerts.model import Alert, AlertName, AlertState, Severity, fingerprint

pytestmark = pytest.mark.unit

T0 = 1_767_225_600_000
S = 1000
CFG = LifecycleConfig(group_wait_ms=10 * S, group_interval_ms=60 * S, repeat_interval_ms=3600 * S)


def supply(exchange: str, supplier: str = "power", sev: Severity = Severity.CRITICAL,
           ts: int = T0) -> Alert:
    labels = {"alertname": "supply_drop", "park": "toy", "exchange": exchange, "supplier": supplier}
    return Alert(fingerprint=fingerprint(labels), name=AlertName.SUPPLY_DROP,
                 state=AlertState.FIRING, severity=sev, labels=labels,
                 group_key=f"toy/supply/{supplier}", starts_at_ms=ts, updated_at_ms=ts,
                 summary=f"{exchange} down")


def test_fingerprint_is_stable_and_order_independent() -> None:
    a = fingerprint({"x": "1", "y": "2"})
    assert a == fingerprint({"y": "2", "x": "1"})
    assert a != fingerprint({"x": "1", "y": "3"})
    assert len(a) == 16


def test_one_supplier_trip_is_one_notification_after_group_wait() -> None:
    lc = Lifecycle(CFG)
    lc.fire(supply("steam"), T0)
    lc.fire(supply("gypsum"), T0 + 3 * S)
    lc.fire(supply("gas", supplier="refinery"), T0 + 4 * S)
    assert lc.flush(T0 + 9 * S) == []  # still waiting for the rest of the incident
    notes = lc.flush(T0 + 10 * S)
    assert len(notes) == 1  # the refinery group was born at +4 s: due at +14 s
    note = notes[0]
    assert note.group_key == "toy/supply/power" and note.reason == "new"
    assert {a.labels["exchange"] for a in note.alerts} == {"steam", "gypsum"}
    assert note.status == AlertState.FIRING and note.key == "toy/supply/power#1"
    assert [n.group_key for n in lc.flush(T0 + 14 * S)] == ["toy/supply/refinery"]


def test_duplicate_firing_is_not_notified_again() -> None:
    lc = Lifecycle(CFG)
    assert lc.fire(supply("steam"), T0)
    assert len(lc.flush(T0 + 10 * S)) == 1
    assert not lc.fire(supply("steam", ts=T0 + 20 * S), T0 + 20 * S)
    assert lc.flush(T0 + 200 * S) == []
    assert lc.get(supply("steam").fingerprint).starts_at_ms == T0  # first start kept


def test_new_alert_in_notified_group_waits_for_group_interval() -> None:
    lc = Lifecycle(CFG)
    lc.fire(supply("steam"), T0)
    lc.flush(T0 + 10 * S)
    lc.fire(supply("gypsum"), T0 + 20 * S)
    assert lc.flush(T0 + 69 * S) == []
    [note] = lc.flush(T0 + 70 * S)
    assert note.reason == "update" and note.seq == 2
    assert {a.labels["exchange"] for a in note.alerts} == {"steam", "gypsum"}


def test_severity_escalation_is_a_change() -> None:
    lc = Lifecycle(CFG)
    lc.fire(supply("steam", sev=Severity.WARNING), T0)
    lc.flush(T0 + 10 * S)
    lc.fire(supply("steam", sev=Severity.CRITICAL), T0 + 20 * S)
    [note] = lc.flush(T0 + 70 * S)
    assert note.alerts[0].severity == Severity.CRITICAL


def test_repeat_interval() -> None:
    lc = Lifecycle(CFG)
    lc.fire(supply("steam"), T0)
    lc.flush(T0 + 10 * S)
    assert lc.flush(T0 + 3609 * S) == []
    [note] = lc.flush(T0 + 3610 * S)
    assert note.reason == "repeat" and note.seq == 2


def test_resolved_is_delivered_and_group_closes() -> None:
    lc = Lifecycle(CFG)
    lc.fire(supply("steam"), T0)
    lc.flush(T0 + 10 * S)
    assert lc.resolve(supply("steam").fingerprint, T0 + 30 * S)
    assert not lc.resolve(supply("steam").fingerprint, T0 + 31 * S)  # already resolved
    [note] = lc.flush(T0 + 70 * S)
    assert note.status == AlertState.RESOLVED
    assert note.alerts[0].ends_at_ms == T0 + 30 * S
    assert lc.firing() == [] and lc.flush(T0 + 10_000 * S) == []
    # a new incident of the same supplier starts a new group wait, with fresh keys
    lc.fire(supply("steam", ts=T0 + 20_000 * S), T0 + 20_000 * S)
    [again] = lc.flush(T0 + 20_010 * S)
    assert again.reason == "new" and again.key == "toy/supply/power#3"


def test_a_supplier_recovering_on_all_exchanges_is_one_notification() -> None:
    lc = Lifecycle(CFG)
    lc.fire(supply("steam"), T0)
    lc.fire(supply("gypsum"), T0)
    lc.flush(T0 + 10 * S)
    lc.resolve(supply("steam").fingerprint, T0 + 600 * S, T0 + 600 * S)
    assert lc.flush(T0 + 601 * S) == []  # group_wait lets the rest of the burst arrive
    lc.resolve(supply("gypsum").fingerprint, T0 + 602 * S, T0 + 602 * S)
    [note] = lc.flush(T0 + 610 * S)
    assert note.status == AlertState.RESOLVED and len(note.resolved) == 2


def test_silence_hides_firing_but_resolve_of_notified_alert_is_always_sent() -> None:
    lc = Lifecycle(CFG)
    lc.fire(supply("steam"), T0)
    lc.flush(T0 + 10 * S)
    lc.add_silence(Silence("s1", {"exchange": "steam"}, T0 + 20 * S, T0 + 10_000 * S))
    lc.fire(supply("gypsum"), T0 + 30 * S)
    lc.fire(supply("steam"), T0 + 30 * S)
    [update] = lc.flush(T0 + 70 * S)
    assert [a.labels["exchange"] for a in update.alerts] == ["gypsum"]  # steam is silenced
    lc.resolve(supply("steam").fingerprint, T0 + 100 * S)
    [note] = lc.flush(T0 + 130 * S)
    assert [(a.labels["exchange"], a.state) for a in note.alerts] == [
        ("gypsum", AlertState.FIRING), ("steam", AlertState.RESOLVED)]


def test_alert_silenced_all_its_life_is_never_sent() -> None:
    lc = Lifecycle(CFG, silences=[Silence("s", {"supplier": "power"}, T0, T0 + 10_000 * S)])
    lc.fire(supply("steam"), T0)
    assert lc.flush(T0 + 10 * S) == []
    lc.resolve(supply("steam").fingerprint, T0 + 20 * S)
    assert lc.flush(T0 + 100 * S) == []
    assert lc.snapshot()["groups"] == []


def test_silence_expiry_reveals_a_still_firing_alert() -> None:
    lc = Lifecycle(CFG, silences=[Silence("s", {"supplier": "power"}, T0, T0 + 100 * S)])
    lc.fire(supply("steam"), T0)
    assert lc.flush(T0 + 99 * S) == []
    [note] = lc.flush(T0 + 100 * S)
    assert note.alerts[0].labels["exchange"] == "steam"


def test_maintenance_window_of_the_supplier_suppresses() -> None:
    lc = Lifecycle(CFG, maintenance=[MaintenanceWindow(T0, T0 + 3600 * S, enterprise="power")])
    lc.fire(supply("steam"), T0)
    lc.fire(supply("gas", supplier="refinery"), T0)
    notes = lc.flush(T0 + 10 * S)
    assert [n.group_key for n in notes] == ["toy/supply/refinery"]
    assert lc.suppressed_by(supply("steam"), T0 + 10 * S) == "maintenance"
    assert lc.suppressed_by(supply("steam"), T0 + 3600 * S) is None


def test_fired_and_resolved_within_group_wait_is_sent_once_as_resolved() -> None:
    lc = Lifecycle(CFG)
    lc.fire(supply("steam"), T0)
    lc.resolve(supply("steam").fingerprint, T0 + 5 * S)
    [note] = lc.flush(T0 + 10 * S)
    assert note.status == AlertState.RESOLVED and len(note.alerts) == 1
    assert lc.flush(T0 + 1000 * S) == []


def test_snapshot_round_trips_through_json() -> None:
    lc = Lifecycle(CFG, silences=[Silence("s", {"exchange": "gas"}, T0, T0 + 10 * S)])
    lc.fire(supply("steam"), T0)
    lc.flush(T0 + 10 * S)
    lc.fire(supply("gypsum"), T0 + 20 * S)
    state = json.loads(json.dumps(lc.snapshot()))
    other = Lifecycle.restore(state, CFG)
    assert other.snapshot() == lc.snapshot()
    assert [n.key for n in other.flush(T0 + 70 * S)] == [n.key for n in lc.flush(T0 + 70 * S)]


ops = st.lists(st.tuples(st.sampled_from(["fire", "resolve", "wait"]),
                         st.sampled_from(["steam", "gypsum", "gas"]),
                         st.integers(min_value=0, max_value=4000)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_every_notified_firing_gets_a_resolved_and_keys_never_repeat(seq) -> None:
    lc = Lifecycle(CFG)
    now = T0
    sent_firing: set[str] = set()
    sent_resolved: set[str] = set()
    keys: list[str] = []

    def flush() -> None:
        for n in lc.flush(now):
            keys.append(n.key)
            for a in n.alerts:
                (sent_firing if a.state == AlertState.FIRING else sent_resolved).add(a.fingerprint)

    for op, ex, dt_s in seq:
        now += dt_s * S
        supplier = "refinery" if ex == "gas" else "power"
        if op == "fire":
            lc.fire(supply(ex, supplier=supplier, ts=now), now)
        elif op == "resolve":
            lc.resolve(supply(ex, supplier=supplier).fingerprint, now)
        flush()
    for a in lc.firing():
        lc.resolve(a.fingerprint, now)
    now += CFG.group_interval_ms + CFG.group_wait_ms
    flush()
    assert len(keys) == len(set(keys))
    assert sent_firing <= sent_resolved  # nothing left hanging at a receiver
    assert lc.firing() == [] and lc.snapshot()["groups"] == []
