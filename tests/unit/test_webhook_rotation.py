"""Webhook secret rotation: every active secret signs, so receivers holding the old or the new
secret verify; a message queued before a rotation is signed with the secrets of the run that sends
it (they are read per attempt, never stored in the outbox)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from alerts.cli import AlertsSettings, build_endpoints, parse_secrets
from alerts.delivery.ssrf import SsrfPolicy
from alerts.delivery.webhook import MAX_SECRETS, Endpoint, sign_headers
from alerts.lifecycle import LifecycleConfig
from alerts.model import DetectionEvent, DetectionKind
from alerts.service import AlertService, AlertServiceConfig
from parkmon.errors import ConfigError
from tests.support.alerts import FakeClock, toy_park

pytestmark = pytest.mark.unit

OLD = "whsec_" + base64.b64encode(b"rotation-test-OLD-secret-0123456").decode()
NEW = "whsec_" + base64.b64encode(b"rotation-test-NEW-secret-6543210").decode()
OTHER = "whsec_" + base64.b64encode(b"rotation-test-unrelated-secret!!").decode()
BODY = b'{"status":"firing","w\xc3\xb6rld":1}'


def headers(secrets: list[str]) -> dict[str, str]:
    return sign_headers(secrets, "msg_0123", int(time.time()), BODY)


def test_both_secrets_sign_and_each_receiver_verifies():
    h = headers([NEW, OLD])
    entries = h["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(e.startswith("v1,") for e in entries)
    assert Webhook(NEW).verify(BODY, h) == json.loads(BODY)
    assert Webhook(OLD).verify(BODY, h) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(BODY, h)


def test_one_secret_gives_one_signature_and_repeats_sign_once():
    assert sign_headers(NEW, "msg_0123", 1, BODY) == sign_headers([NEW], "msg_0123", 1, BODY)
    assert len(headers([NEW])["webhook-signature"].split(" ")) == 1
    assert len(headers([NEW, NEW])["webhook-signature"].split(" ")) == 1
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(BODY, headers([NEW]))


@pytest.mark.parametrize("value", [f"{NEW} {OLD}", f"{NEW},{OLD}", f" {NEW} ,\n {OLD} "])
def test_the_secret_variable_takes_several_secrets(value: str):
    assert parse_secrets(value) == [NEW, OLD]
    s = AlertsSettings(endpoints=[{"name": "ops", "url": "https://ops.example/hook"}])
    [ep] = build_endpoints(s, env={"PARKMON_ALERTS_SECRET_OPS": value})
    assert [x.get_secret_value() for x in ep.secrets] == [NEW, OLD]
    assert NEW not in repr(ep) and OLD not in repr(ep) and NEW not in str(ep.model_dump())


def test_a_bad_or_excess_secret_is_refused_without_printing_any_secret():
    s = AlertsSettings(endpoints=[{"name": "ops", "url": "https://ops.example/hook"}])
    bad = "whsec_not-base64!"
    with pytest.raises(ConfigError) as info:
        build_endpoints(s, env={"PARKMON_ALERTS_SECRET_OPS": f"{NEW} {bad}"})
    assert "PARKMON_ALERTS_SECRET_OPS" in str(info.value)
    assert NEW not in str(info.value) and "not-base64" not in str(info.value)
    with pytest.raises(ConfigError, match="extra_secrets"):
        build_endpoints(s, env={"PARKMON_ALERTS_SECRET_OPS": " ".join([NEW] * (MAX_SECRETS + 1))})


class Receiver:
    """httpx transport: down (503) or up, recording what it accepted."""

    def __init__(self) -> None:
        self.up = False
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        if not self.up:
            return httpx.Response(503)
        self.requests.append(request)
        return httpx.Response(200)


def service(db: Path, clock: FakeClock, rx: Receiver, secrets: list[str]) -> AlertService:
    ep = Endpoint(name="ops", url="https://ops.example/hook", secret=secrets[0],
                  extra_secrets=tuple(secrets[1:]))
    cfg = AlertServiceConfig(lifecycle=LifecycleConfig(group_wait_ms=1_000,
                                                       group_interval_ms=1_000))
    return AlertService.create(toy_park(), db, [ep], now_ms=clock, config=cfg,
                               ssrf=SsrfPolicy(resolver=lambda h, p: ["93.184.216.34"]),
                               transport=httpx.MockTransport(rx))


def test_delivery_queued_before_a_rotation_verifies_with_old_and_new_after_restart(tmp_path):
    clock = FakeClock(int(time.time() * 1000))
    db, rx = tmp_path / "alerts.sqlite", Receiver()
    # run 1: secret OLD only, the receiver is down: the notification stays pending
    first = service(db, clock, rx, [OLD])
    first.handle(DetectionEvent(kind=DetectionKind.SUPPLY_DROP, exchange_id="steam",
                                ts_ms=clock(), start_ms=clock() - 30_000, magnitude=1.0))
    clock.advance(2_000)
    first.tick()
    assert first.deliver_due() == 0 and first.outbox.counts()["pending"] == 1
    first.close()
    # run 2 (restart) during the rotation: NEW added, OLD still active; the receiver is back
    rx.up = True
    second = service(db, clock, rx, [NEW, OLD])
    clock.advance(60_000)  # past the retry backoff
    assert second.deliver_due() == 1
    [req] = rx.requests
    for secret in (OLD, NEW):  # receivers not yet switched and those already switched
        assert Webhook(secret).verify(req.content, dict(req.headers))["status"] == "firing"
    # run 3: rotation finished, OLD removed: the next message verifies with NEW only
    second.close()
    third = service(db, clock, rx, [NEW])
    third.handle(DetectionEvent(kind=DetectionKind.RESOLVED, exchange_id="steam",
                                ts_ms=clock(), resolves=DetectionKind.SUPPLY_DROP))
    clock.advance(2_000)
    third.tick()
    assert third.deliver_due() == 1
    last = rx.requests[-1]
    assert Webhook(NEW).verify(last.content, dict(last.headers))["status"] == "resolved"
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(last.content, dict(last.headers))
    third.close()
