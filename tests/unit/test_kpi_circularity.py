import pytest
from streams_test_park import model, quantities

from streams.core.kpis import circularity

pytestmark = pytest.mark.unit

M = model()
Q = quantities(M)


@pytest.mark.parametrize("ent, expected", [
    ("P", None),                # no material input at the power station
    ("G", 28 / (28 + 12)),      # partner gypsum over all gypsum
    ("R", 0.0),                 # only virgin crude
    ("N", None),
    (None, 28 / (28 + 12 + 500)),
])
def test_material_circularity_ratio(ent, expected):
    assert circularity.material_circularity_ratio(M, Q, ent) == pytest.approx(expected)


@pytest.mark.parametrize("ent, expected", [
    ("P", (30 + 20) / (30 + 20 + 10)),  # gypsum to partner + fly ash recycled, slag landfilled
    ("G", 0.0),
    ("R", 4 / 4),                        # sulphur to fertiliser (recycling)
    ("N", 100 / 100),
    (None, (30 + 20 + 4 + 100) / (60 + 5 + 4 + 100)),
])
def test_waste_valorisation_rate(ent, expected):
    assert circularity.waste_valorisation_rate(M, Q, ent) == pytest.approx(expected)


@pytest.mark.parametrize("ent, expected", [
    ("P", 30 / 60), ("G", 0.0), ("R", 0.0), ("N", 0.0), (None, 30 / 169),
])
def test_symbiotic_exchange_share(ent, expected):
    assert circularity.symbiotic_exchange_share(M, Q, ent) == pytest.approx(expected)


@pytest.mark.parametrize("ent, expected", [
    ("P", 390 / (1000 + 390)), ("G", None), ("R", None), ("N", 0.0),
    (None, 390 / (1000 + 390 + 300)),
])
def test_water_reuse_rate(ent, expected):
    assert circularity.water_reuse_rate(M, Q, ent) == pytest.approx(expected)


def test_undefined_when_nothing_flows():
    assert circularity.material_circularity_ratio(M, {}, None) is None
