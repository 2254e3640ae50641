"""Benefit sharing per window or view: who is credited with what each exchange saves.

Per exchange x (prices and rules from the park file, parkmon/park/sharing.py):
- avoided cost of a consumer enterprise = delivered quantity of its meters x virgin_price
- avoided cost of a supplier enterprise = supplied quantity of its meters x disposal_price
- savings of x = the sum of its partners' avoided costs
- avoided CO2 of x = carbon.avoided (delivered x (baseline - allocated)); 0 without a baseline
Each exchange's avoided CO2 and savings are split between its partners by its rule (the
exchange's own, else the park's default): streams/core/allocation.py. The exchanges of a declared
chain are split as one: the Shapley value of the chain game whose links are the chain's exchanges,
each worth its savings (its avoided CO2 when the chain declares no price), plus `synergy` x their
sum realised only by the whole chain.

Outputs: exchange `savings`; enterprise `credited_avoided_t_co2e`, `credited_savings` (every
enterprise, 0 when it has no share); park `savings`. Credits add up to the park's totals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from parkmon.park.sharing import Chain, Shapley
from streams.core.allocation import ChainLink, Credit, allocate_exchange, allocate_park
from streams.core.kpis.base import Quantities
from streams.core.kpis.carbon import avoided
from streams.core.model import ExchangeInfo, KpiModel

Values = dict[str, float | bool | None]


def parties(model: KpiModel, x: ExchangeInfo) -> list[str]:
    """Enterprises of the exchange: its suppliers' then its consumers', each once."""
    out: list[str] = []
    for mid in (*x.suppliers, *x.consumers):
        m = model.meters.get(mid)
        if m is not None and m.enterprise not in out:
            out.append(m.enterprise)
    return out


def avoided_costs(model: KpiModel, q: Quantities, x: ExchangeInfo) -> dict[str, float]:
    """Each partner's avoided cost over the window: consumers' virgin input, suppliers' disposal."""
    costs = dict.fromkeys(parties(model, x), 0.0)
    for mid, price in ([(c, x.virgin_price) for c in x.consumers]
                       + [(s, x.disposal_price) for s in x.suppliers]):
        f = q.get(mid)
        if f is not None and price:
            costs[model.meters[mid].enterprise] += f.quantity * price
    return costs


def compute(model: KpiModel, q: Quantities) -> tuple[Values, dict[str, Values], dict[str, Values]]:
    """(park values, enterprise id -> values, exchange id -> values); empty when the park
    declares no benefit sharing."""
    b = model.benefit
    if b is None:
        return {}, {}, {}
    chain_of = {xid: c for c in b.chains for xid in c.exchanges}
    results: list[Mapping[str, Credit]] = []
    per_x: dict[str, Values] = {}
    chained: dict[str, list[tuple[ExchangeInfo, float, dict[str, float]]]] = {}
    for x in model.exchanges:
        co2 = avoided(q, x) or 0.0
        costs = avoided_costs(model, q, x)
        per_x[x.id] = {"savings": math.fsum(costs.values())}
        if x.id in chain_of:
            chained.setdefault(chain_of[x.id].id, []).append((x, co2, costs))
            continue
        results.append(allocate_exchange(x.sharing or b.rule, parties(model, x), co2, costs))
    for c in b.chains:
        members = chained.get(c.id, [])
        if members:
            results.append(_allocate_chain(model, c, members))
    credits = allocate_park(results)
    ents: dict[str, Values] = {e: {"credited_avoided_t_co2e": credits[e].avoided_co2_kg if e in credits else 0.0,
                "credited_savings": credits[e].savings if e in credits else 0.0}
            for e in model.enterprises}
    park: Values = {"savings": math.fsum(float(v["savings"] or 0.0) for v in per_x.values())}
    return park, ents, per_x


def _allocate_chain(model: KpiModel, chain: Chain,
                    members: list[tuple[ExchangeInfo, float, dict[str, float]]]) -> dict[str, Credit]:
    names: list[str] = []
    for x, _, _ in members:
        names += [p for p in parties(model, x) if p not in names]
    priced = any(x.virgin_price or x.disposal_price for x, _, _ in members)
    links: list[ChainLink] = []
    for x, co2, costs in members:
        value = math.fsum(costs.values()) if priced else co2
        sups = sorted({model.meters[s].enterprise for s in x.suppliers if s in model.meters})
        cons = sorted({model.meters[c].enterprise for c in x.consumers if c in model.meters})
        pairs = [(s, c) for s in sups for c in cons if s != c]
        links += [ChainLink(s, c, value / len(pairs)) for s, c in pairs]
    base = math.fsum(link.savings for link in links)
    rule = Shapley(links=tuple(links), synergy=chain.synergy * base, exact_max=chain.exact_max,
                   samples=chain.samples, seed=chain.seed)
    co2_total = math.fsum(co2 for _, co2, _ in members)
    costs_total: dict[str, float] = {}
    for _, _, costs in members:
        for p, v in costs.items():
            costs_total[p] = costs_total.get(p, 0.0) + v
    return allocate_exchange(rule, names, co2_total, costs_total)
