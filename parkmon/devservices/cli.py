"""`parkmon services up|down|status|build [--only NAME ...]`."""

from __future__ import annotations

import argparse
import json
import time

from parkmon import devservices
from parkmon.devservices.base import DevServiceError


def _names(only: list[str] | None) -> list[str]:
    if not only:
        return list(devservices.SERVICES)
    names: list[str] = []
    for item in only:
        for part in item.split(","):
            if part.strip():
                names.append(devservices.canonical(part.strip()))
    return names


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="parkmon services",
        description="Install, start, stop local Mosquitto, Kafka and InfluxDB 2 on loopback.",
    )
    parser.add_argument("action", choices=["up", "down", "status", "build"],
                        help="up: build if needed, start, wait healthy; down: stop what we started "
                             "(by recorded pid); status: show; build: install/build only")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help=f"restrict to these services ({', '.join(devservices.SERVICES)}); "
                             "repeatable or comma-separated")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    args = parser.parse_args(argv)
    try:
        names = _names(args.only)
    except DevServiceError as exc:
        parser.error(str(exc))
    failed = 0
    if args.action == "build":
        for name in names:
            t0 = time.monotonic()
            try:
                devservices.install(name)
                print(f"{name}: ready ({time.monotonic() - t0:.1f}s)")
            except DevServiceError as exc:
                print(f"{name}: FAILED: {exc}")
                failed += 1
    elif args.action == "up":
        for name in names:
            try:
                h = devservices.ensure(name, lease=False)
                print(json.dumps(h.describe()))
            except DevServiceError as exc:
                print(f"{name}: FAILED: {exc}")
                failed += 1
    elif args.action == "down":
        for name in names:
            stopped = devservices.stop(name)
            print(f"{name}: {'stopped' if stopped else 'not running (or not started by parkmon)'}")
    else:
        rows = [devservices.handle(n).describe() for n in names]
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                state = "healthy" if r["healthy"] else "down"
                pid = r["pid"] if r["pid"] is not None else "-"
                took = r["healthy_after_s"]
                print(f"{r['service']:<17} {r['address']:<16} {state:<8} pid={pid:<8} "
                      f"healthy_after={took if took is not None else '-'}s  {r['data_dir']}")
    return 1 if failed else 0
