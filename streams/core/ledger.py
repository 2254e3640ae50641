"""Tamper-evident exchange ledger: one entry per closed window of every exchange (pure, no I/O).

An entry records what the two sides of an exchange metered over one base window: the suppliers'
quantity, the consumers' quantity, their mass-balance gap (`imbalance` of docs/kpis.md: suppliers
x (1 - loss) - consumers), the canonical unit, and a revision. Entries form one hash chain per
park: each holds the hash of the previous one, so an edited, deleted, inserted or reordered entry
breaks the chain at a place `verify` names.

Canonical encoding (docs/ledger.md): the entry's fields without `hash` and `signatures` as JSON,
keys sorted, no whitespace, UTF-8, numbers written as strings of Python's shortest round-trip
`repr(float)` (so every reader hashes the same bytes); `hash = sha256(encoding).hexdigest()`.

Idempotent by content: `LedgerChain.candidate(...)` returns None for a window that already has an
entry with the same quantities (a replay, a restart, a redelivery: a replay from the start brings
a window's first result again after its revision, and must not append it a second time), a new
entry with `revision = latest + 1` and `corrects = latest hash` when the quantities are new (a
late reading revised the window), and revision 0 for a window not yet in the chain. (Revisions
come from more data arriving, so a window never legitimately returns to an earlier content.)

Signatures (optional): an enterprise signs the entry hash with its Ed25519 key; `verify` checks
the signatures for which it is given public keys.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

GENESIS = "0" * 64
FORMAT = "parkmon-ledger/1"
CONTENT_FIELDS = ("supplier_qty", "consumer_qty", "gap", "unit")


def _num(x: float) -> str:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"ledger quantities must be finite, got {x!r}")
    return repr(x + 0.0)  # -0.0 -> 0.0


@dataclass(frozen=True)
class LedgerEntry:
    park: str
    seq: int
    exchange: str
    window_start_ms: int
    window_end_ms: int
    supplier_qty: float
    consumer_qty: float
    gap: float
    unit: str
    revision: int
    corrects: str | None
    prev_hash: str
    hash: str = ""
    signatures: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The hashed fields, numbers as canonical strings."""
        return {"format": FORMAT, "park": self.park, "seq": self.seq, "exchange": self.exchange,
                "window_start_ms": self.window_start_ms, "window_end_ms": self.window_end_ms,
                "supplier_qty": _num(self.supplier_qty), "consumer_qty": _num(self.consumer_qty),
                "gap": _num(self.gap), "unit": self.unit, "revision": self.revision,
                "corrects": self.corrects, "prev_hash": self.prev_hash}

    def canonical(self) -> bytes:
        return json.dumps(self.body(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()

    def computed_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def sealed(self) -> LedgerEntry:
        return replace(self, hash=self.computed_hash())

    def content(self) -> tuple[str, str, str, str]:
        return (_num(self.supplier_qty), _num(self.consumer_qty), _num(self.gap), self.unit)

    def to_dict(self) -> dict[str, Any]:
        d = self.body()
        d["hash"] = self.hash
        d["signatures"] = dict(sorted(self.signatures.items()))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LedgerEntry:
        return cls(park=str(d["park"]), seq=int(d["seq"]), exchange=str(d["exchange"]),
                   window_start_ms=int(d["window_start_ms"]),
                   window_end_ms=int(d["window_end_ms"]),
                   supplier_qty=float(d["supplier_qty"]), consumer_qty=float(d["consumer_qty"]),
                   gap=float(d["gap"]), unit=str(d["unit"]), revision=int(d["revision"]),
                   corrects=d.get("corrects"), prev_hash=str(d["prev_hash"]),
                   hash=str(d.get("hash", "")), signatures=dict(d.get("signatures") or {}))


@dataclass(frozen=True)
class Candidate:
    """A closed window of an exchange, as the KPI core computed it."""

    exchange: str
    window_start_ms: int
    window_end_ms: int
    supplier_qty: float
    consumer_qty: float
    gap: float
    unit: str

    def content(self) -> tuple[str, str, str, str]:
        return (_num(self.supplier_qty), _num(self.consumer_qty), _num(self.gap), self.unit)


def candidates_from_kpis(results: Iterable[Any], units: Mapping[str, str],
                         base_view: str = "1m") -> list[Candidate]:
    """Ledger candidates from KPI results (streams.core.engine.KpiResult): the exchange-scope
    results of the base window, in (window start, exchange) order. `units`: exchange -> unit."""
    out = []
    for k in results:
        if k.scope != "exchange" or k.view != base_view:
            continue
        v = k.values
        if v.get("outflow") is None or v.get("inflow") is None:
            continue
        out.append(Candidate(k.entity, k.window_start_ms, k.window_end_ms, float(v["outflow"]),
                             float(v["inflow"]), float(v.get("imbalance") or 0.0),
                             units.get(k.entity, "")))
    out.sort(key=lambda c: (c.window_start_ms, c.exchange, c.window_end_ms))
    return out


class LedgerChain:
    """The head of a park's chain and the latest entry per (exchange, window): what appending
    needs. Fed with the stored entries on start (`load`), then with every new one."""

    def __init__(self, park: str) -> None:
        self.park = park
        self.head = GENESIS
        self.next_seq = 0
        self.latest: dict[tuple[str, int], LedgerEntry] = {}
        self.seen: dict[tuple[str, int], set[tuple[str, str, str, str]]] = {}

    def load(self, entries: Iterable[LedgerEntry]) -> None:
        for e in entries:
            self._advance(e)

    def _advance(self, e: LedgerEntry) -> None:
        self.head = e.hash
        self.next_seq = e.seq + 1
        self.latest[(e.exchange, e.window_start_ms)] = e
        self.seen.setdefault((e.exchange, e.window_start_ms), set()).add(e.content())

    def candidate(self, c: Candidate) -> LedgerEntry | None:
        """The entry `c` makes (sealed, unsigned), or None when the chain has it already."""
        key = (c.exchange, c.window_start_ms)
        if c.content() in self.seen.get(key, ()):
            return None
        prev = self.latest.get(key)
        return LedgerEntry(
            park=self.park, seq=self.next_seq, exchange=c.exchange,
            window_start_ms=c.window_start_ms, window_end_ms=c.window_end_ms,
            supplier_qty=c.supplier_qty, consumer_qty=c.consumer_qty, gap=c.gap, unit=c.unit,
            revision=0 if prev is None else prev.revision + 1,
            corrects=None if prev is None else prev.hash, prev_hash=self.head).sealed()

    def append(self, e: LedgerEntry) -> None:
        """Record `e` (from `candidate`, possibly signed) as the new head."""
        if e.prev_hash != self.head or e.seq != self.next_seq:
            raise ValueError(f"entry {e.seq} does not continue the chain at {self.next_seq}")
        self._advance(e)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str = ""
    signatures_checked: int = 0
    position: int | None = None  # 0-based place in stored order of the first bad entry

    def message(self) -> str:
        if self.ok:
            return (f"ledger OK: {self.entries} entries, chain intact, "
                    f"{self.signatures_checked} signature(s) verified")
        return (f"ledger BROKEN at position {self.position} (entry seq {self.first_bad_seq}): "
                f"{self.problem}")


def verify(entries: Iterable[LedgerEntry], park: str | None = None,
           public_keys: Mapping[str, Any] | None = None,
           signers: Mapping[str, Iterable[str]] | None = None) -> Verdict:
    """Recompute the chain in stored order and report the first entry that does not fit.

    Checks per entry: seq continues the previous (a gap: entries deleted; a step back: reordered),
    prev_hash is the previous entry's hash, the stored hash equals the recomputed one (an edited
    field), a revision points at the latest earlier entry of the same window, the park matches.
    `public_keys`: enterprise -> Ed25519 public key; each signature by such an enterprise must
    verify; `signers`: exchange -> enterprises whose signature is required (missing: broken)."""
    prev_hash = GENESIS
    expect_seq = 0
    latest: dict[tuple[str, int], LedgerEntry] = {}
    n = 0
    checked = 0
    for e in entries:
        n += 1
        problem, sigs = _check(e, prev_hash, expect_seq, latest, park, public_keys, signers)
        checked += sigs
        if problem:
            return Verdict(False, n, e.seq, problem, checked, position=n - 1)
        latest[(e.exchange, e.window_start_ms)] = e
        prev_hash = e.hash
        expect_seq = e.seq + 1
    return Verdict(True, n, signatures_checked=checked)


def _check(e: LedgerEntry, prev_hash: str, expect_seq: int,
           latest: Mapping[tuple[str, int], LedgerEntry], park: str | None,
           public_keys: Mapping[str, Any] | None,
           signers: Mapping[str, Iterable[str]] | None) -> tuple[str, int]:
    """(the problem of entry `e` in its place, "" when none; signatures verified)."""
    if e.seq != expect_seq:
        what = ("entries before it are missing (deleted) or it was moved ahead of them "
                "(reordered)" if e.seq > expect_seq
                else "it comes after a later entry (reordered or inserted)")
        return f"seq {e.seq} where {expect_seq} was expected: {what}", 0
    if e.prev_hash != prev_hash:
        return (f"prev_hash {e.prev_hash[:12]}... is not the hash of entry {e.seq - 1} "
                f"({prev_hash[:12]}...): an entry before it was changed, removed or moved"), 0
    if park is not None and e.park != park:
        return f"park {e.park!r}, expected {park!r}", 0
    actual = e.computed_hash()
    if e.hash != actual:
        return (f"stored hash {e.hash[:12]}... differs from the recomputed {actual[:12]}...: "
                f"the entry's content was edited (exchange {e.exchange!r}, window "
                f"{e.window_start_ms}, supplier {e.supplier_qty!r}, consumer "
                f"{e.consumer_qty!r} {e.unit})"), 0
    before = latest.get((e.exchange, e.window_start_ms))
    if before is None and (e.revision != 0 or e.corrects is not None):
        return f"revision {e.revision} of a window with no earlier entry", 0
    if before is not None and (e.revision != before.revision + 1 or e.corrects != before.hash):
        return (f"revision {e.revision} corrects {str(e.corrects)[:12]}..., expected "
                f"revision {before.revision + 1} correcting entry {before.seq}"), 0
    checked = 0
    if public_keys:
        for ent in (signers or {}).get(e.exchange, ()):
            if ent in public_keys and ent not in e.signatures:
                return f"no signature of {ent!r}, which signs exchange {e.exchange!r}", checked
        for ent, sig in e.signatures.items():
            key_obj = public_keys.get(ent)
            if key_obj is None:
                continue
            if not verify_signature(key_obj, e.hash, sig):
                return f"the signature of {ent!r} does not verify", checked
            checked += 1
    return "", checked


def sign(private_key: Any, entry_hash: str) -> str:
    """Ed25519 signature (hex) of the entry hash (its hex string as UTF-8)."""
    return str(private_key.sign(entry_hash.encode()).hex())


def verify_signature(public_key: Any, entry_hash: str, signature_hex: str) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(bytes.fromhex(signature_hex), entry_hash.encode())
    except (InvalidSignature, ValueError):
        return False
    return True
