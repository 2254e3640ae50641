"""Impact of a supply drop on a symbiotic exchange: who is hit, how much, how soon, who can step in.

Pure: built once from the park (`ImpactAnalyzer(park)`), then `analyze(exchange_id, magnitude,
start_ms, ...)` returns an `Impact`. The park's exchanges form a networkx DiGraph of enterprises:
an edge supplier -> consumer per exchange (attribute `exchanges`: the exchange ids on that link).

Model (documented in docs/alerts.md, every figure computable by hand):

- A drop of `magnitude` m (fraction of the exchange's nominal rate lost) removes
  `lost = m * nominal_rate * (1 - loss_fraction) * share_c` from consumer c (share_c: the exchange's
  consumer_shares).
- Share of the consumer's input at risk = lost / the consumer's total nominal input of the same
  carrier and material (the delivered nominal of every exchange it receives that carrier/material by,
  plus the `nominal` of its other input meters of that carrier/material, capacity when absent).
- The consumer's buffer holds `buffer_h` hours of its nominal supply from this exchange; it drains at
  m times that rate, so it is exhausted `buffer_h / m` hours after the drop started (immediately when
  buffer_h is 0). A gradual decline may give the projected exhaustion time directly.
- Second-order effects: once a consumer's buffer is exhausted, its production falls by the share of
  its input at risk (linear production, unless the exchange's criticality is "low": then the consumer
  can run without it and nothing propagates). Its output exchanges then drop by that fraction,
  starting at that time, and the same rules apply to their consumers, and so on (earliest time first,
  each enterprise expanded once, down to `min_magnitude`, at most `max_depth` links).
- Alternatives: the park's alternatives for the exchange (same carrier and material), ranked by spare
  capacity. When live rates of a park enterprise's output meters of that carrier/material are given,
  its spare capacity is the declared spare capacity capped at (sum of capacities - live output).
"""

from __future__ import annotations

import heapq
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

from parkmon.park import Exchange, Park

MS_PER_H = 3_600_000


@dataclass(frozen=True, slots=True)
class ConsumerImpact:
    enterprise: str
    meter: str
    exchange: str
    depth: int  # 1 = direct consumer, 2 = consumer of a direct consumer's output, ...
    via: str | None  # the enterprise whose shortfall caused this (None for direct consumers)
    magnitude: float  # fraction of the exchange's nominal rate lost
    lost_rate: float  # canonical quantity per hour
    rate_unit: str
    share_at_risk: float  # of the consumer's total input of that carrier/material
    buffer_h: float
    starts_at_ms: int  # when this exchange's supply starts to fall short
    buffer_exhausted_at_ms: int | None  # None when nothing is lost
    hours_to_exhaustion: float | None  # from the original drop's start
    criticality: str


@dataclass(frozen=True, slots=True)
class AlternativeOption:
    enterprise: str
    external: bool
    spare_capacity: float
    rate_unit: str
    source: str  # "park" (declared) | "live" (declared, capped by live output)
    covers_fraction: float  # spare / lost (capped at 1); 1.0 when nothing is lost
    lead_time_h: float
    note: str | None


