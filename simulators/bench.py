"""Publish-rate benchmark: readings/s one simulator process publishes to a local Mosquitto.

Readings are generated first (generation is measured separately as the baseline), then published
as fast as possible with QoS 1, one reading per message ("single") and in batches ("batched"),
each repeated; the medians are printed. The clock stops when the broker has acknowledged every
message. Topics use a throw-away park id so no consumer sees the data.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import TextIO

from parkmon.park import example_park_path, load_park
from simulators.fleet import Fleet, FleetOptions, SimReading
from simulators.publisher import MqttPublisher

T0 = 1_767_225_600_000


def generate(n: int, synthetic: tuple[int, int] | None = None, seed: int = 1) -> tuple[list[list[SimReading]], float]:
    """At least n readings as step batches; returns (batches, generation readings/s)."""
    if synthetic:
        from parkmon.park.generator import generate_park

        park = generate_park(*synthetic, seed=seed)
    else:
        park = load_park(example_park_path("kalundborg"))
    fleet = Fleet(park, seed=seed, start_ms=T0, options=FleetOptions(counter_resets_per_day=0.0))
    out: list[list[SimReading]] = []
    count = 0
    t = time.perf_counter()
    until = T0
    while count < n:
        until += 3_600_000
        for b in fleet.batches(until):
            out.append(b)
            count += len(b)
            if count >= n:
                break
    return out, count / (time.perf_counter() - t)


def publish_once(batches: list[list[SimReading]], host: str, port: int, qos: int, batch: int) -> tuple[float, float, int]:
    """Publish everything; returns (readings/s, messages/s, queue-full retries)."""
    pub = MqttPublisher(f"simbench{os.getpid()}", host, port, qos=qos, batch=batch,
                        client_id=f"parkmon-simbench-{os.getpid()}-{batch}")
    pub.connect()
    t = time.perf_counter()
    pub.run(batches, speed=math.inf)
    pub.flush()
    ok = pub.wait_acked(120.0)
    elapsed = time.perf_counter() - t
    st = pub.close(ack_timeout_s=1.0)
    if not ok:
        raise RuntimeError(f"{st.unacked_at_close} messages not acknowledged")
    return st.readings / elapsed, st.messages / elapsed, st.retries_queue_full


def run_bench(host: str, port: int, *, qos: int = 1, n_batched: int = 200_000, n_single: int | None = None,
              batch_sizes: tuple[int, ...] = (100, 1000), repeat: int = 3, synthetic: tuple[int, int] | None = (500, 10_000),
              out: TextIO) -> int:
    n_single = n_single or max(1, n_batched // 4)
    batches, gen_rate = generate(max(n_batched, n_single), synthetic)
    flat_single: list[list[SimReading]] = []
    c = 0
    for b in batches:
        flat_single.append(b)
        c += len(b)
        if c >= n_single:
            break
    src = f"synthetic park {synthetic[0]}x{synthetic[1]}" if synthetic else "Kalundborg park"
    print(f"simulator publish benchmark: {src}, broker {host}:{port}, QoS {qos}, "
          f"median of {repeat} runs", file=out)
    print(f"  generation only (baseline)     {gen_rate:>12,.0f} readings/s", file=out)
    results: dict[str, float] = {}
    runs: list[tuple[str, int, list[list[SimReading]]]] = [("single (1 reading/message)", 1, flat_single)] + [
        (f"batched ({b} readings/message)", b, batches) for b in batch_sizes]
    for name, size, data in runs:
        rates, msgs, retries = [], [], 0
        for _ in range(repeat):
            r, m, q = publish_once(data, host, port, qos, size)
            rates.append(r)
            msgs.append(m)
            retries += q
        results[name] = statistics.median(rates)
        print(f"  {name:<30} {statistics.median(rates):>12,.0f} readings/s  "
              f"{statistics.median(msgs):>10,.0f} messages/s  (runs: "
              + ", ".join(f"{x:,.0f}" for x in rates) + f"; queue-full retries {retries})", file=out)
    single = results[runs[0][0]]
    for name, _, _ in runs[1:]:
        print(f"  {name} / single: {results[name] / single:.1f}x", file=out)
    return 0
