"""Impact of a supply drop on the toy park (alerts.testing.TOY_PARK), computed by hand.

Steam exchange: power -> refinery (share 0.6) and biotech (0.4), 100 MW nominal, 10 % loss,
buffer 1 h, criticality high. A 50 % drop at t0:
  delivered nominal: refinery 100*0.9*0.6 = 54 MW, biotech 100*0.9*0.4 = 36 MW
  lost: refinery 27 MW, biotech 18 MW (total 45 MW)
  refinery steam input 54 + own boiler 36 = 90 -> share at risk 27/90 = 0.30
  biotech steam input only 36                   -> share at risk 18/36 = 0.50
  buffer 1 h drained at 50 % -> exhausted 1/0.5 = 2 h after t0 for both
Second order, once the buffers are out (t0 + 2 h):
  refinery production -30 % -> gas exchange (10 MW, buffer 2 h) to plaster drops 30 %:
    lost 3 MW of plaster's 10 + 5 (grid) = 15 MW fuel gas -> share 0.20,
    exhausted 2 h + 2/0.3 h = 8.667 h after t0
  biotech production -50 % -> sludge (20 t/h, buffer 24 h) to farm drops 50 %:
    lost 10 t/h of 20 -> share 0.50, exhausted 2 + 24/0.5 = 50 h after t0
  plaster production -20 % -> scrap flows back to power, the origin: not listed (cycle)
Alternatives for steam: incinerator 30 MW declared, steam_import (external) 20 MW;
  with incinerator live output 35 MW of 50 MW capacity its spare is min(30, 15) = 15 MW.
"""

from __future__ import annotations

import pytest

from alerts.impact import MS_PER_H, ImpactAnalyzer
from tests.support.alerts import toy_park, toy_park_data

pytestmark = pytest.mark.unit

T0 = 1_767_225_600_000


@pytest.fixture(scope="module")
def analyzer() -> ImpactAnalyzer:
    return ImpactAnalyzer(toy_park())


def by_ent(hits):
    return {c.enterprise: c for c in hits}


def test_graph_has_one_edge_per_supplier_consumer_link(analyzer: ImpactAnalyzer) -> None:
    g = analyzer.graph
    assert set(g.successors("power")) == {"refinery", "biotech", "plaster"}
    assert g["refinery"]["plaster"]["exchanges"] == ["gas"]
    assert g["plaster"]["power"]["exchanges"] == ["scrap"]


def test_direct_consumers_share_and_buffer(analyzer: ImpactAnalyzer) -> None:
    imp = analyzer.analyze("steam", 0.5, T0)
    assert imp.supplier == "power"
    assert imp.lost_rate == pytest.approx(45.0)
    direct = by_ent(imp.consumers)
    assert set(direct) == {"refinery", "biotech"}
    assert direct["refinery"].lost_rate == pytest.approx(27.0)
    assert direct["refinery"].share_at_risk == pytest.approx(0.30)
    assert direct["biotech"].lost_rate == pytest.approx(18.0)
    assert direct["biotech"].share_at_risk == pytest.approx(0.50)
    for c in direct.values():
        assert c.buffer_exhausted_at_ms == T0 + 2 * MS_PER_H
        assert c.hours_to_exhaustion == pytest.approx(2.0)
        assert c.depth == 1 and c.via is None


def test_second_order_spreads_with_each_buffer_delay(analyzer: ImpactAnalyzer) -> None:
    imp = analyzer.analyze("steam", 0.5, T0)
    second = by_ent(imp.second_order)
    assert set(second) == {"plaster", "farm"}  # power (the origin, via scrap) is not re-listed
    plaster, farm = second["plaster"], second["farm"]
    assert (plaster.exchange, plaster.via, plaster.depth) == ("gas", "refinery", 2)
    assert plaster.magnitude == pytest.approx(0.30)
    assert plaster.share_at_risk == pytest.approx(0.20)
    assert plaster.starts_at_ms == T0 + 2 * MS_PER_H
    assert plaster.hours_to_exhaustion == pytest.approx(2 + 2 / 0.3, abs=1e-6)
    assert (farm.exchange, farm.via) == ("sludge", "biotech")
    assert farm.share_at_risk == pytest.approx(0.50)
    assert farm.hours_to_exhaustion == pytest.approx(50.0)
    assert [c.enterprise for c in imp.second_order] == ["plaster", "farm"]  # earliest first
    assert imp.affected_enterprises == ["refinery", "biotech", "plaster", "farm"]


