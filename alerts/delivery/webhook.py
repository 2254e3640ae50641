"""Signed webhook delivery of one outbox message (Standard Webhooks 1.0, `standardwebhooks` library).

Each attempt:
1. checks the target with the SSRF policy (resolving the host now) and connects to the checked
   address (Host header and TLS SNI keep the original name), never following redirects;
2. signs `webhook-id.webhook-timestamp.body` with every active secret of the endpoint
   (`whsec_...`; several during a rotation: `webhook-signature: v1,<sig new> v1,<sig old>`, and a
   Standard Webhooks receiver accepts the message if any one verifies); the id is the outbox
   idempotency key and stays the same on every retry, the timestamp is the time of the attempt
   (receivers enforce a tolerance, so a message retried after an outage still verifies). Secrets
   are read at each attempt, never stored in the outbox: a message queued before a rotation is
   signed with the secrets configured when it is finally sent;
3. classifies the result:
   2xx                              -> delivered
   408, 429, 5xx, timeout, network  -> retry with exponential backoff and jitter; a Retry-After of a
                                       429/503 is honoured (capped at `max_backoff_ms`)
   3xx, other 4xx, refused target   -> dead: recorded in the outbox with the reason, not retried
   older than `give_up_after_ms`    -> dead ("gave up")

All I/O goes through one httpx transport, injectable for tests (httpx.MockTransport).
"""

from __future__ import annotations

import base64
import email.utils
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from standardwebhooks.webhooks import Webhook

from alerts.delivery.outbox import OutboxMessage
from alerts.delivery.ssrf import SsrfPolicy, SsrfRefused

USER_AGENT = "parkmon-alerts/0.1"


class PayloadFormat(StrEnum):
    PARKMON = "parkmon"
    ALERTMANAGER = "alertmanager"


#: signatures per message at most (the header stays small; a rotation needs two)
MAX_SECRETS = 5


#: shortest signing key accepted, in bytes after base64 decoding (128 bits; Standard Webhooks
#: suggests 24 to 64 random bytes)
MIN_SECRET_BYTES = 16


def _check_whsec(v: SecretStr) -> SecretStr:
    """A `whsec_<base64>` secret of at least MIN_SECRET_BYTES. Strict base64: the library itself
    skips invalid characters, so `whsec_%%secret%%` would silently become a short key. Error
    messages never contain the value."""
    raw = v.get_secret_value()
    if not raw.startswith("whsec_"):
        raise ValueError("webhook secret must be a Standard Webhooks secret 'whsec_<base64>'")
    body = raw.removeprefix("whsec_")
    try:
        key = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        Webhook(raw)
    except Exception as exc:
        raise ValueError(f"webhook secret is not valid base64 after 'whsec_' "
                         f"({type(exc).__name__})") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"webhook secret is too short: {len(key)} bytes after base64 decoding, "
                         f"at least {MIN_SECRET_BYTES} (e.g. 'whsec_' + base64 of 24 random "
                         "bytes: python -c \"import base64,os;print('whsec_'+base64.b64encode("
                         "os.urandom(24)).decode())\")")
    return v


class Endpoint(BaseModel):
    """One operator endpoint. Secrets come from the environment, never from a file.

    `secret` signs every message; `extra_secrets` also sign while a rotation is under way (the
    new secret is added, receivers switch, the old one is removed: see docs/operations.md)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str
    secret: SecretStr
    extra_secrets: tuple[SecretStr, ...] = Field(default=(), max_length=MAX_SECRETS - 1)
    format: PayloadFormat = PayloadFormat.PARKMON
    timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("secret")
    @classmethod
    def _whsec(cls, v: SecretStr) -> SecretStr:
        return _check_whsec(v)

    @field_validator("extra_secrets")
    @classmethod
    def _whsecs(cls, v: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        return tuple(_check_whsec(s) for s in v)

    @property
    def secrets(self) -> tuple[SecretStr, ...]:
        """Every active signing secret, the primary first."""
        return (self.secret, *self.extra_secrets)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    initial_backoff_ms: int = Field(default=1_000, gt=0)
    multiplier: float = Field(default=2.0, ge=1.0)
    max_backoff_ms: int = Field(default=300_000, gt=0)
    jitter: float = Field(default=0.5, ge=0.0, le=1.0)  # fraction of the delay that is random
    give_up_after_ms: int = Field(default=7 * 24 * 3_600_000, gt=0)

    def backoff_ms(self, attempts: int, rng: random.Random) -> int:
        """Delay before the next try after `attempts` failed tries (>= 1): exponential, capped,
        the last `jitter` fraction drawn uniformly so that senders do not retry in lockstep."""
        base = min(self.max_backoff_ms,
                   self.initial_backoff_ms * self.multiplier ** max(0, attempts - 1))
        fixed = base * (1.0 - self.jitter)
        return int(fixed + rng.uniform(0.0, base - fixed))


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    status: int | None
    error: str
    next_attempt_ms: int | None = None


def parse_retry_after(value: str | None, now_ms: int) -> int | None:
    """Retry-After as a delay in ms (delta-seconds or HTTP-date), None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int(when.timestamp() * 1000) - now_ms)


