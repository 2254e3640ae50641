"""Secret rotation with the real `parkmon alerts` process and a real HTTP receiver.

A notification is queued while the receiver is down under secret OLD; the service is restarted
with `PARKMON_ALERTS_SECRET_OPS="NEW OLD"` (rotation under way) and the receiver comes back: the
delivery verifies with OLD and with NEW (standardwebhooks). After a restart with NEW alone the next
delivery verifies with NEW and no longer with OLD. Nothing is lost across the restarts.
"""

from __future__ import annotations

import base64
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.e2e.test_alert_delivery import Harness, drop, resolved, wait_for

pytestmark = pytest.mark.e2e

OLD = "whsec_" + base64.b64encode(b"e2e-rotation-OLD-secret-01234567").decode()
NEW = "whsec_" + base64.b64encode(b"e2e-rotation-NEW-secret-76543210").decode()


class RotatingHarness(Harness):
    secrets = OLD

    def env(self) -> dict[str, str]:
        return {**super().env(), "PARKMON_ALERTS_SECRET_OPS": self.secrets}

    def stop_service(self) -> None:
        p = self.procs[-1]
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0


@pytest.fixture()
def rh(tmp_path: Path) -> Iterator[RotatingHarness]:
    harness = RotatingHarness(tmp_path)
    yield harness
    harness.close()


def test_rotation_across_restarts_keeps_every_delivery_verifiable(rh: RotatingHarness) -> None:
    rh.start_service()
    rh.emit(drop("steam"))
    wait_for(lambda: len(rh.outbox()) == 1 and rh.outbox()[0]["attempts"] >= 1, 30,
             "a notification retried while the receiver is down")
    rh.stop_service()
    assert rh.outbox()[0]["status"] == "pending"

    rh.secrets = f"{NEW} {OLD}"  # step 1 of the rotation: add the new secret
    rh.start_receiver()
    rh.start_service()
    wait_for(rh.all_delivered, 60, "delivery after the restart")
    [first] = rh.received_records()
    assert len(first["headers"]["webhook-signature"].split(" ")) == 2
    for secret in (OLD, NEW):
        assert Webhook(secret).verify(first["body"], first["headers"])["status"] == "firing"
    rh.stop_service()

    rh.secrets = NEW  # step 3: every receiver has switched, the old secret is removed
    rh.start_service()
    rh.emit(resolved("steam"))
    wait_for(lambda: len(rh.outbox()) == 2 and rh.all_delivered(), 60, "the resolve delivered")
    first_again, second = rh.received_records()
    assert first_again == first  # nothing re-sent
    assert Webhook(NEW).verify(second["body"], second["headers"])["status"] == "resolved"
    with pytest.raises(WebhookVerificationError):
        Webhook(OLD).verify(second["body"], second["headers"])
