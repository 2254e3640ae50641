import pytest
from streams_test_park import model, quantities

from parkmon.errors import ConfigError
from streams.core.kpis import carbon
from streams.core.model import Factor, KpiModel

pytestmark = pytest.mark.unit

M = model()
Q = quantities(M)


@pytest.mark.parametrize("ent, s1, s2, intensity", [
    ("P", 100 * 0.341 + 20 * 0.202, 5 * 0.2, None),
    ("G", 10 * 0.202, 8 * 0.2, (2.02 + 1.6) / 50),
    ("R", 0.0, 20 * 0.2, 4.0 / 450),
    ("N", 0.0, 10 * 0.2, 2.0 / 2),                 # partner steam is P's scope 1, not N's
    (None, 34.1 + 4.04 + 2.02, 1.0 + 1.6 + 4.0 + 2.0, (40.16 + 8.6) / 502),
])
def test_scopes_and_intensity(ent, s1, s2, intensity):
    v = carbon.compute(M, Q, ent)
    assert v["scope1_t_co2e"] == pytest.approx(s1)
    assert v["scope2_t_co2e"] == pytest.approx(s2)
    if intensity is None:
        assert v["carbon_intensity_t_co2e_per_t"] is None
    else:
        assert v["carbon_intensity_t_co2e_per_t"] == pytest.approx(intensity)


def test_avoided_emissions_per_exchange_and_consumer():
    by_id = {x.id: x for x in M.exchanges}
    # gypsum: 28 t delivered x (0.010 - 0.002) t CO2e/t
    assert carbon.avoided(Q, by_id["X_gyp"]) == pytest.approx(28 * 0.008)
    # steam: 45 MWh delivered instead of an own gas boiler at 90 %: 45/0.9*0.202 = 10.1, minus
    # 0.05 t/MWh allocated to the steam: 2.25
    assert carbon.avoided(Q, by_id["X_steam"]) == pytest.approx(10.1 - 2.25)
    assert carbon.avoided(Q, by_id["X_gas"]) is None  # no baseline configured
    assert carbon.compute(M, Q, "G")["avoided_t_co2e"] == pytest.approx(0.224)
    assert carbon.compute(M, Q, "N")["avoided_t_co2e"] == pytest.approx(7.85)
    assert carbon.compute(M, Q, None)["avoided_t_co2e"] == pytest.approx(0.224 + 7.85)


def test_time_varying_grid_factor_taken_at_window_start():
    f = Factor("electricity", 0.3, "MWh", series=((1000, 0.1), (2000, 0.05)))
    m2 = KpiModel(M.park_id, M.enterprises, M.meters, M.exchanges, {**M.factors, "electricity": f})
    assert m2.co2e_t(m2.meters["R.elec"], 20, 500) == pytest.approx(20 * 0.3)
    assert m2.co2e_t(m2.meters["R.elec"], 20, 1500) == pytest.approx(20 * 0.1)
    assert m2.co2e_t(m2.meters["R.elec"], 20, 2000) == pytest.approx(20 * 0.05)


def test_missing_factor_is_a_config_error():
    m2 = KpiModel(M.park_id, M.enterprises, M.meters, M.exchanges,
                  {k: v for k, v in M.factors.items() if k != "coal"})
    with pytest.raises(ConfigError, match="coal"):
        m2.co2e_t(m2.meters["P.coal"], 1.0, 0)
