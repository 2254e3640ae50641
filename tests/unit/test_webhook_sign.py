"""Webhook attempts through a fake httpx transport: Standard Webhooks signatures, retry classes."""

from __future__ import annotations

import base64
import random

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from alerts.delivery.outbox import OutboxMessage
from alerts.delivery.ssrf import SsrfPolicy
from alerts.delivery.webhook import (
    Endpoint,
    Outcome,
    RetryPolicy,
    WebhookSender,
    parse_retry_after,
)
from tests.support.alerts import FakeClock

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"parkmon-test-secret-0123456789ab").decode()
PUBLIC = "93.184.216.34"


def msg(attempts: int = 0, created: int | None = None, clock: FakeClock | None = None) -> OutboxMessage:
    now = clock() if clock else 0
    return OutboxMessage(seq=1, endpoint="ops", webhook_id="msg_abc123", notification_key="g#1",
                         body=b'{"hello":"w\xc3\xb6rld"}', created_at_ms=created if created is not None else now,
                         status="pending", attempts=attempts, next_attempt_ms=now, last_status=None,
                         last_error=None, delivered_at_ms=None)


class Receiver:
    """A fake transport answering from a script of responses (or raising), recording requests."""

    def __init__(self, *answers: int | Exception | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        a = self.answers.pop(0) if self.answers else 200
        if isinstance(a, Exception):
            raise a
        if isinstance(a, httpx.Response):
            return a
        return httpx.Response(a)


def sender(rx: Receiver, clock: FakeClock, url: str = "https://hooks.example.com/parkmon",
           **policy) -> WebhookSender:
    ep = Endpoint(name="ops", url=url, secret=SECRET)
    ssrf = SsrfPolicy(resolver=lambda host, port: [PUBLIC])
    return WebhookSender(ep, policy=RetryPolicy(**policy), ssrf=ssrf,
                         transport=httpx.MockTransport(rx), now_ms=clock, rng=random.Random(7))


def verify(req: httpx.Request) -> object:
    return Webhook(SECRET).verify(req.content, dict(req.headers))


def test_signature_verifies_with_the_standardwebhooks_library() -> None:
    import time

    clock = FakeClock(int(time.time() * 1000))
    rx = Receiver(200)
    result = sender(rx, clock).attempt(msg(clock=clock))
    assert result.outcome == Outcome.DELIVERED and result.status == 200
    req = rx.requests[0]
    assert verify(req) == {"hello": "wörld"}
    assert req.headers["webhook-id"] == "msg_abc123"
    assert req.headers["webhook-timestamp"] == str(clock() // 1000)
    assert req.headers["content-type"] == "application/json"


def test_tampered_body_or_other_secret_fails_verification() -> None:
    import time

    clock = FakeClock(int(time.time() * 1000))
    rx = Receiver(200)
    sender(rx, clock).attempt(msg(clock=clock))
    req = rx.requests[0]
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(req.content.replace(b"hello", b"hellO"), dict(req.headers))
    other = "whsec_" + base64.b64encode(b"another-secret-another-secret-00").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(req.content, dict(req.headers))


def test_retry_keeps_the_id_and_re_signs_with_a_fresh_timestamp() -> None:
    import time

    clock = FakeClock(int(time.time() * 1000) - 200_000)
    rx = Receiver(503, 200)
    s = sender(rx, clock)
    first = s.attempt(msg(clock=clock))
    assert first.outcome == Outcome.RETRY
    clock.advance(180_000)
    assert s.attempt(msg(attempts=1, clock=clock)).outcome == Outcome.DELIVERED
    a, b = rx.requests
    assert a.headers["webhook-id"] == b.headers["webhook-id"]
    assert int(b.headers["webhook-timestamp"]) - int(a.headers["webhook-timestamp"]) == 180
    verify(b)  # the retry verifies although the first attempt is minutes old


def test_connects_to_the_checked_address_with_original_host_and_sni() -> None:
    clock = FakeClock()
    rx = Receiver(200)
    sender(rx, clock).attempt(msg(clock=clock))
    req = rx.requests[0]
    assert req.url.host == PUBLIC
    assert req.headers["host"] == "hooks.example.com"
    assert req.extensions["sni_hostname"] == "hooks.example.com"


@pytest.mark.parametrize("answer, outcome", [
    (200, Outcome.DELIVERED), (204, Outcome.DELIVERED),
    (500, Outcome.RETRY), (502, Outcome.RETRY), (503, Outcome.RETRY), (408, Outcome.RETRY),
    (429, Outcome.RETRY),
    (400, Outcome.DEAD), (401, Outcome.DEAD), (404, Outcome.DEAD), (410, Outcome.DEAD),
    (httpx.ConnectError("refused"), Outcome.RETRY),
    (httpx.ReadTimeout("slow"), Outcome.RETRY),
    (httpx.RemoteProtocolError("reset"), Outcome.RETRY),
])
def test_outcome_classes(answer, outcome) -> None:
    clock = FakeClock()
    result = sender(Receiver(answer), clock).attempt(msg(clock=clock))
    assert result.outcome == outcome
    if outcome == Outcome.RETRY:
        assert result.next_attempt_ms is not None and result.next_attempt_ms > clock()


def test_redirect_is_not_followed() -> None:
    clock = FakeClock()
    rx = Receiver(httpx.Response(302, headers={"location": "http://169.254.169.254/"}))
    result = sender(rx, clock).attempt(msg(clock=clock))
    assert result.outcome == Outcome.DEAD and "not followed" in result.error
    assert len(rx.requests) == 1


def test_retry_after_is_honoured_for_429() -> None:
    clock = FakeClock()
    rx = Receiver(httpx.Response(429, headers={"retry-after": "120"}))
    result = sender(rx, clock).attempt(msg(clock=clock))
    assert result.outcome == Outcome.RETRY and result.next_attempt_ms == clock() + 120_000


def test_retry_after_http_date() -> None:
    now = 1_767_225_600_000  # Thu, 01 Jan 2026 00:00:00 GMT
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30_000
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    p = RetryPolicy(initial_backoff_ms=1000, multiplier=2, max_backoff_ms=60_000, jitter=0.5)
    rng = random.Random(1)
    for attempt in range(1, 12):
        base = min(60_000, 1000 * 2 ** (attempt - 1))
        delays = {p.backoff_ms(attempt, rng) for _ in range(50)}
        assert all(base / 2 <= d <= base for d in delays)
        assert len(delays) > 1  # jittered, not lockstep


def test_refused_target_is_dead_without_a_request() -> None:
    clock = FakeClock()
    rx = Receiver(200)
    ep = Endpoint(name="ops", url="http://169.254.169.254/latest", secret=SECRET)
    s = WebhookSender(ep, transport=httpx.MockTransport(rx), now_ms=clock)
    result = s.attempt(msg(clock=clock))
    assert result.outcome == Outcome.DEAD and "metadata" in result.error and rx.requests == []


def test_gives_up_after_the_configured_age() -> None:
    clock = FakeClock()
    rx = Receiver(200)
    s = sender(rx, clock, give_up_after_ms=3_600_000)
    old = msg(attempts=30, created=clock() - 3_600_001, clock=clock)
    assert s.attempt(old).outcome == Outcome.DEAD and rx.requests == []


@pytest.mark.parametrize("secret", ["plain-secret", "whsec_", "whsec_!!!notbase64",
                                    "whsec_%%" + SECRET.removeprefix("whsec_"),  # lenient b64
                                    "whsec_" + base64.b64encode(b"15 bytes only!!").decode()])
def test_endpoint_requires_a_standard_webhooks_secret(secret: str) -> None:
    with pytest.raises(ValidationError):
        Endpoint(name="ops", url="https://hooks.example.com/", secret=secret)
