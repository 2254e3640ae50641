"""Unit conversions to the canonical units (pint)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parkmon.errors import ParkmonError
from parkmon.units import (
    UnitMismatchError,
    UnknownUnitError,
    emission_factor_info,
    from_canonical,
    parse_quantity,
    to_canonical,
    unit_info,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "unit", "canonical", "expected"),
    [
        (1500.0, "kWh", "MWh", 1.5),
        (3.6, "GJ", "MWh", 1.0),
        (1.0, "TJ", "MWh", 1000 / 3.6),
        (2500.0, "kg", "t", 2.5),
        (1000.0, "L", "m3", 1.0),
        (7.0, "m3", "m3", 7.0),
        (12.0, "MW", "MWh/h", 12.0),
        (500.0, "kW", "MWh/h", 0.5),
        (8766.0, "t/yr", "t/h", 1.0),  # pint's year is 365.25 days
        (24.0, "t/day", "t/h", 1.0),
        (1.0, "m3/s", "m3/h", 3600.0),
        (1.0, "mmBtu", "MWh", 0.29307107),
    ],
)
def test_to_canonical(value: float, unit: str, canonical: str, expected: float) -> None:
    assert to_canonical(value, unit, canonical) == pytest.approx(expected, rel=1e-6)


def test_dimension_mismatch_raises_typed_error_with_reason() -> None:
    with pytest.raises(UnitMismatchError) as info:
        to_canonical(1.0, "kW", "MWh")
    assert isinstance(info.value, ParkmonError)
    assert info.value.reason == "unit_mismatch"
    assert "'kW' cannot be converted to 'MWh'" in str(info.value)


def test_unknown_unit_raises_typed_error_with_reason() -> None:
    with pytest.raises(UnknownUnitError) as info:
        to_canonical(1.0, "bananas", "t")
    assert info.value.reason == "unknown_unit"


def test_empty_unit_is_unknown() -> None:
    with pytest.raises(UnknownUnitError):
        unit_info(" ")


@pytest.mark.parametrize(
    ("unit", "dimension", "is_rate", "canonical"),
    [("kWh", "energy", False, "MWh"), ("kW", "energy", True, "MWh/h"), ("kg", "mass", False, "t"),
     ("t/h", "mass", True, "t/h"), ("m3", "volume", False, "m3"), ("Nm3/h", "volume", True, "m3/h")],
)
def test_unit_info(unit: str, dimension: str, is_rate: bool, canonical: str) -> None:
    info = unit_info(unit)
    assert (info.dimension, info.is_rate, info.canonical_unit) == (dimension, is_rate, canonical)


def test_temperature_is_not_a_flow_unit() -> None:
    with pytest.raises(UnitMismatchError):
        unit_info("degC")


def test_parse_quantity() -> None:
    q = parse_quantity("200000 t/yr")
    assert q.info.canonical_unit == "t/h"
    assert q.value == pytest.approx(200000 / 8766)
    assert parse_quantity(5, default_unit="MW").value == 5.0
    with pytest.raises(UnitMismatchError, match="has no unit"):
        parse_quantity(5)
    with pytest.raises(UnitMismatchError, match="cannot read quantity"):
        parse_quantity("lots t/h")


def test_emission_factor_units() -> None:
    dim, scale = emission_factor_info("t/TJ")
    assert dim == "energy"
    assert 56.1 * scale == pytest.approx(0.20196)  # KPIS.md: 56.1 t/TJ = 0.202 kg/kWh
    assert emission_factor_info("kg/kWh") == ("energy", pytest.approx(1.0))
    assert emission_factor_info("kg/m3") == ("volume", pytest.approx(0.001))
    with pytest.raises(UnitMismatchError):
        emission_factor_info("t/h")


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
       st.sampled_from([("kWh", "MWh"), ("GJ", "MWh"), ("kg", "t"), ("L/h", "m3/h"), ("kW", "MWh/h")]))
def test_round_trip(value: float, units: tuple[str, str]) -> None:
    unit, canonical = units
    back = from_canonical(to_canonical(value, unit, canonical), canonical, unit)
    assert back == pytest.approx(value, rel=1e-9, abs=1e-9)
