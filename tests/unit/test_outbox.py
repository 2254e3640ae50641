"""The durable outbox: atomic commits, idempotent enqueue, per-endpoint order, dead letters."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from alerts.delivery.outbox import DEAD, DELIVERED, PENDING, NewMessage, Outbox, webhook_id
from tests.support.alerts import FakeClock

pytestmark = pytest.mark.unit


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture()
def box(tmp_path: Path, clock: FakeClock) -> Outbox:
    return Outbox(tmp_path / "outbox.sqlite", clock)


def msgs(*keys: str, endpoint: str = "ops") -> list[NewMessage]:
    return [NewMessage(endpoint, k, f'{{"k":"{k}"}}'.encode()) for k in keys]


def test_wal_mode_and_reopen_keeps_everything(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path, clock)
    box.commit(state={"v": 1}, messages=msgs("g#1", "g#2"), event_id="e1")
    box.close()
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = Outbox(path, clock)
    assert again.load_state() == {"v": 1}
    assert again.seen_event("e1") and not again.seen_event("e2")
    assert [m.notification_key for m in again.messages()] == ["g#1", "g#2"]


def test_commit_is_atomic(box: Outbox) -> None:
    bad = NewMessage("ops", "g#2", None)  # type: ignore[arg-type]  # NOT NULL body -> fails
    with pytest.raises(sqlite3.IntegrityError):
        box.commit(state={"v": 2}, messages=[*msgs("g#1"), bad], event_id="e1")
    assert box.messages() == [] and box.load_state() is None and not box.seen_event("e1")


def test_same_notification_is_enqueued_once_per_endpoint(box: Outbox) -> None:
    first = box.commit(state=None, messages=msgs("g#1") + msgs("g#1", endpoint="chat"))
    again = box.commit(state=None, messages=msgs("g#1"))
    assert len(first) == 2 and again == []
    assert first[0] == webhook_id("ops", "g#1") != first[1]
    assert first[0].startswith("msg_")


def test_head_is_oldest_pending_per_endpoint_and_blocks_until_done(box: Outbox, clock) -> None:
    box.commit(state=None, messages=msgs("a#1", "a#2") + msgs("b#1", endpoint="chat"))
    head = box.head("ops")
    assert head is not None and head.notification_key == "a#1"
    box.mark_retry(head.seq, clock() + 5000, 503, "HTTP 503")
    retried = box.head("ops")
    assert retried is not None and retried.notification_key == "a#1"  # order: no overtaking
    assert retried.attempts == 1 and retried.next_attempt_ms == clock() + 5000
    box.mark_delivered(retried.seq, 200)
    nxt = box.head("ops")
    assert nxt is not None and nxt.notification_key == "a#2"
    box.mark_dead(nxt.seq, 400, "HTTP 400 rejected")
    assert box.head("ops") is None
    chat = box.head("chat")
    assert chat is not None and chat.notification_key == "b#1"
    assert box.counts() == {PENDING: 1, DELIVERED: 1, DEAD: 1}
    assert [(m.notification_key, m.last_status, m.last_error) for m in box.dead()] == [
        ("a#2", 400, "HTTP 400 rejected")]


def test_requeue_dead(box: Outbox) -> None:
    box.commit(state=None, messages=msgs("a#1"))
    m = box.head("ops")
    assert m is not None
    box.mark_dead(m.seq, 404, "HTTP 404")
    assert box.requeue_dead("ops") == 1
    again = box.head("ops")
    assert again is not None and again.status == PENDING and again.webhook_id == m.webhook_id


def test_intake_and_delivery_threads_share_the_file(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "o.sqlite"
    intake = Outbox(path, clock)
    n = 200
    delivered: list[str] = []

    def deliver() -> None:
        box = Outbox(path, clock)
        while len(delivered) < n:
            m = box.head("ops")
            if m is None:
                continue
            box.mark_delivered(m.seq, 200)
            delivered.append(m.notification_key)
        box.close()

    t = threading.Thread(target=deliver)
    t.start()
    for i in range(n):
        intake.commit(state={"i": i}, messages=msgs(f"g#{i}"), event_id=f"e{i}")
    t.join(timeout=60)
    assert delivered == [f"g#{i}" for i in range(n)]
    assert intake.counts()[DELIVERED] == n
