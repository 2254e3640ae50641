"""Durable outbox in SQLite (WAL): nothing decided is lost, nothing is sent twice by us.

One database file holds, in the same transactions:
- `state`     the lifecycle snapshot (JSON) and other small key/values,
- `events`    ids of detection events already applied (replays from Kafka or a file are no-ops),
- `outbox`    one row per (endpoint, notification) with its webhook-id, body and delivery status.

`commit(...)` writes the new lifecycle state, the applied event id and the new messages in ONE
transaction: either the state change and its notifications are both durable, or neither is. The
webhook-id of a message is derived from the endpoint and the notification key, so re-enqueuing the
same notification is ignored (UNIQUE), and a receiver deduplicates retries by that id.

Per endpoint the messages go out in enqueue order: `head(endpoint)` is the oldest pending message,
and nothing behind it is sent before it is delivered or dead (head-of-line order). A `dead`
message (4xx other than 408/429, or a refused target) is kept with its error, visible through
`dead()` / `counts()`, and can be re-queued with `requeue_dead()`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, applied_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    webhook_id TEXT NOT NULL UNIQUE,
    notification_key TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_status INTEGER,
    last_error TEXT,
    delivered_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (endpoint, status, seq);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
"""


def webhook_id(endpoint: str, notification_key: str) -> str:
    """The idempotency key of one delivery: stable for (endpoint, notification)."""
    return "msg_" + hashlib.sha256(f"{endpoint}\x00{notification_key}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class NewMessage:
    endpoint: str
    notification_key: str
    body: bytes


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    endpoint: str
    webhook_id: str
    notification_key: str
    body: bytes
    created_at_ms: int
    status: str
    attempts: int
    next_attempt_ms: int
    last_status: int | None
    last_error: str | None
    delivered_at_ms: int | None


_COLUMNS = ("seq, endpoint, webhook_id, notification_key, body, created_at_ms, status, attempts, "
            "next_attempt_ms, last_status, last_error, delivered_at_ms")


def _row(r: tuple[Any, ...]) -> OutboxMessage:
    return OutboxMessage(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7], r[8], r[9], r[10], r[11])


class Outbox:
    """Thread-safe handle on the outbox database (one connection per thread)."""

    def __init__(self, path: str | Path, now_ms: Callable[[], int]) -> None:
        self.path = str(path)
        self._now_ms = now_ms
        self._local = threading.local()
        self._con().executescript(_SCHEMA)  # idempotent DDL; executescript commits by itself

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                  check_same_thread=True)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")  # a committed decision survives a power cut
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
        return con

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- intake side ----------------------------------------------------------------------------
    def load_state(self, key: str = "lifecycle") -> dict[str, Any] | None:
        row = self._con().execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def seen_event(self, event_id: str) -> bool:
        row = self._con().execute("SELECT 1 FROM events WHERE event_id=?", (event_id,)).fetchone()
        return row is not None

    def commit(self, *, state: dict[str, Any] | None, messages: list[NewMessage],
               event_id: str | None = None, state_key: str = "lifecycle",
               done_commands: list[int] | None = None,
               event_ids: Sequence[str] = ()) -> list[str]:
        """Atomically: store the state, remember the event(s), enqueue the messages, drop the
        operator commands that were applied.

        Returns the webhook-ids that were newly enqueued (an already-present id is skipped).
        """
        now = self._now_ms()
        ids: list[str] = []
        with self._tx() as con:
            ids = [*([event_id] if event_id is not None else []), *event_ids]
            con.executemany("INSERT OR IGNORE INTO events (event_id, applied_at_ms) VALUES (?, ?)",
                            [(i, now) for i in ids])
            for cid in done_commands or ():
                con.execute("DELETE FROM commands WHERE id=?", (cid,))
            if state is not None:
                con.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                            (state_key, json.dumps(state, separators=(",", ":"))))
            for m in messages:
                wid = webhook_id(m.endpoint, m.notification_key)
                cur = con.execute(
                    "INSERT INTO outbox (endpoint, webhook_id, notification_key, body, "
                    "created_at_ms, next_attempt_ms) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (webhook_id) DO NOTHING",
                    (m.endpoint, wid, m.notification_key, m.body, now, now))
                if cur.rowcount:
                    ids.append(wid)
        return ids

    def add_command(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue an operator command (e.g. a silence) for the running service to apply."""
        with self._tx() as con:
            cur = con.execute("INSERT INTO commands (kind, payload, created_at_ms) VALUES (?, ?, ?)",
                              (kind, json.dumps(payload), self._now_ms()))
            return int(cur.lastrowid or 0)

    def commands(self) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self._con().execute("SELECT id, kind, payload FROM commands ORDER BY id").fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def prune_events(self, older_than_ms: int) -> int:
        with self._tx() as con:
            return con.execute("DELETE FROM events WHERE applied_at_ms < ?", (older_than_ms,)).rowcount

    # -- delivery side --------------------------------------------------------------------------
    def head(self, endpoint: str) -> OutboxMessage | None:
        """The oldest pending message of `endpoint` (due or not)."""
        r = self._con().execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE endpoint=? AND status='pending' "
            "ORDER BY seq LIMIT 1", (endpoint,)).fetchone()
        return None if r is None else _row(r)

    def endpoints_with_pending(self) -> list[str]:
        rows = self._con().execute(
            "SELECT DISTINCT endpoint FROM outbox WHERE status='pending'").fetchall()
        return sorted(r[0] for r in rows)

    def mark_delivered(self, seq: int, status: int | None) -> None:
        with self._tx() as con:
            con.execute("UPDATE outbox SET status='delivered', attempts=attempts+1, last_status=?, "
                        "last_error=NULL, delivered_at_ms=? WHERE seq=?",
                        (status, self._now_ms(), seq))

    def mark_retry(self, seq: int, next_attempt_ms: int, status: int | None, error: str) -> None:
        with self._tx() as con:
            con.execute("UPDATE outbox SET attempts=attempts+1, next_attempt_ms=?, last_status=?, "
                        "last_error=? WHERE seq=?", (next_attempt_ms, status, error[:500], seq))

    def mark_dead(self, seq: int, status: int | None, error: str) -> None:
        with self._tx() as con:
            con.execute("UPDATE outbox SET status='dead', attempts=attempts+1, last_status=?, "
                        "last_error=? WHERE seq=?", (status, error[:500], seq))

    def requeue_dead(self, endpoint: str | None = None) -> int:
        """Put dead messages back in the queue (after the receiver was fixed)."""
        q = "UPDATE outbox SET status='pending', next_attempt_ms=? WHERE status='dead'"
        args: tuple[Any, ...] = (self._now_ms(),)
        if endpoint is not None:
            q += " AND endpoint=?"
            args += (endpoint,)
        with self._tx() as con:
            return con.execute(q, args).rowcount

    # -- inspection -----------------------------------------------------------------------------
    def messages(self, endpoint: str | None = None, status: str | None = None) -> list[OutboxMessage]:
        q = f"SELECT {_COLUMNS} FROM outbox WHERE 1=1"
        args: list[Any] = []
        if endpoint is not None:
            q += " AND endpoint=?"
            args.append(endpoint)
        if status is not None:
            q += " AND status=?"
            args.append(status)
        return [_row(r) for r in self._con().execute(q + " ORDER BY seq", args).fetchall()]

    def dead(self) -> list[OutboxMessage]:
        return self.messages(status=DEAD)

    def counts(self) -> dict[str, int]:
        rows = self._con().execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
        out = {PENDING: 0, DELIVERED: 0, DEAD: 0}
        out.update({r[0]: r[1] for r in rows})
        return out
