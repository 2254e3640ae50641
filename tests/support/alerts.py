"""Test helpers shipped with the package: a fake clock, a small hand-computable park and a webhook
receiver that records what it gets (run as `python -m alerts.testing receive --port P --out F`).

The toy park (see `toy_park_data`) has six enterprises; a steam trip at `power` spreads to
`refinery` and `biotech`, then via refinery gas to `plaster` and via biotech sludge to `farm`;
plaster's scrap flows back to `power` (a cycle the propagation must stop at).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from copy import deepcopy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from parkmon.park import Park, build_park


class FakeClock:
    """An injectable wall clock in UTC epoch ms: `clock()` reads it, `advance(ms)` moves it."""

    def __init__(self, start_ms: int = 1_767_225_600_000) -> None:  # 2026-01-01T00:00:00Z
        self.now = start_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> int:
        self.now += ms
        return self.now


def _rate(mid: str, carrier: str, direction: str, unit: str, nominal: float, cap: float,
          origin: str | None = None, material: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": mid, "enterprise": mid.split(".")[0], "carrier": carrier,
                         "direction": direction, "kind": "rate", "unit": unit, "range": [0, cap],
                         "nominal": f"{nominal} {unit}", "period_s": 10}
    if origin:
        d["origin"] = origin
    if material:
        d["material"] = material
    return d


TOY_PARK: dict[str, Any] = {
    "park": {"id": "toy", "name": "Toy symbiosis park"},
    "enterprises": [{"id": e, "name": e.title(), "sector": s} for e, s in [
        ("power", "power station"), ("refinery", "refinery"), ("biotech", "enzymes"),
        ("plaster", "plasterboard"), ("farm", "agriculture"), ("incinerator", "waste to energy")]],
    "meters": [
        _rate("power.steam_out", "steam", "output", "MW", 100, 200),
        _rate("power.gypsum_out", "material", "output", "t/h", 10, 20, material="gypsum"),
        _rate("power.scrap_in", "material", "input", "t/h", 2, 5, origin="secondary", material="scrap"),
        _rate("refinery.steam_in", "steam", "input", "MW", 54, 200, origin="partner"),
        _rate("refinery.steam_own", "steam", "input", "MW", 36, 100, origin="virgin"),
        _rate("refinery.gas_out", "fuel_gas", "output", "MW", 10, 30),
        _rate("biotech.steam_in", "steam", "input", "MW", 36, 100, origin="partner"),
        _rate("biotech.sludge_out", "material", "output", "t/h", 20, 40, material="sludge"),
        _rate("plaster.gas_in", "fuel_gas", "input", "MW", 10, 30, origin="partner"),
        _rate("plaster.gas_grid", "fuel_gas", "input", "MW", 5, 30, origin="virgin"),
        _rate("plaster.gypsum_in", "material", "input", "t/h", 10, 20, origin="partner", material="gypsum"),
        _rate("plaster.scrap_out", "material", "output", "t/h", 2, 5, material="scrap"),
        _rate("farm.sludge_in", "material", "input", "t/h", 20, 40, origin="partner", material="sludge"),
        _rate("incinerator.steam_out", "steam", "output", "MW", 35, 50),
    ],
    "exchanges": [
        {"id": "steam", "carrier": "steam", "suppliers": ["power.steam_out"],
         "consumers": ["refinery.steam_in", "biotech.steam_in"], "consumer_shares": [0.6, 0.4],
         "nominal_rate": "100 MW", "loss_fraction": 0.1, "buffer_h": 1.0, "criticality": "high"},
        {"id": "gypsum", "carrier": "material", "material": "gypsum",
         "suppliers": ["power.gypsum_out"], "consumers": ["plaster.gypsum_in"],
         "nominal_rate": "10 t/h", "buffer_h": 48.0, "criticality": "medium"},
        {"id": "gas", "carrier": "fuel_gas", "suppliers": ["refinery.gas_out"],
         "consumers": ["plaster.gas_in"], "nominal_rate": "10 MW", "buffer_h": 2.0},
        {"id": "sludge", "carrier": "material", "material": "sludge",
         "suppliers": ["biotech.sludge_out"], "consumers": ["farm.sludge_in"],
         "nominal_rate": "20 t/h", "buffer_h": 24.0},
        {"id": "scrap", "carrier": "material", "material": "scrap",
         "suppliers": ["plaster.scrap_out"], "consumers": ["power.scrap_in"],
         "nominal_rate": "2 t/h", "buffer_h": 0.0},
    ],
    "alternatives": [
        {"enterprise": "steam_import", "external": True, "carrier": "steam",
         "spare_capacity": "20 MW", "lead_time_h": 4},
        {"enterprise": "incinerator", "carrier": "steam", "spare_capacity": "30 MW",
         "lead_time_h": 0.5},
    ],
}


def toy_park_data() -> dict[str, Any]:
    return deepcopy(TOY_PARK)


def toy_park(data: dict[str, Any] | None = None) -> Park:
    return build_park(data if data is not None else toy_park_data(), source="<toy park>")


# -- webhook receiver -----------------------------------------------------------------------------

class _Recorder(BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        status = self.server.status_for_next()
        if status < 300:
            rec = {"headers": {k.lower(): v for k, v in self.headers.items()},
                   "body": body.decode(), "path": self.path}
            with self.server.lock:
                self.server.out.write(json.dumps(rec) + "\n")
                self.server.out.flush()
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, out_path: str, fail_first: int, fail_status: int) -> None:
        super().__init__(("127.0.0.1", port), _Recorder)
        self.out = open(out_path, "a", encoding="utf-8")  # noqa: SIM115 - lives with the server
        self.lock = threading.Lock()
        self._fail_left = fail_first
        self._fail_status = fail_status

    def status_for_next(self) -> int:
        with self.lock:
            if self._fail_left > 0:
                self._fail_left -= 1
                return self._fail_status
            return 200


def serve_receiver(port: int, out_path: str, fail_first: int = 0, fail_status: int = 503) -> None:
    """Record every accepted POST as one JSON line {headers, body, path} in `out_path`."""
    srv = _RecordingServer(port, out_path, fail_first, fail_status)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.out.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alerts.testing")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("receive", help="run a recording webhook receiver on 127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--fail-first", type=int, default=0, help="answer the first N with --fail-status")
    r.add_argument("--fail-status", type=int, default=503)
    args = p.parse_args(argv)
    serve_receiver(args.port, args.out, args.fail_first, args.fail_status)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
