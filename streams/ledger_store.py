"""The exchange ledger on disk: one SQLite file per park (docs/ledger.md).

Appending is one `BEGIN IMMEDIATE` transaction per batch (WAL, synchronous=FULL): a kill -9 leaves
either the whole batch or none of it, and a second writer waits instead of forking the chain (the
head is re-read inside the transaction). Content-idempotent (streams/core/ledger.py): feeding the
same closed windows again, after a replay or a restart, appends nothing.

Signing keys: a directory with `<enterprise>.key` (Ed25519 private key, PEM, PKCS8) signs for
that enterprise; `<enterprise>.pub` (PEM public key) verifies. `parkmon ledger keygen` writes both.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from parkmon.errors import ParkmonError
from streams.core.ledger import Candidate, LedgerChain, LedgerEntry, Verdict, sign, verify

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
  seq INTEGER PRIMARY KEY,
  exchange TEXT NOT NULL,
  window_start_ms INTEGER NOT NULL,
  revision INTEGER NOT NULL,
  hash TEXT NOT NULL,
  body TEXT NOT NULL
);
"""


class LedgerError(ParkmonError):
    pass


def load_keys(directory: str | Path | None, suffix: str) -> dict[str, Any]:
    """enterprise -> Ed25519 key from `<enterprise><suffix>` files (".key" private, ".pub" public)."""
    if not directory:
        return {}
    from cryptography.hazmat.primitives import serialization

    out: dict[str, Any] = {}
    d = Path(directory)
    if not d.is_dir():
        raise LedgerError(f"{d}: not a directory of ledger keys (<enterprise>{suffix} files)")
    for p in sorted(d.glob(f"*{suffix}")):
        data = p.read_bytes()
        try:
            key = (serialization.load_pem_private_key(data, password=None) if suffix == ".key"
                   else serialization.load_pem_public_key(data))
        except ValueError as exc:
            raise LedgerError(f"{p}: not a PEM Ed25519 key ({exc})") from None
        out[p.name[:-len(suffix)]] = key
    return out


def keygen(directory: str | Path, enterprise: str) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv = d / f"{enterprise}.key"
    pub = d / f"{enterprise}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    priv.chmod(0o600)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def exchange_signers(park: Any) -> dict[str, list[str]]:
    """exchange -> the enterprises of its supplier and consumer meters (who may sign)."""
    out: dict[str, list[str]] = {}
    for x in park.exchanges:
        ents: list[str] = []
        for mid in (*x.suppliers, *x.consumers):
            e = park.meter(mid).enterprise
            if e not in ents:
                ents.append(e)
        out[x.id] = ents
    return out


class LedgerStore:
    def __init__(self, path: str | Path, park: str, *, signing_keys: Mapping[str, Any] | None = None,
                 signers: Mapping[str, Iterable[str]] | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.park = park
        self.keys = dict(signing_keys or {})
        self.signers = {k: list(v) for k, v in (signers or {}).items()}
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=60,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # tables and the park in one transaction: a writer killed while creating the file leaves
        # either an empty database (reopened by the next writer) or a complete, empty ledger
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for stmt in filter(str.strip, SCHEMA.split(";")):
                self._db.execute(stmt)
            row = self._db.execute("SELECT value FROM meta WHERE key='park'").fetchone()
            if row is None:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('park', ?)", (park,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        if row is not None and row[0] != park:
            raise LedgerError(f"{self.path} is the ledger of park {row[0]!r}, not {park!r}")
        self.chain = LedgerChain(park)
        self.chain.load(self.entries())

    @classmethod
    def open_existing(cls, path: str | Path) -> LedgerStore:
        p = Path(path)
        if not p.is_file():
            raise LedgerError(f"{p}: no such ledger file")
        try:
            db = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
            row = db.execute("SELECT value FROM meta WHERE key='park'").fetchone()
            db.close()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{p}: not a parkmon ledger ({exc}); a ledger whose writer was "
                              "stopped while creating it is empty: run the writer again") from None
        if row is None:
            raise LedgerError(f"{p}: not a parkmon ledger (no park recorded)")
        return cls(p, row[0])

    def close(self) -> None:
        self._db.close()

    def entries(self) -> Iterator[LedgerEntry]:
        for (body,) in self._db.execute("SELECT body FROM entries ORDER BY rowid"):
            yield LedgerEntry.from_dict(json.loads(body))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM entries").fetchone()[0])

    def append(self, candidates: Iterable[Candidate]) -> int:
        """Append what is new or revised among `candidates`, in one transaction. Returns how many
        entries were added."""
        cands = list(candidates)
        if not cands:
            return 0
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            top = db.execute("SELECT max(seq) FROM entries").fetchone()[0]
            if (top if top is not None else -1) != self.chain.next_seq - 1:
                self.chain = LedgerChain(self.park)  # another writer appended: start from disk
                self.chain.load(self.entries())
            added = []
            for c in cands:
                e = self.chain.candidate(c)
                if e is None:
                    continue
                sigs = {ent: sign(self.keys[ent], e.hash)
                        for ent in self.signers.get(e.exchange, ()) if ent in self.keys}
                if sigs:
                    e = replace(e, signatures=sigs)
                db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                           (e.seq, e.exchange, e.window_start_ms, e.revision, e.hash,
                            json.dumps(e.to_dict(), sort_keys=True)))
                self.chain.append(e)
                added.append(e)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self.chain = LedgerChain(self.park)
            self.chain.load(self.entries())
            raise
        return len(added)

    def verify(self, public_keys: Mapping[str, Any] | None = None) -> Verdict:
        return verify(self.entries(), self.park, public_keys, self.signers or None)

    def export(self, out: str | Path, fmt: str) -> int:
        rows = [e.to_dict() for e in self.entries()]
        p = Path(out)
        if fmt == "json":
            p.write_text(json.dumps({"park": self.park, "format": "parkmon-ledger/1",
                                     "entries": rows}, indent=1) + "\n")
        elif fmt == "csv":
            cols = ["seq", "park", "exchange", "window_start_ms", "window_end_ms", "supplier_qty",
                    "consumer_qty", "gap", "unit", "revision", "corrects", "prev_hash", "hash",
                    "signatures"]
            with p.open("w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
                w.writeheader()
                for r in rows:
                    w.writerow({**r, "signatures": json.dumps(r["signatures"], sort_keys=True),
                                "corrects": r["corrects"] or ""})
        else:
            raise LedgerError(f"unknown export format {fmt!r}; expected csv or json")
        return len(rows)