def sign_headers(secret: str | Sequence[str], msg_id: str, timestamp_s: int, body: bytes
                 ) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt, signed with one secret or with each of
    several (space-separated `v1,<sig>` entries, in the order given, repeats signed once)."""
    secrets = [secret] if isinstance(secret, str) else list(dict.fromkeys(secret))
    if not secrets:
        raise ValueError("no signing secret")
    ts = datetime.fromtimestamp(timestamp_s, tz=UTC)
    data = body.decode()
    signature = " ".join(Webhook(s).sign(msg_id=msg_id, timestamp=ts, data=data) for s in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp_s),
            "webhook-signature": signature}


class WebhookSender:
    def __init__(self, endpoint: Endpoint, *, policy: RetryPolicy | None = None,
                 ssrf: SsrfPolicy | None = None, transport: httpx.BaseTransport | None = None,
                 now_ms: Callable[[], int], rng: random.Random | None = None) -> None:
        self.endpoint = endpoint
        self.policy = policy or RetryPolicy()
        self.ssrf = ssrf or SsrfPolicy()
        self._now_ms = now_ms
        self._rng = rng or random.Random()
        self._client = httpx.Client(transport=transport, follow_redirects=False,
                                    timeout=endpoint.timeout_s, trust_env=False)

    def close(self) -> None:
        self._client.close()

    def attempt(self, msg: OutboxMessage) -> DeliveryResult:
        now = self._now_ms()
        if now - msg.created_at_ms > self.policy.give_up_after_ms:
            return DeliveryResult(Outcome.DEAD, msg.last_status,
                                  f"gave up after {msg.attempts} attempts: {msg.last_error}")
        try:
            target = self.ssrf.check(self.endpoint.url)
        except SsrfRefused as exc:
            return DeliveryResult(Outcome.DEAD, None, str(exc))
        url = httpx.URL(self.endpoint.url)
        host_header = url.netloc.decode("ascii")
        extensions: dict[str, object] = {}
        if target.address != target.host:  # connect to the address we checked, not a new lookup
            url = url.copy_with(host=target.address)
            if target.scheme == "https":
                extensions["sni_hostname"] = target.host
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "host": host_header,
                   **sign_headers([s.get_secret_value() for s in self.endpoint.secrets],
                                  msg.webhook_id, now // 1000, msg.body)}
        try:
            request = self._client.build_request("POST", url, content=msg.body, headers=headers,
                                                 extensions=extensions)
            response = self._client.send(request)
            response.close()
        except httpx.TimeoutException as exc:
            return self._retry(msg, None, f"timeout: {type(exc).__name__}", now, None)
        except httpx.TransportError as exc:
            return self._retry(msg, None, f"connection error: {type(exc).__name__}: {exc}", now, None)
        code = response.status_code
        if 200 <= code < 300:
            return DeliveryResult(Outcome.DELIVERED, code, "")
        if code in (408, 429) or code >= 500:
            retry_after = None
            if code in (429, 503):
                retry_after = parse_retry_after(response.headers.get("retry-after"), now)
            return self._retry(msg, code, f"HTTP {code}", now, retry_after)
        if 300 <= code < 400:
            return DeliveryResult(Outcome.DEAD, code,
                                  f"HTTP {code} redirect to {response.headers.get('location')!r} "
                                  "not followed; configure the final URL")
        return DeliveryResult(Outcome.DEAD, code, f"HTTP {code} rejected by the receiver")

    def _retry(self, msg: OutboxMessage, status: int | None, error: str, now: int,
               retry_after_ms: int | None) -> DeliveryResult:
        delay = self.policy.backoff_ms(msg.attempts + 1, self._rng)
        if retry_after_ms is not None:
            delay = min(max(retry_after_ms, 0), self.policy.max_backoff_ms)
        return DeliveryResult(Outcome.RETRY, status, error, now + delay)
