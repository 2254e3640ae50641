"""Cost of the versioned JSON state format against pickle (the format it replaced), same run.

    .venv/bin/python benchmarks/bench_state.py [--hours 6] [--repeat 7]

Feeds the detectors of the embedded Kalundborg-like park with `--hours` of one-minute readings,
then times writing and reading their state both ways and prints medians, sizes and the ratios.
pickle appears here only as the yardstick; product code no longer uses it.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time

import numpy as np

from detect import ParkMonitor
from parkmon import state
from parkmon.park import example_park_path, load_park


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=6)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    park = load_park(example_park_path("kalundborg"))
    mon = ParkMonitor(park)
    rng = np.random.default_rng(1)
    t0 = 1_790_000_000_000 - 1_790_000_000_000 % 60_000
    rate = [m for m in park.meters if m.kind == "rate"]
    for i in range(int(a.hours * 60)):
        for m in rate:
            mon.observe(m.id, t0 + i * 60_000,
                        float((m.nominal or m.capacity * 0.6) * (1 + 0.01 * rng.standard_normal())))
        mon.tick(t0 + i * 60_000)
    pk = pickle.dumps(mon, protocol=pickle.HIGHEST_PROTOCOL)
    js = state.dumps(mon, "park-monitor")
    w_p = timed(lambda: pickle.dumps(mon, protocol=pickle.HIGHEST_PROTOCOL), a.repeat)
    w_j = timed(lambda: state.dumps(mon, "park-monitor"), a.repeat)
    r_p = timed(lambda: pickle.loads(pk), a.repeat)  # noqa: S301 - our own bytes
    r_j = timed(lambda: state.loads(js, "park-monitor"), a.repeat)
    print(f"detectors of {len(park.meters)} meters after {a.hours} h, medians of {a.repeat}")
    print(f"  write  pickle {w_p * 1e3:8.2f} ms   json {w_j * 1e3:8.2f} ms   ratio {w_j / w_p:5.2f}x")
    print(f"  read   pickle {r_p * 1e3:8.2f} ms   json {r_j * 1e3:8.2f} ms   ratio {r_j / r_p:5.2f}x")
    print(f"  size   pickle {len(pk):8d} B    json {len(js):8d} B    ratio {len(js) / len(pk):5.2f}x")


if __name__ == "__main__":
    main()
