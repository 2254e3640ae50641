"""The park description as frozen pydantic models (all quantities already in canonical units).

Build one with `parkmon.park.load_park(path)`; the loader validates references and units and
reports every problem with its path in the file. Canonical units: see `parkmon.units`.
"""

from __future__ import annotations

import bisect
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, ConfigDict

from parkmon.park.sharing import BenefitSharing, SharingRule

Carrier = Literal[
    "electricity", "heat", "steam", "fuel_gas", "fuel_oil", "coal", "biomass",
    "water", "wastewater", "material", "co2", "product",
]
CARRIERS: tuple[str, ...] = Carrier.__args__  # type: ignore[attr-defined]
Direction = Literal["input", "output", "emission"]
Origin = Literal["virgin", "grid", "secondary", "partner"]
#: where an output of by-products or waste goes, by EU Waste Framework Directive (2008/98/EC)
#: operation: recycling = reuse and R2-R11, energy_recovery = R1, disposal = D1-D15
Fate = Literal["recycling", "energy_recovery", "disposal"]
FATES: tuple[str, ...] = Fate.__args__  # type: ignore[attr-defined]
#: carriers whose outputs are by-products or waste (and may have a fate); wastewater is outside
#: the Waste Framework Directive (art. 2(2)(a)), products are not waste
WASTE_CARRIERS: tuple[str, ...] = ("material", "biomass")
MeterKind = Literal["counter", "rate"]
Dimension = Literal["energy", "mass", "volume"]
Criticality = Literal["low", "medium", "high", "critical"]
Profile = Literal["continuous", "shifts", "daytime", "heat_demand", "weekdays"]
Scope = Literal["scope1", "scope2", "scope3"]

