"""The exchange ledger: hash chain, content idempotency, revisions, tamper detection, signatures,
kill -9 of the writer, CLI (streams/core/ledger.py, streams/ledger_store.py, streams/ledger_cli.py)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from streams.core.ledger import GENESIS, Candidate, LedgerChain, LedgerEntry, verify
from streams.ledger_cli import main as ledger_main
from streams.ledger_store import LedgerStore, keygen, load_keys

pytestmark = pytest.mark.unit

MIN = 60_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % MIN


def cands(n_windows: int = 5, exchanges: tuple[str, ...] = ("gypsum", "steam")) -> list[Candidate]:
    return [Candidate(x, T0 + w * MIN, T0 + (w + 1) * MIN, 10.0 + w, 9.5 + w, 0.4, "t")
            for w in range(n_windows) for x in exchanges]


def store(tmp_path: Path, name: str = "l.sqlite", **kw) -> LedgerStore:
    return LedgerStore(tmp_path / name, "kb", **kw)


def test_canonical_encoding_and_hash_are_the_documented_ones():
    e = LedgerChain("kb").candidate(Candidate("gypsum", T0, T0 + MIN, 10.0, 9.5, 0.4, "t"))
    assert e is not None
    text = ('{"consumer_qty":"9.5","corrects":null,"exchange":"gypsum","format":"parkmon-ledger/1",'
            f'"gap":"0.4","park":"kb","prev_hash":"{GENESIS}","revision":0,"seq":0,'
            f'"supplier_qty":"10.0","unit":"t","window_end_ms":{T0 + MIN},'
            f'"window_start_ms":{T0}}}')
    assert e.canonical() == text.encode()
    assert e.hash == hashlib.sha256(text.encode()).hexdigest()


def test_a_replay_appends_nothing_and_a_revision_points_at_what_it_corrects(tmp_path: Path):
    s = store(tmp_path)
    assert s.append(cands()) == 10
    assert s.append(cands()) == 0  # replay: same content
    late = Candidate("gypsum", T0 + 2 * MIN, T0 + 3 * MIN, 12.0, 11.9, 0.0, "t")
    assert s.append([late]) == 1
    entries = list(s.entries())
    rev = entries[-1]
    first = next(e for e in entries if e.exchange == "gypsum" and e.window_start_ms == T0 + 2 * MIN)
    assert (rev.revision, rev.corrects, rev.prev_hash) == (1, first.hash, entries[-2].hash)
    assert s.append([late]) == 0
    assert s.verify().ok
    s.close()
    again = store(tmp_path)  # reopened: the chain continues, still idempotent
    assert again.append(cands() + [late]) == 0 and len(again) == 11
    again.close()


def _tamper(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, params)
    db.commit()
    db.close()


def _body(path: Path, seq: int) -> dict:
    db = sqlite3.connect(path)
    (body,) = db.execute("SELECT body FROM entries WHERE seq=?", (seq,)).fetchone()
    db.close()
    return json.loads(body)


def test_an_edited_quantity_is_detected_at_its_entry(tmp_path: Path):
    s = store(tmp_path)
    s.append(cands())
    s.close()
    b = _body(tmp_path / "l.sqlite", 4)
    b["consumer_qty"] = "99.0"
    _tamper(tmp_path / "l.sqlite", "UPDATE entries SET body=? WHERE seq=4", json.dumps(b))
    v = LedgerStore.open_existing(tmp_path / "l.sqlite").verify()
    assert not v.ok and v.first_bad_seq == 4 and "content was edited" in v.problem
    assert "99.0" in v.problem


def test_a_deleted_entry_is_detected_where_it_was(tmp_path: Path):
    s = store(tmp_path)
    s.append(cands())
    s.close()
    _tamper(tmp_path / "l.sqlite", "DELETE FROM entries WHERE seq=6")
    v = LedgerStore.open_existing(tmp_path / "l.sqlite").verify()
    assert not v.ok and v.position == 6 and v.first_bad_seq == 7 and "deleted" in v.problem


def test_a_reordered_pair_is_detected_at_the_first_of_them(tmp_path: Path):
    s = store(tmp_path)
    s.append(cands())
    s.close()
    path = tmp_path / "l.sqlite"
    b3, b4 = _body(path, 3), _body(path, 4)
    _tamper(path, "UPDATE entries SET body=? WHERE seq=3", json.dumps(b4))  # stored swapped
    _tamper(path, "UPDATE entries SET body=? WHERE seq=4", json.dumps(b3))
    v = LedgerStore.open_existing(path).verify()
    assert not v.ok and v.position == 3 and v.first_bad_seq == 4 and "reordered" in v.problem
    # even when the seq numbers are rewritten to look contiguous, the hashes do not fit
    entries = [LedgerEntry.from_dict(_body(path, i)) for i in (0, 1, 2)]
    swapped = [LedgerEntry.from_dict({**b4, "seq": 3}), LedgerEntry.from_dict({**b3, "seq": 4})]
    v2 = verify(entries + swapped)
    assert not v2.ok and v2.first_bad_seq == 3


def test_signatures_verify_and_a_forged_one_is_caught(tmp_path: Path):
    keygen(tmp_path / "keys", "asnaes")
    keygen(tmp_path / "keys", "gyproc")
    signers = {"gypsum": ["asnaes", "gyproc"]}
    s = store(tmp_path, signing_keys=load_keys(tmp_path / "keys", ".key"), signers=signers)
    s.append(cands(3, ("gypsum",)))
    pub = load_keys(tmp_path / "keys", ".pub")
    v = s.verify(pub)
    assert v.ok and v.signatures_checked == 6
    s.close()
    other = tmp_path / "other"
    keygen(other, "asnaes")  # someone else's key under asnaes' name
    forged = LedgerStore(tmp_path / "l.sqlite", "kb", signers=signers)
    v = forged.verify({**pub, "asnaes": load_keys(other, ".pub")["asnaes"]})
    assert not v.ok and v.first_bad_seq == 0 and "signature of 'asnaes' does not verify" in v.problem
    forged.close()
    unsigned = store(tmp_path, "u.sqlite", signers=signers)
    unsigned.append(cands(1, ("gypsum",)))
    v = unsigned.verify(pub)
    assert not v.ok and "no signature of 'asnaes'" in v.problem
    unsigned.close()


WRITER = """
import sys, time
from streams.core.ledger import Candidate
from streams.ledger_store import LedgerStore
T0, MIN = int(sys.argv[2]), 60_000
cands = [Candidate(x, T0 + w * MIN, T0 + (w + 1) * MIN, 10.0 + w % 7, 9.0 + w % 5, 0.5, "t")
         for w in range(600) for x in ("gypsum", "steam", "heat")]
