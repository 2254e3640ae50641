"""Synthetic parks: exact sizes, valid, deterministic, with a hub-shaped exchange network."""

from __future__ import annotations

from collections import Counter

import pytest

from parkmon.park.generator import generate_park, generate_park_data

pytestmark = pytest.mark.unit


def test_sizes_are_exact_and_the_park_validates() -> None:
    park = generate_park(60, 600, seed=3)
    assert (len(park.enterprises), len(park.meters)) == (60, 600)
    assert len(park.exchanges) > 50
    for x in park.exchanges:
        sup = park.meter(x.suppliers[0])
        for c in x.consumers:
            cm = park.meter(c)
            assert cm.enterprise != sup.enterprise
            assert (cm.origin, cm.direction, cm.dimension) == ("partner", "input", sup.dimension)
    assert {m.unit for m in park.meters} >= {"kWh", "MWh", "t", "kg", "m3"}  # mixed units


def test_same_seed_same_park() -> None:
    assert generate_park_data(20, 150, seed=1) == generate_park_data(20, 150, seed=1)
    assert generate_park_data(20, 150, seed=1) != generate_park_data(20, 150, seed=2)


def test_suppliers_concentrate_on_hubs() -> None:
    park = generate_park(200, 3000, seed=7)
    out_degree = Counter(park.meter(x.suppliers[0]).enterprise for x in park.exchanges)
    top = sum(n for _, n in out_degree.most_common(10))
    assert top / len(park.exchanges) > 0.2  # 5 % of the enterprises supply > 20 % of exchanges


def test_too_few_meters_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4 meters per enterprise"):
        generate_park_data(10, 30)


def test_every_fuel_and_grid_input_has_an_emission_factor() -> None:
    park = generate_park(80, 1200, seed=5)
    for m in park.meters:
        needs = m.direction == "input" and (
            m.carrier in ("fuel_gas", "fuel_oil", "coal", "biomass")
            or (m.carrier in ("electricity", "heat", "steam") and m.origin == "grid"))
        if needs:
            f = park.emission_factors.get(m.carrier)
            assert f is not None and f.per_unit == m.quantity_unit, m.id
