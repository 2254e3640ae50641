import pytest

from parkmon.errors import PayloadError
from streams.core.engine import KpiEngine, KpiResult
from streams.core.model import Factor, KpiModel, MeterInfo
from streams.core.windows import LateReading, WindowEngine, WindowResult

pytestmark = pytest.mark.unit

MIN = 60_000


def _model():
    meters = {
        "c": MeterInfo("c", "e1", "electricity", "input", "counter", "MWh", origin="grid"),
        "r": MeterInfo("r", "e1", "steam", "output", "rate", "MWh", max_gap_ms=5 * MIN),
    }
    return KpiModel("pk", ("e1",), meters, (), {"electricity": Factor("electricity", 0.5, "MWh")})


def _wins(outs):
    return [o for o in outs if isinstance(o, WindowResult)]


def test_counter_window_quantity_and_close_on_watermark():
    e = WindowEngine(_model(), MIN, grace_ms=MIN)
    assert e.ingest("c", 0, 100.0) == []
    assert e.ingest("c", 30_000, 101.0) == []
    outs = e.ingest("c", 60_000, 103.0)  # watermark reaches the end of [0, 60s): it closes
    [w] = _wins(outs)
    assert (w.window_start_ms, w.window_end_ms, w.revision) == (0, MIN, 0)
    assert w.quantity == pytest.approx(1.0)  # first reading only anchors
    assert w.agg.co2e_t == pytest.approx(0.5)
    assert (w.agg.count, w.agg.vmin, w.agg.vmax) == (2, 100.0, 101.0)
    outs = e.ingest("c", 120_000, 104.0)
    [w2] = _wins(outs)
    assert w2.window_start_ms == MIN and w2.quantity == pytest.approx(2.0)  # 101 -> 103


def test_rate_meter_integrated():
    e = WindowEngine(_model(), MIN, 0)
    outs = []
    for t in range(0, 121_000, 10_000):  # 6 MWh/h constant, reading every 10 s
        outs += e.ingest("r", t, 6.0)
    outs += e.advance(10 * MIN)
    # second window [60, 120): six 10-s intervals ending at 60..110 s = 1 min at 6 MWh/h
    w = {x.window_start_ms: x for x in outs if isinstance(x, WindowResult)}
    assert w[MIN].quantity == pytest.approx(0.1)
    assert w[2 * MIN].quantity == pytest.approx(6.0 * 10 / 3600)  # the one at 120 s


def test_late_within_grace_reemits_corrected_result():
    e = WindowEngine(_model(), MIN, grace_ms=2 * MIN)
    e.ingest("c", 0, 100.0)
    e.ingest("c", 50_000, 105.0)
    [w0] = _wins(e.ingest("c", 70_000, 106.0))
    assert w0.quantity == pytest.approx(5.0)
    # a reading at 55 s arrives late (watermark 70 s, window closed, grace 2 min): it does not
    # change the window's sum for a counter (105 -> 105.5 -> 106 spans both windows) ...
    outs = e.ingest("c", 55_000, 105.5)
    revs = {x.window_start_ms: x for x in _wins(outs)}
    assert revs[0].revision == 1 and revs[0].quantity == pytest.approx(5.5)
    assert e.stats.corrections == 1
    # ... and the next window (not closed yet) now starts from 105.5
    [w1] = _wins(e.ingest("c", 121_000, 107.0))
    assert w1.window_start_ms == MIN and w1.quantity == pytest.approx(0.5)


def test_late_beyond_grace_counted_and_returned():
    e = WindowEngine(_model(), MIN, grace_ms=MIN)
    e.ingest("c", 0, 1.0)
    e.ingest("c", 200_000, 9.0)  # final until 120 s
    [late] = e.ingest("c", 30_000, 2.0)
    assert isinstance(late, LateReading) and late.watermark_ms == 200_000
    assert e.stats.late == 1
    # the window [180, 240) still starts from the anchor 1.0 -> 9.0 untouched
    [w] = _wins(e.advance(400_000))
    assert w.quantity == pytest.approx(8.0)


def test_duplicates_counted_once():
    e = WindowEngine(_model(), MIN, MIN)
    for _ in range(3):
        e.ingest("c", 0, 1.0)
        e.ingest("c", 10_000, 2.0)
    e.ingest("c", 10_000, 7.0)  # conflicting duplicate: first kept
    [w] = _wins(e.advance(MIN))
    assert w.quantity == pytest.approx(1.0)
    assert e.stats.duplicates == 5 and e.stats.conflicting_duplicates == 1


def test_bad_input_is_typed():
    e = WindowEngine(_model())
    with pytest.raises(PayloadError) as ei:
        e.ingest("nope", 0, 1.0)
    assert ei.value.reason == "unknown_meter"
    with pytest.raises(PayloadError) as ei:
        e.ingest("c", 0, float("nan"))
    assert ei.value.reason == "not_finite"


def test_snapshot_restore_continues_identically():
    readings = [("c", t * 7_000, 100 + t * 0.3) for t in range(60)] + \
               [("r", t * 9_000, 5.0 + t % 4) for t in range(50)]
    readings.sort(key=lambda r: r[1])
    a = KpiEngine(_model(), MIN, MIN)
    full = a.ingest_many(readings)
    b = KpiEngine(_model(), MIN, MIN)
    part = b.ingest_many(readings[:40])
    import json

    c = KpiEngine.restore(_model(), json.loads(json.dumps(b.snapshot())))
    part += c.ingest_many(readings[40:])
    key = lambda o: (type(o).__name__, getattr(o, "meter", getattr(o, "entity", "")),  # noqa: E731
                     getattr(o, "view", ""), o.window_start_ms)
    assert sorted(map(repr, sorted(full, key=key))) == sorted(map(repr, sorted(part, key=key)))


def test_engine_emits_base_and_rolling_kpis():
    e = KpiEngine(_model(), MIN, 0)
    outs = []
    for i in range(16):  # counter +1 MWh per minute, a reading at every minute
        outs += e.ingest("c", i * MIN, float(i))
    k = [o for o in outs if isinstance(o, KpiResult) and o.scope == "park"]
    base = {o.window_start_ms: o for o in k if o.view == "1m"}
    assert base[MIN].values["energy_input_mwh"] == pytest.approx(1.0)
    assert base[MIN].values["scope2_t_co2e"] == pytest.approx(0.5)
    q = [o for o in k if o.view == "15m"]
    last = max(q, key=lambda o: o.window_end_ms)
    assert last.window_end_ms == 15 * MIN
    assert last.values["energy_input_mwh"] == pytest.approx(14.0)  # windows 1..14 each 1 MWh
