"""Simulator publish rate: readings/s one simulator process publishes to the local Mosquitto.

    .venv/bin/python benchmarks/bench_simulator.py [--readings 200000] [--repeat 3]
        [--batch-sizes 100,1000] [--synthetic 500x10000 | --kalundborg] [--host H --port P]

Same as `parkmon simulate --bench`. Readings are generated first (generation rate printed as the
baseline); then the same readings are published with QoS 1 as fast as possible, one reading per
message (a quarter of the readings) and in batches; the clock stops when the broker has
acknowledged every message. Medians of --repeat runs, with the ratio batched / single.
The broker is the `mosquitto` dev service (started if needed, never stopped here).
"""

from __future__ import annotations

import argparse
import sys

from simulators.bench import run_bench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--readings", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batch-sizes", default="100,1000")
    p.add_argument("--synthetic", default="500x10000")
    p.add_argument("--kalundborg", action="store_true", help="use the Kalundborg example park")
    p.add_argument("--qos", type=int, default=1)
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    args = p.parse_args(argv)
    host, port = args.host, args.port
    if host is None or port is None:
        from parkmon import devservices

        h = devservices.ensure("mosquitto", quiet=True)
        host, port = host or h.host, port or h.port
    synthetic = None if args.kalundborg else tuple(int(x) for x in args.synthetic.lower().split("x"))
    return run_bench(host, port, qos=args.qos, n_batched=args.readings, repeat=args.repeat,
                     batch_sizes=tuple(int(x) for x in args.batch_sizes.split(",")),
                     synthetic=synthetic, out=sys.stdout)  # type: ignore[arg-type]


if __name__ == "__main__":
    raise SystemExit(main())
