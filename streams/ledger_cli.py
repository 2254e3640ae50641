"""`parkmon ledger`: verify, export, sync and sign the tamper-evident exchange ledger.

    parkmon ledger verify LEDGER [--keys DIR] [--park FILE]
    parkmon ledger export LEDGER --format csv|json --out FILE
    parkmon ledger sync   LEDGER --park FILE [--since=-6h | --since ISO] [--follow [--interval-s S]] [--keys DIR]
    parkmon ledger keygen --enterprise ID --dir DIR

`sync` is the scaled mode's writer: it reads the closed base windows of every exchange from InfluxDB
(the `kpi` points the streams workers wrote, scope exchange, view 1m) and appends what is new or
revised, in (window start, exchange) order; run it once or with `--follow`. Edge mode and
`parkmon demo` write their ledger themselves. Exit codes: 0 OK, 1 the chain is broken, 2 usage
or input errors (with a message saying what to fix).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from parkmon.errors import ParkmonError
from streams.core.ledger import Candidate


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="parkmon ledger", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="recompute the hash chain; report the first broken entry")
    v.add_argument("ledger", type=Path)
    v.add_argument("--keys", type=Path, help="directory of <enterprise>.pub keys to check signatures")
    v.add_argument("--park", type=Path, help="park file: require a signature of every partner "
                                              "with a key in --keys")
    e = sub.add_parser("export", help="write the entries for an auditor")
    e.add_argument("ledger", type=Path)
    e.add_argument("--format", choices=("csv", "json"), required=True)
    e.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("sync", help="append the closed exchange windows stored in InfluxDB")
    s.add_argument("ledger", type=Path)
    s.add_argument("--park", type=Path, required=True)
    s.add_argument("--since", default="-30d", help="Flux range start (default -30d)")
    s.add_argument("--follow", action="store_true")
    s.add_argument("--interval-s", type=float, default=10.0)
    s.add_argument("--keys", type=Path, help="directory of <enterprise>.key signing keys")
    k = sub.add_parser("keygen", help="create an enterprise's Ed25519 key pair")
    k.add_argument("--enterprise", required=True)
    k.add_argument("--dir", type=Path, required=True)
    return ap


def influx_candidates(park: Any, url: str, token: str, org: str, bucket: str,
                      since: str) -> list[Candidate]:
    """The exchange base windows of `park` stored in InfluxDB, as ledger candidates."""
    from influxdb_client import InfluxDBClient

    start = since if since.startswith("-") else f"time(v: \"{since}\")"
    flux = (f'from(bucket: "{bucket}") |> range(start: {start})'
            f' |> filter(fn: (r) => r._measurement == "kpi" and r.park == "{park.id}"'
            ' and r.scope == "exchange" and r.view == "1m")'
            ' |> filter(fn: (r) => r._field == "outflow" or r._field == "inflow"'
            ' or r._field == "imbalance")')
    units = {x.id: x.quantity_unit for x in park.exchanges}
    rows: dict[tuple[str, int], dict[str, float]] = {}
    with InfluxDBClient(url=url, token=token, org=org, timeout=60_000) as client:
        for table in client.query_api().query(flux, org=org):
            for rec in table.records:
                ts = int(rec.get_time().timestamp() * 1000)
                rows.setdefault((str(rec.values["entity"]), ts), {})[str(rec.get_field())] = \
                    float(rec.get_value())
    out = []
    for (xid, ts), f in rows.items():
        if "outflow" in f and "inflow" in f and xid in units:
            out.append(Candidate(xid, ts, ts + 60_000, f["outflow"], f["inflow"],
                                 f.get("imbalance", 0.0), units[xid]))
    out.sort(key=lambda c: (c.window_start_ms, c.exchange))
    return out


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except ParkmonError as exc:
        print(f"parkmon ledger: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from streams.ledger_store import LedgerStore, exchange_signers, keygen, load_keys

    if args.cmd == "keygen":
        priv, pub = keygen(args.dir, args.enterprise)
        print(f"wrote {priv} (keep private) and {pub}")
        return 0
    if args.cmd == "sync":
        from parkmon.config import InfluxSettings
        from parkmon.park import load_park

        park = load_park(args.park)
        store = LedgerStore(args.ledger, park.id, signing_keys=load_keys(args.keys, ".key"),
                            signers=exchange_signers(park))
        s = InfluxSettings()
        token = s.token.get_secret_value() if s.token else ""
        try:
            while True:
                n = store.append(influx_candidates(park, s.url, token, s.org, s.bucket,
                                                   args.since))
                print(f"ledger {args.ledger}: {n} entr{'y' if n == 1 else 'ies'} appended, "
                      f"{len(store)} in all", flush=True)
                if not args.follow:
                    return 0
                time.sleep(args.interval_s)
        finally:
            store.close()
    store = LedgerStore.open_existing(args.ledger)
    try:
        if args.cmd == "export":
            n = store.export(args.out, args.format)
            print(f"{n} entries written to {args.out} ({args.format})")
            return 0
        # verify
        if args.park is not None:
            from parkmon.park import load_park

            store.signers = exchange_signers(load_park(args.park))
        verdict = store.verify(load_keys(args.keys, ".pub") if args.keys else None)
        print(verdict.message(), file=sys.stdout if verdict.ok else sys.stderr)
        return 0 if verdict.ok else 1
    finally:
        store.close()
