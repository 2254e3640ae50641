"""`parkmon whatif` speed: a 24 h scenario on the 11-enterprise Kalundborg-like park, and a
generated park of --enterprises / --meters, each against one plain replay of the same park in the
same run (a what-if is two replays plus the comparison, so the ratio should be close to 2).

    .venv/bin/python benchmarks/bench_whatif.py [--repeat 3] [--enterprises 500 --meters 10000 --big-hours 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from apps.whatif import _run_one, run
from apps.whatif_model import WhatIf, load_whatif
from parkmon.park import example_park_path, load_park
from parkmon.park.generator import generate_park_data


def median_time(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--enterprises", type=int, default=500)
    ap.add_argument("--meters", type=int, default=10_000)
    ap.add_argument("--big-hours", type=float, default=1.0)
    a = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cpus)")

    kb = example_park_path("kalundborg")
    w = load_whatif("power_station_trip").model_copy(update={"hours": 24.0})
    park = load_park(kb)
    t_whatif, t_serial, t_replay = [], [], []
    for _ in range(a.repeat):  # interleaved, so load changes hit all three alike
        t_whatif.append(median_time(lambda: run(kb, w, jobs=2), 1))
        t_serial.append(median_time(lambda: run(kb, w, jobs=1), 1))
        t_replay.append(median_time(lambda: _run_one(park, [], w), 1))
    tw, ts, tr = (statistics.median(x) for x in (t_whatif, t_serial, t_replay))
    print(f"kalundborg (11 enterprises), 24 h power_station_trip, medians of {a.repeat}: whatif "
          f"{tw:.2f} s (2 processes), {ts:.2f} s (--jobs 1), one replay {tr:.2f} s; ratios "
          f"whatif/replay {tw / tr:.2f}, serial/replay {ts / tr:.2f} (target: < 10 s)")

    data = generate_park_data(a.enterprises, a.meters, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        big = load_park(path)
        carrier = "electricity" if "electricity" in big.emission_factors else next(
            iter(big.emission_factors))
        f = big.emission_factors[carrier]
        bw = WhatIf(name="big", hours=a.big_hours, seed=1, park_changes=[{
            "kind": "emission_factor", "carrier": carrier, "value": f.value * 1.1,
            "unit": f"t/{f.per_unit}"}])
        t0 = time.perf_counter()
        r = run(path, bw, jobs=2)
        t_big = time.perf_counter() - t0
        t0 = time.perf_counter()
        _run_one(big, [], bw)
        t_big_replay = time.perf_counter() - t0
    n = r["readings"]["baseline"]
    print(f"generated park {len(big.enterprises)} enterprises / {len(big.meters)} meters, "
          f"{a.big_hours:g} h ({n:,} readings per run): whatif {t_big:.1f} s, one replay "
          f"{t_big_replay:.1f} s, ratio {t_big / t_big_replay:.2f}; "
          f"{2 * n / t_big:,.0f} readings/s through the pipeline")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
