"""`parkmon simulate`: publish a simulated fleet over MQTT, or print it, or benchmark the publisher.

Examples:
    parkmon simulate --duration 1h --speed 60                     # Kalundborg, 1 h of data in 1 min
    parkmon simulate --scenario gypsum_trip --speed max --batch 500 --labels /tmp/gypsum.jsonl
    parkmon simulate --synthetic 500x10000 --duration 10m --speed max --batch 1000
    parkmon simulate --stdout --duration 5m                       # JSON lines, no broker
    parkmon simulate --bench                                      # readings/s, single vs batched
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from parkmon.errors import ParkFileError, ParkmonError
from parkmon.park import Park, example_park_path, load_park
from simulators.fleet import Fleet, FleetOptions
from simulators.scenarios import (
    Scenario,
    ScenarioError,
    load_scenario,
    parse_duration_ms,
    scenario_path,
    write_labels,
)


def _park(spec: str | None, scenario: Scenario | None, synthetic: str | None, seed: int) -> Park:
    if synthetic:
        from parkmon.park.generator import generate_park

        try:
            n_ent, n_met = (int(x) for x in synthetic.lower().split("x"))
        except ValueError:
            raise ParkmonError(f"--synthetic expects ENTERPRISESxMETERS, e.g. 500x10000, got {synthetic!r}") from None
        return generate_park(n_ent, n_met, seed=seed)
    spec = spec or (scenario.park if scenario and scenario.park else "kalundborg")
    path = Path(spec)
    if not path.exists() and "/" not in spec and not spec.endswith((".yaml", ".yml")):
        path = example_park_path(spec)
    return load_park(path)


def _scenario(spec: str | None) -> tuple[Scenario | None, str]:
    if not spec:
        return None, ""
    path = Path(spec)
    if not path.exists() and "/" not in spec and not spec.endswith((".yaml", ".yml")):
        path = scenario_path(spec)
    return load_scenario(path), str(path)


def _time_ms(text: str, now_ms: int) -> int:
    if text == "now":
        return now_ms
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parkmon simulate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--park", help="park file or example name (default: the scenario's park or kalundborg)")
    p.add_argument("--synthetic", metavar="ExM", help="generate a park of E enterprises and M meters")
    p.add_argument("--scenario", help="scenario file or name in simulators/scenarios/")
    p.add_argument("--seed", type=int, help="random seed (default: the scenario's, else 0)")
    p.add_argument("--start", default=None,
                   help="event time of the first reading: ISO 8601 or 'now' (default: now when "
                        "--speed is 1, else now minus the duration so that no reading is in the future)")
    p.add_argument("--duration", help="simulated duration, e.g. 90s, 30m, 6h, 2d "
                                      "(default: the scenario's; without one, run until stopped)")
    p.add_argument("--speed", default="1", help="simulated seconds per wall second, or 'max' (default 1)")
    p.add_argument("--batch", type=int, default=1, help="readings per MQTT message (1 = one reading per message)")
    p.add_argument("--qos", type=int, default=1, choices=(0, 1, 2))
    p.add_argument("--host", help="MQTT host (default PARKMON_MQTT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="MQTT port (default PARKMON_MQTT_PORT or 18830)")
    p.add_argument("--client-id", help="MQTT client id")
    p.add_argument("--device-credentials", metavar="FILE",
                   help="JSON {enterprise: {\"username\": ..., \"password\": ...}}: one MQTT "
                        "connection per enterprise with its own user (per-enterprise ACL)")
    p.add_argument("--dev-secure", action="store_true",
                   help="publish to the mosquitto-secure dev service, one device user per "
                        "enterprise (registered there on the fly)")
    p.add_argument("--labels", help="write the ground-truth labels (JSONL) here "
                                    "(default with a scenario: ./<scenario>-seed<seed>.labels.jsonl)")
    p.add_argument("--stdout", action="store_true", help="print readings as JSON lines instead of publishing")
    p.add_argument("--no-resets", action="store_true", help="no random counter resets")
    p.add_argument("--meter-bias", type=float, default=0.0,
                   help="std of each meter's calibration error, e.g. 0.005 (default 0: exact)")
    p.add_argument("--list-scenarios", action="store_true", help="list the shipped scenarios")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--bench", action="store_true", help="measure publish rates (single and batched)")
    p.add_argument("--bench-readings", type=int, default=200_000, help="readings per batched bench run")
    p.add_argument("--bench-repeat", type=int, default=3)
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        return _run(args, out, err)
    except (ParkFileError, ScenarioError) as exc:
        print(f"{exc.source}: {len(exc.problems)} problem(s)", file=err)
        for line in exc.problems:
            print(f"  {line}", file=err)
        return 2
    except (ParkmonError, FileNotFoundError, ValueError) as exc:
        print(f"parkmon simulate: {exc}", file=err)
        return 2


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from parkmon.config import MqttSettings

    settings = MqttSettings()
    host = args.host or settings.host
    port = args.port or settings.port
    if args.bench:
        from simulators.bench import run_bench

        return run_bench(host, port, qos=args.qos, n_batched=args.bench_readings,
                         repeat=args.bench_repeat, out=out)

    if args.list_scenarios:
        for path in sorted((Path(__file__).parent / "scenarios").glob("*.yaml")):
            sc = load_scenario(path)
            desc = " ".join(sc.description.split())
            print(f"{sc.name:<16} {len(sc.events):>2} events  {sc.duration or '-':<4}  {desc[:90]}", file=out)
        return 0
    scenario, scenario_source = _scenario(args.scenario)
    seed = args.seed if args.seed is not None else (scenario.seed if scenario and scenario.seed is not None else 0)
    park = _park(args.park, scenario, args.synthetic, seed)
    speed = math.inf if args.speed == "max" else float(args.speed)
    if speed <= 0:
        raise ValueError(f"--speed must be positive or 'max', got {args.speed}")
    duration_ms = parse_duration_ms(args.duration) if args.duration else (
        scenario.duration_ms if scenario else None)
    now_ms = int(time.time() * 1000)
    if args.start is None:
        start_ms = now_ms if (speed == 1.0 or duration_ms is None) else now_ms - (duration_ms or 0)
    else:
        start_ms = _time_ms(args.start, now_ms)
    options = FleetOptions(meter_bias=args.meter_bias)
    if args.no_resets:
        options = FleetOptions(counter_resets_per_day=0.0, meter_bias=args.meter_bias)
    fleet = Fleet(park, seed=seed, start_ms=start_ms, scenario=scenario, options=options,
                  scenario_source=scenario_source or "<scenario>")
    until_ms = start_ms + duration_ms if duration_ms is not None else 2**62
    labels_path = args.labels or (f"{scenario.name}-seed{seed}.labels.jsonl" if scenario else None)

    def batches():  # type: ignore[no-untyped-def]
        yield from fleet.batches(until_ms)
        if duration_ms is not None:
            rest = fleet.drain()
            if rest:
                yield rest

    if args.stdout:
        n = 0
        for batch in batches():
            for r in batch:
                if r.raw is not None:
                    out.write(json.dumps({"enterprise": r.enterprise, "raw": r.raw.decode(errors="replace")}) + "\n")
                else:
                    out.write(json.dumps({"enterprise": r.enterprise, **r.payload()}) + "\n")
                n += 1
        if labels_path:
            write_labels(labels_path, fleet.labels)
            print(f"labels: {labels_path} ({len(fleet.labels)})", file=err)
        return 0

    from simulators.publisher import MqttPublisher, progress_printer

    credentials_for = None
    if args.device_credentials:
        table = json.loads(Path(args.device_credentials).read_text())

        def credentials_for(ent: str) -> tuple[str, str]:
            if ent not in table:
                raise ParkmonError(f"{args.device_credentials}: no credentials for enterprise {ent!r}")
            return str(table[ent]["username"]), str(table[ent]["password"])
    elif args.dev_secure:
        from parkmon import devservices

        secure = devservices.handle("mosquitto-secure")
        host, port = (args.host or secure.host), (args.port or secure.port)

        def credentials_for(ent: str) -> tuple[str, str]:
            c = secure.device(ent, park=park.id)  # type: ignore[attr-defined]
            return c.username, c.password
    pub = MqttPublisher(park.id, host, port, qos=args.qos, batch=args.batch, client_id=args.client_id,
                        username=settings.username,
                        password=settings.password.get_secret_value() if settings.password else None,
                        credentials_for=credentials_for, tls=settings.tls,
                        tls_ca=settings.tls_ca)
    pub.connect()
    print(f"publishing park {park.id!r} ({len(park.meters)} meters) to {host}:{port} "
          f"qos {args.qos}, batch {args.batch}, speed {args.speed}, seed {seed}, start "
          f"{dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.UTC).isoformat()}"
          + (f", scenario {scenario.name}" if scenario else ""), file=err)
    stop = threading.Event()
    interrupted = False
    try:
        pub.run(batches(), speed=speed, progress=None if args.quiet else progress_printer(err),
                stop=stop)
    except KeyboardInterrupt:
        interrupted = True
    st = pub.close()
    if not args.quiet and err.isatty():
        err.write("\n")
    print(f"published {st.readings:,} readings in {st.messages:,} messages in {st.elapsed_s:.1f}s "
          f"({st.readings_per_s:,.0f} readings/s); acked {st.acked:,}"
          + (f", {st.unacked_at_close} NOT acknowledged" if st.unacked_at_close else "")
          + (f", {st.malformed} malformed" if st.malformed else "")
          + (" (interrupted)" if interrupted else ""), file=err)
    if labels_path:
        reached = fleet.now_ms
        kept = [lb for lb in fleet.labels if lb.start_ms < reached]
        for lb in kept:
            if lb.end_ms > reached:
                lb.details["truncated_at_ms"] = reached
        write_labels(labels_path, kept)
        print(f"labels: {labels_path} ({len(kept)})", file=err)
    return 130 if interrupted else (1 if st.unacked_at_close else 0)
