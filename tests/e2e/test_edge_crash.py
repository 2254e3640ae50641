"""kill -9 of `parkmon edge` in the middle of a stream, twice, and a SIGTERM, each followed by a
restart: the points in InfluxDB are exactly those of one uninterrupted in-process EdgePipeline run
over the same MQTT messages (nothing lost, nothing counted twice), and the readings' outcome
counts are the same too.

The publisher keeps publishing while the edge process is dead: the broker queues for the persistent
session and redelivers every message the edge had not acknowledged (acknowledgement follows the
checkpoint, see parkmon/edge_service.py).
"""

from __future__ import annotations

import math
import threading
import time

import pytest

from parkmon.edge_testing import (
    EdgeProcess,
    drop_session,
    fleet_messages,
    publish,
    query_points,
    reference_pipeline,
    reference_points,
)
from parkmon.park import example_park_path, load_park
from simulators.scenarios import parse_scenario

pytestmark = pytest.mark.e2e

MIN = 60_000
HOURS = 6
SCENARIO = {
    "name": "edge_crash", "park": "kalundborg", "duration": f"{HOURS}h", "seed": 3,
    "events": [
        {"kind": "step_drop", "exchange": "gypsum", "at": "2h", "duration": "2h",
         "magnitude": 0.5},
        {"kind": "duplicates", "meter": "asnaes.flyash_out", "at": "1h", "duration": "1h",
         "fraction": 0.2},
        {"kind": "malformed", "meter": "bioenergy.biogas_out", "at": "3h", "duration": "30m",
         "fraction": 0.3},
    ],
}


def _same(a: object, b: object) -> bool:
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)  # type: ignore[arg-type]
    return a == b


def test_kill9_twice_mid_stream_gives_the_uninterrupted_result(mosquitto, influx_bucket, tmp_path,
                                                              unique_name):
    park = load_park(example_park_path("kalundborg"))
    now = int(time.time() * 1000)
    start = (now - (HOURS * 60 + 20) * MIN) // MIN * MIN
    messages, _labels = fleet_messages(park, parse_scenario(SCENARIO), start_ms=start,
                                       duration_ms=HOURS * 60 * MIN)
    total_readings = sum(max(1, len(m.readings)) for m in messages)
    client_id = unique_name("edge-crash")
    env = {
        "PARKMON_MQTT_HOST": mosquitto.host, "PARKMON_MQTT_PORT": str(mosquitto.port),
        "PARKMON_MQTT_CLIENT_ID": client_id,
        "PARKMON_INFLUX_URL": influx_bucket.url, "PARKMON_INFLUX_ORG": influx_bucket.org,
        "PARKMON_INFLUX_BUCKET": influx_bucket.name, "PARKMON_INFLUX_TOKEN": influx_bucket.token,
        "PARKMON_EDGE_STATE_DIR": str(tmp_path / "state"),
        "PARKMON_EDGE_IDLE_AFTER_S": "8", "PARKMON_EDGE_IDLE_CLOCK_RATE": "60",
        "PARKMON_ALERTS_ENDPOINTS": "[]",
    }
    edge = EdgeProcess(example_park_path("kalundborg"), env, tmp_path / "edge.log")
    published = {"n": 0}
    errors: list[BaseException] = []

    def run_publisher() -> None:
        try:
            publish(messages, mosquitto.host, mosquitto.port, client_id=unique_name("edge-pub"),
                    per_s=len(messages) / 20.0,
                    on_progress=lambda n: published.__setitem__("n", n))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    restored = []
    try:
        edge.start()
        edge.wait_ready()
        pub = threading.Thread(target=run_publisher, daemon=True)
        pub.start()
        for fraction in (0.3, 0.55):
            edge.wait(lambda h, f=fraction: h["readings"] >= f * total_readings
                      and h["checkpoint_seq"] >= 2, 120, f"{fraction:.0%} of the stream")
            edge.kill9()  # mid-stream, without warning
            time.sleep(1.5)  # the publisher goes on: the broker queues for the session
            edge.start()
            h = edge.wait_ready()
            restored.append(h["restored_seq"])
        # and a graceful stop mid-stream: final checkpoint, acknowledgements, exit 0
        before = edge.wait(lambda h: h["readings"] >= 0.8 * total_readings, 120, "80%")
        assert edge.terminate() == 0, edge.log_tail()
        edge.start()
        h = edge.wait_ready()
        assert h["restored_seq"] > before["checkpoint_seq"], "no final checkpoint at SIGTERM"
        pub.join(timeout=120)
        assert not errors, errors
        assert published["n"] == len(messages)
        last_ts = max(r.ts_ms for m in messages for r in m.readings)
        edge.wait(lambda h: h["watermark_ms"] is not None
                  and h["watermark_ms"] >= last_ts + 3 * MIN and h["unacked"] == 0
                  and h["queue"] == 0, 180, "the last windows to close")
        seq = edge.health()["checkpoint_seq"]
        final = edge.wait(lambda h: h["checkpoint_seq"] > seq + 1, 30, "a later checkpoint")
        assert edge.terminate() == 0, edge.log_tail()
    finally:
        if edge.proc is not None and edge.proc.poll() is None:
            edge.kill9()
        drop_session(mosquitto.host, mosquitto.port, client_id)

    # both restarts continued from a checkpoint (not from scratch)
    assert all(s is not None and s >= 2 for s in restored), restored

    ref = reference_pipeline(park, messages, final_ms=last_ts + 10 * MIN, dedup_per_meter=2048)
    c = ref.counters
    # the outcome of every reading as in the uninterrupted run; redelivered messages that were
    # already in a checkpoint (crash between persist and ack) are counted as duplicates
    assert final["readings"] - final["duplicates"] == c.readings - c.duplicates
    assert final["accepted"] == c.accepted
    assert final["rejected"] == dict(c.rejected)
    assert final["late_beyond_grace"] == c.late_beyond_grace == 0

    expected = reference_points(park, ref)
    got = query_points(influx_bucket.url, influx_bucket.token, influx_bucket.org,
                       influx_bucket.name, start - 2 * 86_400_000)
    assert len(expected) > HOURS * 60 * 40
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    assert not missing, f"{len(missing)} points missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} unexpected points, e.g. {sorted(extra)[:3]}"
    diff = [(k, f, expected[k].get(f), got[k].get(f)) for k in expected
            for f in set(expected[k]) | set(got[k])
            if not _same(expected[k].get(f), got[k].get(f))]
    assert not diff, f"{len(diff)} field values differ, e.g. {diff[:5]}"
