"""Edge checkpoints: one SQLite transaction per checkpoint (WAL, synchronous=FULL), rows in the
versioned JSON state format (parkmon/state.py, docs/state-format.md)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.edge.settings import CHECKPOINT_FILE, CHECKPOINT_FORMAT
from parkmon import state
from parkmon.errors import ParkmonError


@dataclass
class CheckpointParts:
    """What one checkpoint writes: the small state whole, the large state only where it changed."""

    meta: dict[str, Any]
    meters: dict[str, Any]  # window state per meter (changed meters)
    dedup: dict[str, list[int]]  # dedup keys per meter (changed meters)
    kpi_windows: dict[int, Any]  # indicator base windows (changed ones)
    kpi_windows_gone: set[int]  # expired base windows


class CheckpointStore:
    """The checkpoint in one SQLite database, each checkpoint one transaction (atomic, durable:
    WAL with synchronous=FULL). Rows: `meta` (small state, detectors), `meter_state` and `dedup`
    per meter, `kpi_window` per indicator base window; a checkpoint rewrites only the rows that
    changed since the previous one, so its cost follows the traffic, not the park's history."""

    def __init__(self, state_dir: str | Path) -> None:
        import sqlite3

        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CHECKPOINT_FILE
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        for table, key in (("meta", "k TEXT"), ("meter_state", "k TEXT"), ("dedup", "k TEXT"),
                           ("kpi_window", "k INTEGER")):
            self._db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({key} PRIMARY KEY, v BLOB)")
        self.kpi_windows_stored: set[int] = {
            int(r[0]) for r in self._db.execute("SELECT k FROM kpi_window")}

    @staticmethod
    def _blob(v: Any) -> bytes:
        return state.dumps(v, "edge-checkpoint-row")

    def save(self, parts: CheckpointParts) -> int:
        """Write one checkpoint atomically; returns the bytes written."""
        b = self._blob
        rows_meta = [(k, b(v)) for k, v in parts.meta.items()]
        rows_m = [(k, b(v)) for k, v in parts.meters.items()]
        rows_d = [(k, b(v)) for k, v in parts.dedup.items()]
        rows_k = [(int(k), b(v)) for k, v in parts.kpi_windows.items()]
        gone = sorted(parts.kpi_windows_gone & self.kpi_windows_stored)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows_meta)
            db.executemany("INSERT OR REPLACE INTO meter_state VALUES (?, ?)", rows_m)
            db.executemany("INSERT OR REPLACE INTO dedup VALUES (?, ?)", rows_d)
            db.executemany("INSERT OR REPLACE INTO kpi_window VALUES (?, ?)", rows_k)
            db.executemany("DELETE FROM kpi_window WHERE k = ?", [(w,) for w in gone])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.kpi_windows_stored.update(k for k, _ in rows_k)
        self.kpi_windows_stored.difference_update(gone)
        return sum(len(v) for rows in (rows_meta, rows_m, rows_d, rows_k) for _, v in rows)

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint as {meta..., "meters", "dedup", "kpi_windows"}, or None."""
        where = str(self.path)
        meta = {str(k): state.loads(v, "edge-checkpoint-row", f"{where} (meta {k})")
                for k, v in self._db.execute("SELECT k, v FROM meta")}
        if not meta:
            return None
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ParkmonError(f"{self.path}: not an edge checkpoint of format "
                               f"{CHECKPOINT_FORMAT}")
        rows = self._db.execute
        row = "edge-checkpoint-row"
        meta["meters"] = {str(k): state.loads(v, row, f"{where} (meter {k})")
                          for k, v in rows("SELECT k, v FROM meter_state")}
        meta["dedup"] = {str(k): state.loads(v, row, f"{where} (dedup {k})")
                         for k, v in rows("SELECT k, v FROM dedup")}
        meta["kpi_windows"] = {int(k): state.loads(v, row, f"{where} (KPI window {k})")
                               for k, v in rows("SELECT k, v FROM kpi_window")}
        return meta

    def close(self) -> None:
        self._db.close()


def detector_code_version() -> str:
    """Hash of the detector sources: a stored ParkMonitor is restored only by the same code."""
    import detect as pkg

    h = hashlib.sha256()
    for p in sorted(Path(pkg.__file__).parent.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class CheckpointStats:
    count: int = 0
    seq: int = 0
    restored_seq: int | None = None
    restored_detectors: bool = False
    last_wall_ms: int | None = None
    last_bytes: int = 0
    points_written: int = 0
    messages_acked: int = 0
    influx_failures: int = 0
    last_error: str | None = None
    learned_inflight: int | None = None
    stall_streak: list[int] = field(default_factory=list)

