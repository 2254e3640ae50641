"""Points of the core and the InfluxDB sink's retry / dead-letter behaviour, with a fake writer."""

import math

import pytest

from parkmon.errors import SinkBackpressure, SinkError
from streams.core.points import PointSpec
from streams.influx_sink import InfluxSink, WriteFailed, line_of

pytestmark = pytest.mark.unit


class FakeInflux:
    """A LineWriter that fails according to a script, then stores lines by series + time."""

    def __init__(self, script=(), refuse=lambda line: False):
        self.script = list(script)  # statuses to raise first (None: connection error)
        self.refuse = refuse
        self.stored: dict[str, str] = {}
        self.calls = 0

    def __call__(self, lines):
        self.calls += 1
        if self.script:
            st = self.script.pop(0)
            raise WriteFailed(st, "scripted", retry_after_s=0.01 if st == 429 else None)
        if any(self.refuse(x) for x in lines):
            raise WriteFailed(400, "partial write: field type conflict")
        for x in lines:
            series, fields, ts = x.rsplit(" ", 2)[0], x.rsplit(" ", 2)[1], x.rsplit(" ", 2)[2]
            self.stored[f"{series} {ts}"] = fields


def _p(i, **fields):
    return PointSpec("kpi", (("entity", f"e{i}"), ("park", "pk")),
                     tuple(fields.items()) or (("v", float(i)),), 1000 * i)


def _sink(fake, dead=None, **kw):
    return InfluxSink(fake, on_deadletter=(lambda p, r: dead.append((p, r))) if dead is not None
                      else None, sleep=lambda s: None, **kw)


def test_line_protocol_escapes_and_types():
    p = PointSpec("meter window", (("meter", "a b,c=d"),), (("q", 1.5), ("n", 3), ("ok", True),
                                                            ("s", 'x"y')), 42)
    assert line_of(p) == 'meter\\ window,meter=a\\ b\\,c\\=d q=1.5,n=3i,ok=true,s="x\\"y" 42'


def test_retries_until_accepted():
    fake = FakeInflux(script=[None, 503, 500])
    s = _sink(fake)
    s.write([_p(1), _p(2)])
    assert len(fake.stored) == 2 and s.stats.retries == 3 and s.stats.points_written == 2


def test_gives_up_with_typed_errors_after_max_total_s():
    clock = iter(range(0, 10_000, 5))
    s = InfluxSink(FakeInflux(script=[None] * 100), sleep=lambda _: None,
                   monotonic=lambda: float(next(clock)), max_total_s=20)
    with pytest.raises(SinkError):
        s.write([_p(1)])
    clock2 = iter(range(0, 10_000, 5))
    s2 = InfluxSink(FakeInflux(script=[429] * 100), sleep=lambda _: None,
                    monotonic=lambda: float(next(clock2)), max_total_s=20)
    with pytest.raises(SinkBackpressure) as ei:
        s2.write([_p(1)])
    assert ei.value.retry_after_s == pytest.approx(0.01)


def test_refused_point_is_isolated_and_deadlettered_others_written():
    dead = []
    fake = FakeInflux(refuse=lambda line: "entity=e3" in line)
    s = _sink(fake, dead)
    s.write([_p(i) for i in range(8)])
    assert len(fake.stored) == 7
    assert [p.tags[0][1] for p, _ in dead] == ["e3"] and s.stats.deadlettered == 1
    assert dead[0][1].startswith("influx_400")


def test_nonfinite_fields_encoded_visibly_not_dropped():
    dead = []
    fake = FakeInflux()
    s = _sink(fake, dead)
    s.write([_p(1, a=math.nan, b=2.0, c=math.inf)])
    [(key, fields)] = fake.stored.items()
    assert fields == 'b=2.0,nonfinite_fields="a,c"'
    assert s.stats.nonfinite_fields == 2 and dead[0][1] == "not_finite"


def test_replay_overwrites_same_series_and_timestamp():
    fake = FakeInflux()
    s = _sink(fake)
    s.write([_p(1, v=1.0)])
    s.write([_p(1, v=2.0)])
    assert list(fake.stored.values()) == ["v=2.0"]
