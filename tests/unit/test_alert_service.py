"""AlertService with a fake clock and a fake transport: events -> grouped, signed notifications."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook

from alerts.delivery.formats import alert_payload_schema
from alerts.delivery.ssrf import SsrfPolicy
from alerts.delivery.webhook import Endpoint, PayloadFormat
from alerts.lifecycle import LifecycleConfig, Silence
from alerts.model import DetectionEvent, DetectionKind
from alerts.service import AlertService, AlertServiceConfig
from parkmon.errors import PayloadError
from tests.support.alerts import FakeClock, toy_park, toy_park_data

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"alert-service-unit-test-secret!!").decode()
S = 1000


class Sink:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        if self.status == 200:
            self.requests.append(request)
        return httpx.Response(self.status)

    def bodies(self) -> list[dict]:
        return [json.loads(r.content) for r in self.requests]


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock(int(time.time() * 1000))  # near real time: signatures are checked live


def make(tmp_path: Path, clock: FakeClock, sink: Sink, park=None,
         fmt: PayloadFormat = PayloadFormat.PARKMON) -> AlertService:
    eps = [Endpoint(name="ops", url="https://ops.example/hook", secret=SECRET, format=fmt)]
    cfg = AlertServiceConfig(lifecycle=LifecycleConfig(group_wait_ms=10 * S,
                                                       group_interval_ms=30 * S))
    return AlertService.create(park or toy_park(), tmp_path / "alerts.sqlite", eps, now_ms=clock,
                               config=cfg, ssrf=SsrfPolicy(resolver=lambda h, p: ["93.184.216.34"]),
                               transport=httpx.MockTransport(sink))


def drop(exchange: str, ts: int, magnitude: float = 1.0) -> DetectionEvent:
    return DetectionEvent(kind=DetectionKind.SUPPLY_DROP, exchange_id=exchange, ts_ms=ts,
                          start_ms=ts - 30 * S, magnitude=magnitude)


def test_one_supplier_trip_is_one_grouped_notification(tmp_path, clock) -> None:
    sink = Sink()
    svc = make(tmp_path, clock, sink)
    assert svc.handle(drop("steam", clock())) == []  # waiting for the rest of the incident
    clock.advance(4 * S)
    svc.handle(drop("gypsum", clock()))
    clock.advance(6 * S)
    notes = svc.tick()
    assert len(notes) == 1
    assert svc.deliver_due() == 1
    [body] = sink.bodies()
    jsonschema.validate(body, alert_payload_schema())
    assert body["status"] == "firing" and body["group_key"] == "toy/supply/power"
    assert {a["labels"]["exchange"] for a in body["alerts"]} == {"steam", "gypsum"}
    assert set(body["affected_consumers"]) == {"refinery", "biotech", "plaster"}
    assert body["downstream_consumers"] == ["farm"]  # plaster is hit directly by gypsum
    steam = next(a for a in body["alerts"] if a["labels"]["exchange"] == "steam")
    assert steam["severity"] == "critical"
    assert {c["enterprise"] for c in steam["impact"]["second_order"]} == {"plaster", "farm"}
    assert [a["enterprise"] for a in steam["impact"]["alternatives"]] == ["incinerator", "steam_import"]
    req = sink.requests[0]
    assert Webhook(SECRET).verify(req.content, dict(req.headers)) == body


def test_silent_meter_gives_a_data_quality_alert_only(tmp_path, clock) -> None:
    sink = Sink()
    svc = make(tmp_path, clock, sink)
    svc.handle(DetectionEvent(kind=DetectionKind.DATA_QUALITY, meter_id="power.steam_out",
                              ts_ms=clock(), dq_kind="silent"))
    clock.advance(10 * S)
    svc.tick()
    svc.deliver_due()
    [body] = sink.bodies()
    jsonschema.validate(body, alert_payload_schema())
    assert [a["name"] for a in body["alerts"]] == ["data_quality"]
    assert body["alerts"][0]["labels"]["meter"] == "power.steam_out"
    assert body["alerts"][0]["impact"] is None and body["affected_consumers"] == []
    assert body["group_key"] == "toy/data_quality/power"


def test_duplicates_and_replays_are_counted_once(tmp_path, clock) -> None:
    sink = Sink()
    svc = make(tmp_path, clock, sink)
    ev = drop("steam", clock())
    svc.handle(ev)
    svc.handle(ev)  # replayed record
    svc.handle(drop("steam", clock() + 5 * S))  # same condition reported again
    clock.advance(10 * S)
    svc.tick()
    svc.deliver_due()
    assert len(sink.requests) == 1
    assert svc.counters.duplicates == 1 and svc.counters.alerts_fired == 1


def test_resolve_survives_a_restart_and_is_delivered(tmp_path, clock) -> None:
    sink = Sink()
    svc = make(tmp_path, clock, sink)
    svc.handle(drop("steam", clock()))
    clock.advance(10 * S)
    svc.tick()
    svc.deliver_due()
    svc.close()
    again = make(tmp_path, clock, sink)  # a new process on the same database
    clock.advance(40 * S)
    again.handle(DetectionEvent(kind=DetectionKind.RESOLVED, exchange_id="steam", ts_ms=clock(),
                                resolves=DetectionKind.SUPPLY_DROP))
    clock.advance(10 * S)  # group_wait after the change: a recovery burst is one message
    again.tick()
    again.deliver_due()
    first, second = sink.bodies()
    assert second["status"] == "resolved" and second["sequence"] == 2
    assert second["alerts"][0]["fingerprint"] == first["alerts"][0]["fingerprint"]
    assert sink.requests[0].headers["webhook-id"] != sink.requests[1].headers["webhook-id"]


def test_receiver_outage_keeps_messages_in_order(tmp_path, clock) -> None:
    sink = Sink()
    sink.status = 503
    svc = make(tmp_path, clock, sink)
    for i, x in enumerate(["steam", "gas", "sludge"]):  # three suppliers -> three groups
        svc.handle(drop(x, clock() + i))
    clock.advance(10 * S)
    svc.tick()
    for _ in range(5):
        svc.deliver_due()
        clock.advance(60 * S)
    assert sink.requests == [] and svc.outbox.counts()["pending"] == 3
    sink.status = 200
    clock.advance(600 * S)
    assert svc.deliver_due() == 3
    assert [b["group_key"] for b in sink.bodies()] == [
        "toy/supply/power", "toy/supply/refinery", "toy/supply/biotech"]


def test_maintenance_window_of_the_park_suppresses(tmp_path, clock) -> None:
    data = toy_park_data()
    data["maintenance"] = [{"enterprise": "power", "start": "2000-01-01T00:00:00Z",
                            "end": "2100-01-01T00:00:00Z", "description": "overhaul"}]
    sink = Sink()
    svc = make(tmp_path, clock, sink, park=toy_park(data))
    svc.handle(drop("steam", clock()))
    clock.advance(10 * S)
    assert svc.tick() == []


def test_silence_through_the_service_is_persisted(tmp_path, clock) -> None:
    sink = Sink()
    svc = make(tmp_path, clock, sink)
    svc.add_silence(Silence("s1", {"exchange": "steam"}, clock(), clock() + 3_600 * S))
    svc.close()
    again = make(tmp_path, clock, sink)
    again.handle(drop("steam", clock()))
    clock.advance(10 * S)
    assert again.tick() == []


def test_alertmanager_format(tmp_path, clock) -> None:
    sink = Sink()
    svc = make(tmp_path, clock, sink, fmt=PayloadFormat.ALERTMANAGER)
    svc.handle(drop("steam", clock()))
    clock.advance(10 * S)
    svc.tick()
    svc.deliver_due()
    [body] = sink.bodies()
    assert body["version"] == "4" and body["status"] == "firing"
    [a] = body["alerts"]
    assert a["labels"]["alertname"] == "supply_drop" and a["endsAt"] == "0001-01-01T00:00:00Z"
    assert json.loads(a["annotations"]["impact"])["exchange"] == "steam"
    assert body["commonLabels"]["supplier"] == "power"


def test_unknown_exchange_is_a_payload_error_and_changes_nothing(tmp_path, clock) -> None:
    svc = make(tmp_path, clock, Sink())
    with pytest.raises(PayloadError) as info:
        svc.handle(drop("nope", clock()))
    assert info.value.reason == "unknown_exchange"
    with pytest.raises(PayloadError):
        svc.handle(b'{"kind": "supply_drop", "ts_ms": 1}')
    assert svc.outbox.load_state() is None


def test_detector_events_are_accepted_through_the_adapter(tmp_path, clock) -> None:
    import detect.events as events
    sink = Sink()
    svc = make(tmp_path, clock, sink)
    svc.handle(events.SupplyDrop(exchange="steam", start_ms=clock() - 60 * S, detected_ms=clock(),
                                 magnitude=0.5, expected_rate=100.0, observed_rate=50.0,
                                 buffer_exhausted_at_ms=None, supplier_meters=("power.steam_out",)))
    svc.handle(events.DataQuality(meter="biotech.steam_in", dq_kind="stuck", detected_ms=clock(),
                                  since_ms=clock() - 60 * S, exchange="steam"))
    clock.advance(10 * S)
    assert {n.group_key for n in svc.tick()} == {"toy/supply/power", "toy/data_quality/biotech"}
    svc.handle(events.Resolved(key="dq:biotech.steam_in:stuck", of_kind="data_quality",
                               resolved_ms=clock(), exchange="steam", meter="biotech.steam_in",
                               dq_kind="stuck"))
    clock.advance(30 * S)
    [note] = svc.tick()
    assert note.group_key == "toy/data_quality/biotech" and note.status.value == "resolved"
    assert [a.name.value for a in svc.lifecycle.firing()] == ["supply_drop"]


def test_failed_commit_rolls_the_state_back_so_a_retry_notifies(tmp_path, clock) -> None:
    sink = Sink()
    svc = make(tmp_path, clock, sink)
    svc.handle(drop("steam", clock()))
    clock.advance(10 * S)
    real_commit = svc.outbox.commit
    calls = {"n": 0}

    def failing_commit(**kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real_commit(**kw)

    svc.outbox.commit = failing_commit  # type: ignore[method-assign]
    with pytest.raises(OSError):
        svc.tick()
    assert len(svc.tick()) == 1  # the notification was not lost with the failed transaction
    svc.deliver_due()
    assert len(sink.requests) == 1


def test_metrics_report_events_outbox_and_attempts(tmp_path, clock) -> None:
    from prometheus_client import generate_latest

    from alerts.delivery.outbox import Outbox
    from alerts.metrics import AlertMetrics

    sink = Sink()
    sink.status = 503
    svc = make(tmp_path, clock, sink)
    metrics = AlertMetrics(svc.counters, lambda: Outbox(tmp_path / "alerts.sqlite", clock))
    worker = svc.make_worker()
    worker.on_result = metrics.on_result
    ev = drop("steam", clock())
    svc.handle(ev)
    svc.handle(ev)
    clock.advance(10 * S)
    svc.tick()
    worker.deliver_due()
    text = generate_latest(metrics.registry).decode()
    assert 'parkmon_alerts_events_total{result="applied"} 1.0' in text
    assert 'parkmon_alerts_events_total{result="duplicate"} 1.0' in text
    assert 'parkmon_alerts_outbox_messages{status="pending"} 1.0' in text
    assert 'parkmon_alerts_delivery_attempts_total{endpoint="ops",outcome="retry"} 1.0' in text


def test_end_of_a_supply_condition_resolves_decline_and_drop(tmp_path, clock) -> None:
    svc = make(tmp_path, clock, Sink())
    svc.handle(DetectionEvent(kind=DetectionKind.SUPPLY_DECLINE, exchange_id="gas", ts_ms=clock(),
                              magnitude=0.2, buffer_exhausted_at_ms=clock() + 3_600 * S))
    svc.handle(drop("gas", clock() + S))
    assert sorted(a.name.value for a in svc.lifecycle.firing()) == ["supply_decline", "supply_drop"]
    svc.handle(DetectionEvent(kind=DetectionKind.RESOLVED, exchange_id="gas", ts_ms=clock() + 2 * S,
                              resolves=DetectionKind.SUPPLY_DROP))
    assert svc.lifecycle.firing() == []


def _step_events(now: int) -> list[DetectionEvent]:
    first = drop("steam", now)
    return [first,
            DetectionEvent(kind=DetectionKind.DATA_QUALITY, meter_id="power.steam_out", ts_ms=now,
                           dq_kind="silent"),
            drop("gypsum", now),
            first,  # replayed within the same step
            DetectionEvent(kind=DetectionKind.RESOLVED, exchange_id="steam", ts_ms=now + S,
                           resolves=DetectionKind.SUPPLY_DROP)]


def _summary(bodies: list[dict]) -> list[tuple]:
    return sorted((b["status"], b["group_key"], tuple(sorted(
        (a["name"], a["state"], json.dumps(a["labels"], sort_keys=True)) for a in b["alerts"])))
        for b in bodies)


def test_handle_many_notifies_like_one_by_one_in_one_commit(tmp_path, clock) -> None:
    """A detection step's events in one durable step: the same notifications as `handle` for each
    in turn, one outbox transaction instead of one per event, duplicates counted."""
    one_sink, many_sink = Sink(), Sink()
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    one = make(tmp_path / "one", clock, one_sink)
    many = make(tmp_path / "many", clock, many_sink)
    commits = {"n": 0}
    real_commit = many.outbox.commit

    def counting_commit(**kw):
        commits["n"] += 1
        return real_commit(**kw)

    many.outbox.commit = counting_commit  # type: ignore[method-assign]
    for ev in _step_events(clock()):
        one.handle(ev)
    many.handle_many(_step_events(clock()))
    assert commits["n"] == 1
    assert many.counters.events == one.counters.events == 5
    assert many.counters.duplicates == one.counters.duplicates == 1
    for svc in (one, many):
        clock.advance(10 * S)
        svc.tick()
        svc.deliver_due()
    assert one_sink.bodies() and _summary(many_sink.bodies()) == _summary(one_sink.bodies())
    assert many.handle_many(_step_events(clock() - 20 * S)) == []  # a replayed step: nothing new
    assert many.counters.duplicates == 1 + 5


def test_handle_many_is_all_or_nothing(tmp_path, clock) -> None:
    sink = Sink()
    svc = make(tmp_path, clock, sink)
    real_commit = svc.outbox.commit
    calls = {"n": 0}

    def failing_commit(**kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("disk full")
        return real_commit(**kw)

    svc.outbox.commit = failing_commit  # type: ignore[method-assign]
    events = _step_events(clock())[:3]
    with pytest.raises(OSError):
        svc.handle_many(events)
    assert not any(svc.outbox.seen_event(e.event_id) for e in events)
    svc.handle_many(events)  # the retry applies all of them
    assert all(svc.outbox.seen_event(e.event_id) for e in events)
    clock.advance(10 * S)
    svc.tick()
    svc.deliver_due()
    names = {a["name"] for b in sink.bodies() for a in b["alerts"]}
    assert names == {"supply_drop", "data_quality"}
