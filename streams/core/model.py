"""The core's view of a park: plain frozen data the window engine and the KPI functions need.

Built from the shared park model with `KpiModel.from_park(park, config)`, or by hand in tests.
Keeping this small view separate lets the pure core run without YAML, pint or pydantic parsing.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from parkmon.errors import ConfigError
from parkmon.park.sharing import BenefitSharing, SharingRule

#: carriers whose quantity is energy when metered in MWh
ENERGY_CARRIERS = frozenset(
    {"electricity", "heat", "steam", "fuel_gas", "fuel_oil", "coal", "biomass"}
)
#: carriers that are burnt on site (scope 1 by combustion)
FUEL_CARRIERS = frozenset({"fuel_gas", "fuel_oil", "coal", "biomass"})
#: carriers bought from a grid that count in scope 2 (location-based)
PURCHASED_ENERGY_CARRIERS = frozenset({"electricity", "heat", "steam"})
#: meter origins that make an input "secondary" (by-product, recycled, reused, from a partner)
SECONDARY_ORIGINS = frozenset({"secondary", "partner"})
#: carriers whose outputs are by-products or waste (mirrors parkmon.park.model.WASTE_CARRIERS)
WASTE_CARRIERS = frozenset({"material", "biomass"})
#: where an output of by-products or waste goes, by EU Waste Framework Directive operation:
#: recycling = reuse and R2-R11, energy_recovery = R1, disposal = D1-D15 (parkmon.park.model.FATES)
FATES = frozenset({"recycling", "energy_recovery", "disposal"})


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """One meter as the KPI core sees it. `origin` describes an input (where it comes from),
    `fate` an output of by-products or waste (where it goes); a hand-built MeterInfo that mixes
    them up raises ConfigError rather than being silently left out of an indicator."""

    id: str
    enterprise: str
    carrier: str
    direction: str  # "input" | "output" | "emission"
    kind: str  # "counter" | "rate"
    quantity_unit: str  # "MWh" | "t" | "m3"
    origin: str | None = None
    material: str | None = None
    rollover: float | None = None  # counter register wraps to 0 after this value
    max_gap_ms: int = 300_000  # rate meters: no integration across a longer silence
    exchange: str | None = None  # the exchange this meter supplies or receives, if any
    exchange_role: str | None = None  # "supplier" | "consumer"
    fate: str | None = None  # by-product/waste outputs: "recycling" | "energy_recovery" | "disposal"

    def __post_init__(self) -> None:
        if self.fate is not None:
            if self.fate not in FATES:
                raise ConfigError(f"meter {self.id!r}: unknown fate {self.fate!r}; expected one "
                                  f"of {', '.join(sorted(FATES))}")
            if self.direction != "output" or self.carrier not in WASTE_CARRIERS:
                raise ConfigError(f"meter {self.id!r}: fate {self.fate!r} on a {self.carrier} "
                                  f"{self.direction} meter; only outputs of "
                                  f"{' or '.join(sorted(WASTE_CARRIERS))} have a fate")
        if self.origin is not None and self.direction != "input":
            raise ConfigError(f"meter {self.id!r}: origin {self.origin!r} on an {self.direction} "
                              "meter; only inputs have an origin (an output's destination is "
                              "its fate)")


@dataclass(frozen=True, slots=True)
class ExchangeInfo:
    id: str
    carrier: str
    quantity_unit: str
    suppliers: tuple[str, ...]
    consumers: tuple[str, ...]
    loss_fraction: float = 0.0
    material: str | None = None
    #: t CO2e per delivered unit the consumer would have emitted without the exchange
    baseline_t_per_unit: float | None = None
    #: t CO2e per delivered unit allocated to the exchanged flow itself
    allocated_t_per_unit: float = 0.0
    #: benefit sharing: currency per delivered unit of virgin input the consumer no longer buys,
    #: per supplied unit of disposal the supplier no longer pays; the rule (None: park default)
    virgin_price: float = 0.0
    disposal_price: float = 0.0
    sharing: SharingRule | None = None


@dataclass(frozen=True, slots=True)
class Factor:
    """t CO2e per `per_unit` of a carrier, optionally time-varying (series of (start_ms, value))."""

    carrier: str
    value: float
    per_unit: str
    series: tuple[tuple[int, float], ...] = ()

    def at(self, ts_ms: int) -> float:
        if not self.series:
            return self.value
        i = bisect.bisect_right([s for s, _ in self.series], ts_ms) - 1
        return self.value if i < 0 else self.series[i][1]


class ExchangeBaseline(BaseModel):
    """Configured avoided-emissions baseline of one exchange (both in t CO2e per delivered unit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    baseline_t_per_unit: float
    allocated_t_per_unit: float = 0.0
    source: str = ""


class KpiConfig(BaseModel):
    """Choices that are configuration, not code: tolerances and avoided-emission baselines."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    mass_balance_rel_tolerance: float = Field(default=0.05, ge=0)
    mass_balance_abs_tolerance: float = Field(default=0.0, ge=0)
    #: boiler efficiency of the default heat/steam baseline (own gas boiler); None: no default
    default_boiler_efficiency: float | None = 0.9
    exchange_baselines: dict[str, ExchangeBaseline] = {}


@dataclass(frozen=True)
class KpiModel:
    park_id: str
    enterprises: tuple[str, ...]
    meters: Mapping[str, MeterInfo]
    exchanges: tuple[ExchangeInfo, ...] = ()
    factors: Mapping[str, Factor] = field(default_factory=dict)
    mass_balance_rel_tolerance: float = 0.05
    mass_balance_abs_tolerance: float = 0.0
    #: benefit sharing declared in the park file (None: no credits are computed)
    benefit: BenefitSharing | None = None
    #: memo of meter selections (streams.core.kpis.base.members); not part of the value
    selection_cache: dict[Any, tuple[str, ...]] = field(
        default_factory=dict, compare=False, repr=False, hash=False)

    def co2e_t(self, meter: MeterInfo, quantity: float, ts_ms: int) -> float:
        """Emissions attributed to `quantity` of this meter at event time (0 when not emitting).

        Scope 1: fuels burnt (input of a fuel carrier) and measured CO2 emission meters.
        Scope 2: purchased grid energy (input of electricity/heat/steam with origin "grid").
        """
        scope = self.scope_of(meter)
        if scope is None:
            return 0.0
        if meter.carrier == "co2":
            return quantity if meter.quantity_unit == "t" else 0.0
        f = self.factors.get(meter.carrier)
        if f is None or f.per_unit != meter.quantity_unit:
            raise ConfigError(
                f"meter {meter.id!r}: no emission factor for carrier {meter.carrier!r} per "
                f"{meter.quantity_unit} in park {self.park_id!r}; add one to emission_factors"
            )
        return quantity * f.at(ts_ms)

    @staticmethod
    def scope_of(meter: MeterInfo) -> str | None:
        if meter.direction == "emission" and meter.carrier == "co2":
            return "scope1"
        if meter.direction != "input":
            return None
        if meter.carrier in FUEL_CARRIERS:
            return "scope1"
        if meter.carrier in PURCHASED_ENERGY_CARRIERS and meter.origin == "grid":
            return "scope2"
        return None

    @classmethod
    def from_park(cls, park: Any, config: KpiConfig | None = None) -> KpiModel:
        """Adapt a `parkmon.park.Park`. Raises ConfigError when an emitting meter lacks a factor."""
        cfg = config or KpiConfig()
        roles: dict[str, tuple[str, str]] = {}
        for x in park.exchanges:
            for s in x.suppliers:
                roles[s] = (x.id, "supplier")
            for c in x.consumers:
                roles[c] = (x.id, "consumer")
        meters: dict[str, MeterInfo] = {}
        for m in park.meters:
            xid, role = roles.get(m.id, (None, None))
            meters[m.id] = MeterInfo(
                id=m.id, enterprise=m.enterprise, carrier=m.carrier, direction=m.direction,
                kind=m.kind, quantity_unit=m.quantity_unit, origin=m.origin, material=m.material,
                rollover=m.rollover, max_gap_ms=int(max(300.0, 3 * float(m.period_s)) * 1000),
                exchange=xid, exchange_role=role, fate=m.fate,
            )
        factors = {
            carrier: Factor(carrier=carrier, value=f.value, per_unit=f.per_unit,
                            series=tuple((p.start_ms, p.value) for p in f.series))
            for carrier, f in park.emission_factors.items()
        }
        exchanges = []
        for x in park.exchanges:
            b = cfg.exchange_baselines.get(x.id)
            baseline: float | None = None
            allocated = 0.0
            if b is not None:
                baseline, allocated = b.baseline_t_per_unit, b.allocated_t_per_unit
            elif (x.carrier in ("heat", "steam") and x.quantity_unit == "MWh"
                  and cfg.default_boiler_efficiency and "fuel_gas" in factors
                  and factors["fuel_gas"].per_unit == "MWh"):
                baseline = factors["fuel_gas"].value / cfg.default_boiler_efficiency
            exchanges.append(ExchangeInfo(
                id=x.id, carrier=x.carrier, quantity_unit=x.quantity_unit,
                suppliers=tuple(x.suppliers), consumers=tuple(x.consumers),
                loss_fraction=x.loss_fraction, material=x.material,
                baseline_t_per_unit=baseline, allocated_t_per_unit=allocated,
                virgin_price=getattr(x, "virgin_price", 0.0),
                disposal_price=getattr(x, "disposal_price", 0.0),
                sharing=getattr(x, "sharing", None),
            ))
        model = cls(
            park_id=park.id, enterprises=tuple(e.id for e in park.enterprises), meters=meters,
            exchanges=tuple(exchanges), factors=factors,
            mass_balance_rel_tolerance=cfg.mass_balance_rel_tolerance,
            mass_balance_abs_tolerance=cfg.mass_balance_abs_tolerance,
            benefit=getattr(park, "benefit_sharing", None),
        )
        for mi in meters.values():
            model.co2e_t(mi, 0.0, 0)  # fail early on a missing factor
        return model
