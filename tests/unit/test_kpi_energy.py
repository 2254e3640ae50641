import pytest
from streams_test_park import model, quantities

from streams.core.kpis import energy

pytestmark = pytest.mark.unit

M = model()
Q = quantities(M)


@pytest.mark.parametrize("ent, e_in, intensity, recovered", [
    ("P", 100 + 20 + 5, None, 20 / 125),          # no product in t at the power station
    ("G", 10 + 8, 18 / 50, 0.0),
    ("R", 20, 20 / 450, 0.0),
    ("N", 45 + 10, 55 / 2, 45 / 55),               # partner steam is recovered energy
    (None, 218, 218 / (50 + 450 + 2), (20 + 45) / 218),
])
def test_energy_indicators(ent, e_in, intensity, recovered):
    v = energy.compute(M, Q, ent)
    assert v["energy_input_mwh"] == pytest.approx(e_in)
    if intensity is None:
        assert v["energy_intensity_mwh_per_t"] is None
    else:
        assert v["energy_intensity_mwh_per_t"] == pytest.approx(intensity)
    assert v["recovered_energy_share"] == pytest.approx(recovered)