# Which physical dimensions a carrier may be metered in.
CARRIER_DIMENSIONS: dict[str, tuple[str, ...]] = {
    "electricity": ("energy",),
    "heat": ("energy",),
    "steam": ("energy", "mass"),
    "fuel_gas": ("energy", "volume", "mass"),
    "fuel_oil": ("energy", "mass", "volume"),
    "coal": ("mass", "energy"),
    "biomass": ("mass", "energy", "volume"),
    "water": ("volume", "mass"),
    "wastewater": ("volume", "mass"),
    "material": ("mass", "volume"),
    "co2": ("mass",),
    "product": ("mass", "volume", "energy"),
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Enterprise(_Frozen):
    id: str
    name: str
    sector: str


class Meter(_Frozen):
    """One meter. `unit` is as written in the file; everything numeric is canonical.

    range_min / range_max bound the reported value in canonical units: the rate (canonical per
    hour) for a rate meter, the cumulative register (0 .. rollover) for a counter meter.
    capacity is the largest physical flow (canonical per hour) for both kinds.
    """

    id: str
    enterprise: str
    carrier: Carrier
    material: str | None = None
    direction: Direction
    origin: Origin | None = None
    #: outputs of by-products and waste only: where the flow goes outside the park's exchanges
    #: (None: not known, counted as not valorised unless the meter supplies an exchange)
    fate: Fate | None = None
    kind: MeterKind
    unit: str
    canonical_unit: str  # "MWh" | "t" | "m3" for counters, "MWh/h" | "t/h" | "m3/h" for rates
    quantity_unit: str  # "MWh" | "t" | "m3" (the canonical quantity, whatever the kind)
    dimension: Dimension
    scale: float  # canonical value = value in `unit` * scale
    period_s: float = 60.0
    range_min: float = 0.0
    range_max: float = float("inf")
    capacity: float  # canonical quantity per hour
    nominal: float | None = None  # typical rate, canonical per hour (simulator baseline)
    rollover: float | None = None  # counters: register wraps to 0 after this (canonical)
    profile: Profile = "continuous"
    name: str | None = None

    @property
    def rate_unit(self) -> str:
        return f"{self.quantity_unit}/h"

    def to_canonical(self, value: float) -> float:
        """Convert a value expressed in this meter's own `unit`."""
        return value * self.scale


class Exchange(_Frozen):
    """A symbiotic flow: supplier output meter(s) -> consumer input meter(s).

    nominal_rate is canonical quantity per hour (`rate_unit`); the consumers together receive the
    suppliers' output times (1 - loss_fraction), split by `consumer_shares` (sum 1).
    """

    id: str
    name: str | None = None
    material: str | None = None
    carrier: Carrier
    suppliers: tuple[str, ...]
    consumers: tuple[str, ...]
    consumer_shares: tuple[float, ...]
    nominal_rate: float
    quantity_unit: str
    dimension: Dimension
    loss_fraction: float = 0.0
    buffer_h: float = 0.0
    criticality: Criticality = "medium"
    since: int | None = None
    source: str | None = None
    #: benefit sharing (parkmon/park/sharing.py): currency per canonical unit delivered that the
    #: consumer no longer pays for virgin input, and the supplier no longer pays for disposal
    virgin_price: float = 0.0
    disposal_price: float = 0.0
    sharing: SharingRule | None = None  # None: the park's default rule

    @property
    def rate_unit(self) -> str:
        return f"{self.quantity_unit}/h"


class Alternative(_Frozen):
    """Who could step in for a material / carrier, with spare capacity (canonical per hour)."""

    enterprise: str  # an enterprise id of the park, or a free name when external
    external: bool = False
    carrier: Carrier
    material: str | None = None
    spare_capacity: float
    quantity_unit: str
    lead_time_h: float = 0.0
    exchanges: tuple[str, ...] = ()  # exchanges it can back up; empty = any of that material
    note: str | None = None

    @property
    def rate_unit(self) -> str:
        return f"{self.quantity_unit}/h"


class FactorPoint(_Frozen):
    start_ms: int
    value: float  # t CO2e per canonical quantity


class EmissionFactor(_Frozen):
    """t CO2e per canonical quantity of `carrier` (per MWh, t or m3: `per_unit`)."""

    carrier: Carrier
    value: float
    per_unit: str  # "MWh" | "t" | "m3"
    dimension: Dimension
    unit: str  # as written in the file, e.g. "kg/kWh"
    source: str
    scope: Scope | None = None
    series: tuple[FactorPoint, ...] = ()

    def at(self, ts_ms: int) -> float:
        """The factor valid at event time ts_ms (the latest series point at or before it)."""
        if not self.series:
            return self.value
        starts = [p.start_ms for p in self.series]
        i = bisect.bisect_right(starts, ts_ms) - 1
        return self.value if i < 0 else self.series[i].value


class MaintenanceWindow(_Frozen):
    enterprise: str
    meters: tuple[str, ...] = ()  # empty: the whole enterprise
    start_ms: int
    end_ms: int
    description: str | None = None

    def covers(self, meter: Meter, ts_ms: int) -> bool:
        if not (self.start_ms <= ts_ms < self.end_ms):
            return False
        return meter.id in self.meters if self.meters else meter.enterprise == self.enterprise


class Product(_Frozen):
    meter: str
    enterprise: str
    name: str | None = None


class Park(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    timezone: str
    enterprises: tuple[Enterprise, ...]
    meters: tuple[Meter, ...]
    exchanges: tuple[Exchange, ...] = ()
    alternatives: tuple[Alternative, ...] = ()
    emission_factors: dict[str, EmissionFactor] = {}  # keyed by carrier
    maintenance: tuple[MaintenanceWindow, ...] = ()
    products: tuple[Product, ...] = ()
    benefit_sharing: BenefitSharing | None = None
    source: str | None = None

    @cached_property
    def meters_by_id(self) -> dict[str, Meter]:
        return {m.id: m for m in self.meters}

    @cached_property
    def enterprises_by_id(self) -> dict[str, Enterprise]:
        return {e.id: e for e in self.enterprises}

    @cached_property
    def exchanges_by_id(self) -> dict[str, Exchange]:
        return {x.id: x for x in self.exchanges}

    @cached_property
    def meters_of(self) -> dict[str, tuple[Meter, ...]]:
        """enterprise id -> its meters, in file order."""
        out: dict[str, list[Meter]] = {e.id: [] for e in self.enterprises}
        for m in self.meters:
            out.setdefault(m.enterprise, []).append(m)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def exchange_of_meter(self) -> dict[str, Exchange]:
        """meter id -> the exchange it supplies or receives (each meter is in at most one)."""
        out: dict[str, Exchange] = {}
        for x in self.exchanges:
            for mid in (*x.suppliers, *x.consumers):
                out[mid] = x
        return out

    def meter(self, meter_id: str) -> Meter:
        """The meter with this id; KeyError naming the id when there is none."""
        try:
            return self.meters_by_id[meter_id]
        except KeyError:
            raise KeyError(f"no meter {meter_id!r} in park {self.id!r}") from None

    def enterprise(self, enterprise_id: str) -> Enterprise:
        try:
            return self.enterprises_by_id[enterprise_id]
        except KeyError:
            raise KeyError(f"no enterprise {enterprise_id!r} in park {self.id!r}") from None

    def exchange(self, exchange_id: str) -> Exchange:
        try:
            return self.exchanges_by_id[exchange_id]
        except KeyError:
            raise KeyError(f"no exchange {exchange_id!r} in park {self.id!r}") from None

    def emission_factor(self, carrier: str, ts_ms: int | None = None) -> float | None:
        """t CO2e per canonical quantity for `carrier` at ts_ms, None when the park has none."""
        f = self.emission_factors.get(carrier)
        if f is None:
            return None
        return f.value if ts_ms is None else f.at(ts_ms)

    def alternatives_for(self, exchange_id: str) -> tuple[Alternative, ...]:
        """Alternatives that could back up the exchange: same carrier and material, and either
        listing the exchange explicitly or listing none; not the exchange's own suppliers."""
        x = self.exchange(exchange_id)
        own = {self.meters_by_id[s].enterprise for s in x.suppliers}
        return tuple(
            a for a in self.alternatives
            if a.carrier == x.carrier and a.material == x.material
            and (not a.exchanges or x.id in a.exchanges)
            and a.enterprise not in own
        )

    def in_maintenance(self, meter_id: str, ts_ms: int) -> bool:
        m = self.meter(meter_id)
        return any(w.covers(m, ts_ms) for w in self.maintenance)
