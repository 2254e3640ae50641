"""The delivery loop: take the head message of each endpoint from the outbox and try it.

`deliver_due(now_ms)` is one synchronous pass (tests, the one-process demo); `DeliveryThread` runs
passes in the background for `parkmon alerts`, one thread for all endpoints. Order per endpoint is
strict: a message is tried only when every earlier message of that endpoint is delivered or dead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from alerts.delivery.outbox import Outbox
from alerts.delivery.webhook import Outcome, WebhookSender

log = logging.getLogger("parkmon.alerts.delivery")


class DeliveryWorker:
    def __init__(self, outbox: Outbox, senders: dict[str, WebhookSender],
                 now_ms: Callable[[], int],
                 on_result: Callable[[str, Outcome], None] | None = None) -> None:
        self.outbox = outbox
        self.senders = senders
        self._now_ms = now_ms
        self.on_result = on_result

    def deliver_due(self, max_per_endpoint: int = 1000) -> int:
        """Try every endpoint's due head messages; returns how many were delivered."""
        delivered = 0
        for name in self.outbox.endpoints_with_pending():
            sender = self.senders.get(name)
            if sender is None:
                continue  # endpoint removed from the config: its messages wait, visible as pending
            for _ in range(max_per_endpoint):
                msg = self.outbox.head(name)
                if msg is None or msg.next_attempt_ms > self._now_ms():
                    break
                result = sender.attempt(msg)
                if result.outcome == Outcome.DELIVERED:
                    self.outbox.mark_delivered(msg.seq, result.status)
                    delivered += 1
                elif result.outcome == Outcome.DEAD:
                    log.error("webhook %s to %s dead: %s", msg.webhook_id, name, result.error)
                    self.outbox.mark_dead(msg.seq, result.status, result.error)
                else:
                    assert result.next_attempt_ms is not None
                    log.warning("webhook %s to %s failed (%s), retry in %d ms", msg.webhook_id,
                                name, result.error, result.next_attempt_ms - self._now_ms())
                    self.outbox.mark_retry(msg.seq, result.next_attempt_ms, result.status,
                                           result.error)
                if self.on_result is not None:
                    self.on_result(name, result.outcome)
                if result.outcome == Outcome.RETRY:
                    break
        return delivered

    def next_due_ms(self) -> int | None:
        due = [m.next_attempt_ms for name in self.outbox.endpoints_with_pending()
               if name in self.senders and (m := self.outbox.head(name)) is not None]
        return min(due) if due else None


class DeliveryThread(threading.Thread):
    """Background delivery for the service; `wake()` after enqueuing, `stop()` to end."""

    def __init__(self, make_worker: Callable[[], DeliveryWorker], now_ms: Callable[[], int],
                 idle_s: float = 1.0) -> None:
        super().__init__(name="parkmon-alerts-delivery", daemon=True)
        self._make_worker = make_worker
        self._now_ms = now_ms
        self._idle_s = idle_s
        self._wake = threading.Event()
        self._stop_evt = threading.Event()
        self.error: BaseException | None = None

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop_evt.set()
        self._wake.set()

    def run(self) -> None:
        worker = self._make_worker()  # its own SQLite connection in this thread
        try:
            while not self._stop_evt.is_set():
                try:
                    worker.deliver_due()
                except Exception as exc:  # never let the delivery loop die silently
                    log.exception("delivery pass failed: %s", exc)
                due = worker.next_due_ms()
                wait = self._idle_s if due is None else max(0.0, min(self._idle_s,
                                                                     (due - self._now_ms()) / 1000))
                self._wake.wait(wait)
                self._wake.clear()
        finally:
            worker.outbox.close()
            for s in worker.senders.values():
                s.close()
