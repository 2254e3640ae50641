"""KpiModel.from_park on the shipped Kalundborg example, and the engine driven by plain tuples."""

import pytest

from parkmon.errors import ConfigError
from parkmon.park import example_park_path, load_park
from streams.core import KpiEngine, KpiModel, KpiResult, WindowResult
from streams.core.model import ExchangeBaseline, KpiConfig

pytestmark = pytest.mark.unit

PARK = load_park(example_park_path("kalundborg"))


def test_every_meter_and_exchange_role_is_mapped():
    m = KpiModel.from_park(PARK)
    assert set(m.meters) == {x.id for x in PARK.meters}
    for x in PARK.exchanges:
        assert all(m.meters[s].exchange_role == "supplier" for s in x.suppliers)
        assert all(m.meters[c].exchange_role == "consumer" for c in x.consumers)


def test_heat_exchange_default_baseline_is_own_gas_boiler_and_config_overrides():
    gas = PARK.emission_factors["fuel_gas"].value
    heat = next(x for x in PARK.exchanges if x.carrier == "heat" and x.quantity_unit == "MWh")
    m = KpiModel.from_park(PARK)
    assert {x.id: x for x in m.exchanges}[heat.id].baseline_t_per_unit == \
        pytest.approx(gas / 0.9)
    cfg = KpiConfig(exchange_baselines={heat.id: ExchangeBaseline(
        baseline_t_per_unit=0.3, allocated_t_per_unit=0.1, source="test")})
    x = {x.id: x for x in KpiModel.from_park(PARK, cfg).exchanges}[heat.id]
    assert (x.baseline_t_per_unit, x.allocated_t_per_unit) == (0.3, 0.1)


def test_missing_factor_for_a_burnt_fuel_fails_at_start():
    factors = {k: v for k, v in PARK.emission_factors.items() if k != "coal"}
    uses_coal = any(mm.carrier == "coal" and mm.direction == "input" for mm in PARK.meters)
    p2 = PARK.model_copy(update={"emission_factors": factors})
    if uses_coal:
        with pytest.raises(ConfigError):
            KpiModel.from_park(p2)
    factors = {k: v for k, v in PARK.emission_factors.items() if k != "electricity"}
    with pytest.raises(ConfigError, match="electricity"):
        KpiModel.from_park(PARK.model_copy(update={"emission_factors": factors}))


def test_engine_from_tuples_gives_enterprise_energy():
    eng = KpiEngine(KpiModel.from_park(PARK), 60_000, 0)
    t0 = 1_790_000_040_000 - 1_790_000_040_000 % 60_000
    outs = eng.ingest_many(("gyproc.power_in", t0 + i * 20_000, 10.0 + i) for i in range(7))
    wins = {o.window_start_ms: o.quantity for o in outs if isinstance(o, WindowResult)}
    assert wins == {t0: 2.0, t0 + 60_000: 3.0}  # readings at 0,20,40 s | 60,80,100 s
    k = [o for o in outs if isinstance(o, KpiResult) and o.view == "1m"
         and o.scope == "enterprise" and o.entity == "gyproc"]
    assert {o.window_start_ms: o.values["energy_input_mwh"] for o in k} == wins
    grid = PARK.emission_factors["electricity"].value
    assert [o.values["scope2_t_co2e"] for o in k if o.window_start_ms == t0] == \
        [pytest.approx(2.0 * grid)]