def test_total_loss_without_buffer_hits_immediately() -> None:
    data = toy_park_data()
    data["exchanges"][0]["buffer_h"] = 0.0
    imp = ImpactAnalyzer(toy_park(data)).analyze("steam", 1.0, T0)
    direct = by_ent(imp.consumers)
    assert direct["biotech"].share_at_risk == pytest.approx(1.0)
    assert direct["refinery"].share_at_risk == pytest.approx(0.6)  # 54 of 90
    assert all(c.buffer_exhausted_at_ms == T0 for c in imp.consumers)
    # plaster: refinery -60 % -> 6 MW of 15 = 0.4, buffer 2 h / 0.6 after t0
    assert by_ent(imp.second_order)["plaster"].share_at_risk == pytest.approx(0.4)
    assert by_ent(imp.second_order)["plaster"].hours_to_exhaustion == pytest.approx(2 / 0.6)


def test_low_criticality_input_does_not_propagate() -> None:
    data = toy_park_data()
    data["exchanges"][0]["criticality"] = "low"
    imp = ImpactAnalyzer(toy_park(data)).analyze("steam", 0.5, T0)
    assert {c.enterprise for c in imp.consumers} == {"refinery", "biotech"}
    assert imp.second_order == ()


def test_zero_magnitude_exhausts_nothing(analyzer: ImpactAnalyzer) -> None:
    imp = analyzer.analyze("steam", 0.0, T0)
    assert all(c.buffer_exhausted_at_ms is None and c.share_at_risk == 0 for c in imp.consumers)
    assert imp.second_order == ()


def test_projected_exhaustion_from_a_decline_is_used(analyzer: ImpactAnalyzer) -> None:
    at = T0 + 5 * MS_PER_H
    imp = analyzer.analyze("steam", 0.2, T0, buffer_exhausted_at_ms=at)
    assert all(c.buffer_exhausted_at_ms == at for c in imp.consumers)
    assert by_ent(imp.second_order)["plaster"].starts_at_ms == at


def test_alternatives_ranked_by_declared_spare_capacity(analyzer: ImpactAnalyzer) -> None:
    alts = analyzer.analyze("steam", 0.5, T0).alternatives
    assert [(a.enterprise, a.spare_capacity, a.source) for a in alts] == [
        ("incinerator", 30.0, "park"), ("steam_import", 20.0, "park")]
    assert alts[0].covers_fraction == pytest.approx(30 / 45)


def test_live_output_caps_spare_capacity_and_reorders(analyzer: ImpactAnalyzer) -> None:
    alts = analyzer.analyze("steam", 0.5, T0, live_rates={"incinerator.steam_out": 35.0}).alternatives
    assert [(a.enterprise, a.spare_capacity, a.source) for a in alts] == [
        ("steam_import", 20.0, "park"), ("incinerator", 15.0, "live")]


def test_no_alternatives_for_a_material_nobody_offers(analyzer: ImpactAnalyzer) -> None:
    assert analyzer.analyze("gypsum", 1.0, T0).alternatives == ()


def test_impact_serialises(analyzer: ImpactAnalyzer) -> None:
    d = analyzer.analyze("steam", 0.5, T0).to_dict()
    assert [c["enterprise"] for c in d["consumers"]] == ["refinery", "biotech"]
    assert d["alternatives"][0]["enterprise"] == "incinerator"