@dataclass(frozen=True, slots=True)
class Impact:
    exchange: str
    carrier: str
    material: str | None
    supplier: str  # supplier enterprise
    supplier_meters: tuple[str, ...]
    magnitude: float
    lost_rate: float
    rate_unit: str
    start_ms: int
    consumers: tuple[ConsumerImpact, ...]
    second_order: tuple[ConsumerImpact, ...]
    alternatives: tuple[AlternativeOption, ...] = field(default=())

    @property
    def affected_enterprises(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in (*self.consumers, *self.second_order):
            seen.setdefault(c.enterprise, None)
        return list(seen)

    @property
    def earliest_exhaustion_ms(self) -> int | None:
        times = [c.buffer_exhausted_at_ms for c in self.consumers
                 if c.buffer_exhausted_at_ms is not None]
        return min(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["supplier_meters"] = list(self.supplier_meters)
        d["consumers"] = [asdict(c) for c in self.consumers]
        d["second_order"] = [asdict(c) for c in self.second_order]
        d["alternatives"] = [asdict(a) for a in self.alternatives]
        return d


class ImpactAnalyzer:
    def __init__(self, park: Park, *, min_magnitude: float = 0.01, max_depth: int = 6) -> None:
        self.park = park
        self.min_magnitude = min_magnitude
        self.max_depth = max_depth
        self.graph = self._build_graph(park)

    @staticmethod
    def _build_graph(park: Park) -> nx.DiGraph:
        g = nx.DiGraph()
        for e in park.enterprises:
            g.add_node(e.id, name=e.name, sector=e.sector)
        for x in park.exchanges:
            for s in x.suppliers:
                se = park.meter(s).enterprise
                for c in x.consumers:
                    ce = park.meter(c).enterprise
                    if g.has_edge(se, ce):
                        if x.id not in g[se][ce]["exchanges"]:
                            g[se][ce]["exchanges"].append(x.id)
                    else:
                        g.add_edge(se, ce, exchanges=[x.id])
        return g

    # -- helpers --------------------------------------------------------------------------------
    def supplier_enterprise(self, x: Exchange) -> str:
        return self.park.meter(x.suppliers[0]).enterprise

    def outputs_of(self, enterprise: str) -> list[Exchange]:
        """Exchanges supplied by `enterprise`, in park file order."""
        ids = {xid for _, _, data in self.graph.out_edges(enterprise, data=True)
               for xid in data["exchanges"]}
        return [x for x in self.park.exchanges if x.id in ids]

    def delivered_nominal(self, x: Exchange, consumer_meter: str) -> float:
        i = x.consumers.index(consumer_meter)
        return x.nominal_rate * (1.0 - x.loss_fraction) * x.consumer_shares[i]

    def total_input(self, enterprise: str, carrier: str, material: str | None) -> float:
        """The enterprise's total nominal input of one carrier/material (canonical per hour)."""
        total = 0.0
        for m in self.park.meters_of.get(enterprise, ()):
            if m.direction != "input" or m.carrier != carrier or m.material != material:
                continue
            x = self.park.exchange_of_meter.get(m.id)
            if x is not None and m.id in x.consumers:
                total += self.delivered_nominal(x, m.id)
            else:
                total += m.nominal if m.nominal is not None else m.capacity
        return total

    # -- analysis -------------------------------------------------------------------------------
    def analyze(self, exchange_id: str, magnitude: float, start_ms: int, *,
                buffer_exhausted_at_ms: int | None = None,
                live_rates: dict[str, float] | None = None) -> Impact:
        x = self.park.exchange(exchange_id)
        magnitude = min(1.0, max(0.0, magnitude))
        supplier = self.supplier_enterprise(x)
        direct = self._hits(x, magnitude, start_ms, start_ms, depth=1, via=None,
                            override_exhaustion_ms=buffer_exhausted_at_ms)
        second = self._propagate(direct, start_ms, origin=supplier)
        lost = magnitude * x.nominal_rate * (1.0 - x.loss_fraction)
        return Impact(
            exchange=x.id, carrier=x.carrier, material=x.material, supplier=supplier,
            supplier_meters=x.suppliers, magnitude=magnitude, lost_rate=lost,
            rate_unit=x.rate_unit, start_ms=start_ms, consumers=tuple(direct),
            second_order=tuple(second),
            alternatives=tuple(self.alternatives(x.id, lost, live_rates or {})))

    def _hits(self, x: Exchange, magnitude: float, origin_ms: int, starts_ms: int, depth: int,
              via: str | None, override_exhaustion_ms: int | None = None) -> list[ConsumerImpact]:
        out = []
        for c in x.consumers:
            ent = self.park.meter(c).enterprise
            delivered = self.delivered_nominal(x, c)
            lost = magnitude * delivered
            total = self.total_input(ent, x.carrier, x.material)
            share = min(1.0, lost / total) if total > 0 else (1.0 if lost > 0 else 0.0)
            if override_exhaustion_ms is not None:
                exhausted: int | None = override_exhaustion_ms
            elif magnitude <= 0:
                exhausted = None
            else:
                exhausted = starts_ms + round(x.buffer_h / magnitude * MS_PER_H)
            out.append(ConsumerImpact(
                enterprise=ent, meter=c, exchange=x.id, depth=depth, via=via,
                magnitude=magnitude, lost_rate=lost, rate_unit=x.rate_unit, share_at_risk=share,
                buffer_h=x.buffer_h, starts_at_ms=starts_ms, buffer_exhausted_at_ms=exhausted,
                hours_to_exhaustion=None if exhausted is None else (exhausted - origin_ms) / MS_PER_H,
                criticality=x.criticality))
        return out

    def _propagate(self, direct: list[ConsumerImpact], origin_ms: int, origin: str
                   ) -> list[ConsumerImpact]:
        """Spread shortfalls downstream, earliest exhaustion first; each enterprise expands once."""
        expanded = {origin}
        listed = {(c.enterprise, c.exchange) for c in direct}
        heap: list[tuple[int, int, int, ConsumerImpact]] = []
        counter = 0

        def push(hit: ConsumerImpact) -> None:
            nonlocal counter
            if hit.buffer_exhausted_at_ms is None or hit.criticality == "low":
                return
            heapq.heappush(heap, (hit.buffer_exhausted_at_ms, hit.depth, counter, hit))
            counter += 1

        for hit in direct:
            push(hit)
        out: list[ConsumerImpact] = []
        while heap:
            t_ms, depth, _, hit = heapq.heappop(heap)
            if hit.enterprise in expanded or depth >= self.max_depth:
                continue
            expanded.add(hit.enterprise)
            production_loss = hit.share_at_risk
            if production_loss < self.min_magnitude:
                continue
            for x in self.outputs_of(hit.enterprise):
                for nxt in self._hits(x, production_loss, origin_ms, t_ms, depth + 1,
                                      via=hit.enterprise):
                    if nxt.enterprise == origin or (nxt.enterprise, nxt.exchange) in listed:
                        continue
                    listed.add((nxt.enterprise, nxt.exchange))
                    out.append(nxt)
                    push(nxt)
        out.sort(key=lambda c: (c.buffer_exhausted_at_ms or 0, c.depth, c.enterprise, c.exchange))
        return out

    def alternatives(self, exchange_id: str, lost_rate: float,
                     live_rates: dict[str, float]) -> list[AlternativeOption]:
        x = self.park.exchange(exchange_id)
        options = []
        for a in self.park.alternatives_for(exchange_id):
            spare, source = a.spare_capacity, "park"
            if not a.external and a.enterprise in self.park.enterprises_by_id:
                outs = [m for m in self.park.meters_of.get(a.enterprise, ())
                        if m.direction == "output" and m.carrier == x.carrier
                        and m.material == x.material]
                if outs and all(m.id in live_rates for m in outs):
                    live_spare = sum(m.capacity for m in outs) - sum(live_rates[m.id] for m in outs)
                    spare, source = max(0.0, min(spare, live_spare)), "live"
            covers = 1.0 if lost_rate <= 0 else min(1.0, spare / lost_rate)
            options.append(AlternativeOption(
                enterprise=a.enterprise, external=a.external, spare_capacity=spare,
                rate_unit=a.rate_unit, source=source, covers_fraction=covers,
                lead_time_h=a.lead_time_h, note=a.note))
        options.sort(key=lambda o: (-o.spare_capacity, o.lead_time_h, o.enterprise))
        return options
