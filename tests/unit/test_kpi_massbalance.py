import pytest
from streams_test_park import model, quantities

from streams.core.kpis import compute_all, massbalance

pytestmark = pytest.mark.unit

M = model(rel_tolerance=0.05)
Q = quantities(M)
X = {x.id: x for x in M.exchanges}


def test_gypsum_short_by_more_than_tolerance_is_flagged():
    v = massbalance.compute(M, Q, X["X_gyp"])
    assert (v["outflow"], v["inflow"]) == (30, 28)
    assert v["imbalance"] == pytest.approx(2.0)          # 30 sent, 28 arrived, no loss allowed
    assert v["relative_imbalance"] == pytest.approx(2 / 30)
    assert v["out_of_tolerance"] is True                  # 2 t > 5 % of 30 t = 1.5 t


def test_steam_loss_within_allowance_is_not_flagged():
    v = massbalance.compute(M, Q, X["X_steam"])
    assert v["allowed_loss"] == pytest.approx(5.0)        # 10 % of 50 MWh
    assert v["imbalance"] == pytest.approx(0.0)           # 50 * 0.9 - 45
    assert v["out_of_tolerance"] is False


def test_small_water_imbalance_within_tolerance():
    v = massbalance.compute(M, Q, X["X_water"])
    assert v["imbalance"] == pytest.approx(10.0)          # 400 - 390 m3
    assert v["out_of_tolerance"] is False                 # 10 <= 0.05 * 400 = 20


def test_tighter_tolerance_flags_water():
    m2 = model(rel_tolerance=0.01)
    assert massbalance.compute(m2, Q, X["X_water"])["out_of_tolerance"] is True  # 10 > 4


def test_compute_all_covers_park_enterprises_and_exchanges():
    rows = compute_all(M, Q)
    keys = {(s, e) for s, e, _ in rows}
    assert keys == {("park", "testpark"), ("enterprise", "P"), ("enterprise", "G"),
                    ("enterprise", "R"), ("enterprise", "N"), ("exchange", "X_gyp"),
                    ("exchange", "X_steam"), ("exchange", "X_gas"), ("exchange", "X_water")}