# late revisions of earlier windows, interleaved the way a stream would bring them
for i in range(0, 600, 50):
    cands.insert(3 * i + 10, Candidate("gypsum", T0 + i * MIN, T0 + (i + 1) * MIN, 99.0, 98.0, 0.0, "t"))
s = LedgerStore(sys.argv[1], "kb")
for i in range(0, len(cands), 40):
    s.append(cands[i:i + 40])
    print("appended", flush=True)
    time.sleep(float(sys.argv[3]))
print("done", len(s))
"""


def _writer(path: Path, pause: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(T0), str(pause)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE)


def test_kill9_of_the_writer_mid_stream_leaves_the_uninterrupted_chain(tmp_path: Path):
    ref = _writer(tmp_path / "ref.sqlite", 0.0)
    assert ref.wait(120) == 0
    path = tmp_path / "crash.sqlite"
    for after in (3, 11, 19):  # killed three times at different points, then run to the end
        w = _writer(path, 0.01)
        assert w.stdout is not None
        # kill once it has appended `after` batches (by what it reports, not by a sleep: a slow
        # start on a loaded machine must not kill it before its first append)
        for _ in range(after):
            assert w.stdout.readline().startswith(b"appended")
        os.kill(w.pid, signal.SIGKILL)
        w.wait(30)
        s = LedgerStore.open_existing(path)
        assert s.verify().ok  # whatever the moment of the kill
        assert len(s) >= after * 40 - 40  # at least what it reported (the first run's batches)
        s.close()
    assert _writer(path, 0.0).wait(120) == 0
    a, b = LedgerStore.open_existing(tmp_path / "ref.sqlite"), LedgerStore.open_existing(path)
    assert [e.hash for e in a.entries()] == [e.hash for e in b.entries()]
    assert b.verify().ok and len(b) == len(a) == 1800 + 12
    a.close()
    b.close()


def test_cli_verify_export_and_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    s = store(tmp_path)
    s.append(cands())
    s.close()
    path = tmp_path / "l.sqlite"
    assert ledger_main(["verify", str(path)]) == 0
    assert "ledger OK: 10 entries" in capsys.readouterr().out
    assert ledger_main(["export", str(path), "--format", "json", "--out",
                        str(tmp_path / "l.json")]) == 0
    doc = json.loads((tmp_path / "l.json").read_text())
    assert [LedgerEntry.from_dict(d) for d in doc["entries"]] == list(
        LedgerStore.open_existing(path).entries())
    assert verify(LedgerEntry.from_dict(d) for d in doc["entries"]).ok  # auditable offline
    assert ledger_main(["export", str(path), "--format", "csv", "--out",
                        str(tmp_path / "l.csv")]) == 0
    lines = (tmp_path / "l.csv").read_text().splitlines()
    assert len(lines) == 11 and lines[0].startswith("seq,park,exchange,window_start_ms")
    _tamper(path, "DELETE FROM entries WHERE seq=2")
    capsys.readouterr()
    assert ledger_main(["verify", str(path)]) == 1
    assert "ledger BROKEN at position 2 (entry seq 3)" in capsys.readouterr().err
    assert ledger_main(["verify", str(tmp_path / "nope.sqlite")]) == 2
    assert "no such ledger file" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    assert ledger_main(["verify", str(tmp_path / "junk.sqlite")]) == 2
    assert "not a parkmon ledger" in capsys.readouterr().err
    with pytest.raises(Exception, match="ledger of park 'kb', not 'other'"):
        LedgerStore(path, "other")
