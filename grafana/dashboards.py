"""The control room: Grafana dashboards as code (grafanalib), InfluxDB 2 (Flux) and Prometheus.

`python -m grafana.build` regenerates grafana/dashboards/*.json, which Grafana loads through the
provisioning in grafana/provisioning/. The Flux queries (grafana/flux.py) follow
docs/influxdb-schema.md; the PromQL names are the services' Prometheus metrics (tests check both).
The network's topology (enterprises, exchanges) comes from the park file; its live state from
InfluxDB. docs/control-room.md describes every dashboard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grafanalib.core import Annotations, Dashboard, GridPos, Template, Templating, Time

from grafana import flux
from grafana.panels import (
    INFLUX,
    NodeGraph,
    dashboard_link,
    flux_targets,
    prom_ts,
    stat,
    table,
    ts,
)

UID = {"overview": "parkmon-park-overview", "network": "parkmon-network",
       "enterprise": "parkmon-enterprise", "exchange": "parkmon-exchange-health",
       "quality": "parkmon-data-quality", "pipeline": "parkmon-pipeline-health"}
PCT = "percentunit"
CIRCULARITY = ["material_circularity_ratio", "waste_valorisation_rate", "energy_recovery_rate",
               "water_reuse_rate", "symbiotic_exchange_share"]


def _vars(*extra: Template) -> Templating:
    return Templating(list=[
        Template(name="park", query="kalundborg", type="textbox", default="kalundborg",
                 label="park"),
        Template(name="bucket", query="parkmon", type="textbox", default="parkmon",
                 label="bucket"),
        *extra,
    ])


def _tag_var(name: str, tag: str, predicate: str, label: str) -> Template:
    return Template(name=name, label=label, dataSource=INFLUX, type="query",
                    query=flux.tag_values(tag, predicate), refresh=2, includeAll=False)


def _alerts_annotation(extra: str = "") -> Annotations:
    return Annotations(list=[{
        "name": "parkmon alerts", "datasource": INFLUX, "enable": True, "iconColor": "red",
        "target": {"refId": "Anno", "query": flux.alerts_annotation_query(extra)},
    }])


def _dash(key: str, title: str, panels: list[Any], templating: Templating,
          annotations: Annotations | None = None, refresh: str = "30s") -> Dashboard:
    links = [dashboard_link(t, UID[k]) for k, t in (
        ("overview", "Park overview"), ("network", "Symbiosis network"),
        ("enterprise", "Enterprise"), ("exchange", "Exchange health"),
        ("quality", "Data quality"), ("pipeline", "Pipeline health")) if k != key]
    return Dashboard(
        title=f"parkmon: {title}", uid=UID[key], tags=["parkmon"], time=Time("now-6h", "now"),
        refresh=refresh, timezone="browser", panels=panels, templating=templating,
        annotations=annotations or Annotations(list=[]),
        links=[{"title": lk["title"], "type": "link", "url": lk["url"], "asDropdown": False,
                "targetBlank": False, "includeVars": False, "keepTime": False, "icon": "dashboard",
                "tags": [], "tooltip": ""} for lk in links],
    ).auto_panel_ids()


def park_overview(park: Any) -> Dashboard:
    """The park's KPIs now and over time, open incidents, data-quality state."""
    p = "${park}"
    drill = [{"title": "Enterprise drill-down ${__field.labels.entity}",
              "url": "/d/" + UID["enterprise"] + "?var-park=${park}&var-bucket=${bucket}"
                     "&var-enterprise=${__field.labels.entity}&${__url_time_range}"}]
    g = GridPos
    panels = [
        stat("Material circularity (1 h)", flux.kpi_query("park", p, "1h",
             ["material_circularity_ratio"]), PCT, g(h=4, w=4, x=0, y=0)),
        stat("Waste valorisation (1 h)", flux.kpi_query("park", p, "1h",
             ["waste_valorisation_rate"]), PCT, g(h=4, w=4, x=4, y=0)),
        stat("Water reuse (1 h)", flux.kpi_query("park", p, "1h", ["water_reuse_rate"]), PCT,
             g(h=4, w=4, x=8, y=0)),
        stat("Energy recovery (1 h)", flux.kpi_query("park", p, "1h", ["energy_recovery_rate"]),
             PCT, g(h=4, w=4, x=12, y=0)),
        stat("Open incidents", flux.open_incidents_count(), "none", g(h=4, w=4, x=16, y=0),
             "Alerts whose last state change in the range is firing (measurement alerts)"),
        stat("Data-quality alerts open", flux.open_incidents_count(
             ' and r.alertname == "data_quality"'), "none", g(h=4, w=4, x=20, y=0)),
        stat("Scope 1 + 2 (24 h, t CO2e)", flux.kpi_sum_query(
             "park", p, "24h", ["scope1_t_co2e", "scope2_t_co2e"], "scope 1 + 2"), "none",
             g(h=4, w=6, x=0, y=4)),
        stat("Avoided CO2e (24 h, t)", flux.kpi_query("park", p, "24h", ["avoided_t_co2e"]),
             "none", g(h=4, w=6, x=6, y=4)),
        stat("Carbon intensity (24 h, t CO2e / t)", flux.kpi_query(
             "park", p, "24h", ["carbon_intensity_t_co2e_per_t"]), "none",
             g(h=4, w=6, x=12, y=4)),
        stat("Energy intensity (24 h, MWh / t)", flux.kpi_query(
             "park", p, "24h", ["energy_intensity_mwh_per_t"]), "none", g(h=4, w=6, x=18, y=4)),
        ts("Circularity indicators, park (1 h rolling)", flux.kpi_query("park", p, "1h",
           CIRCULARITY), PCT, g(h=8, w=12, x=0, y=8),
           "Waste valorisation: to a partner or recycling (R2-R11); energy recovery (R1) "
           "separately. Definitions: docs/kpis.md"),
        ts("Scope 1, scope 2 and avoided emissions, park (1 h rolling, t CO2e)",
           flux.kpi_query("park", p, "1h", ["scope1_t_co2e", "scope2_t_co2e",
                                              "avoided_t_co2e"]), "none",
           g(h=8, w=12, x=12, y=8)),
        ts("Carbon intensity by enterprise (1 h rolling, t CO2e / t)",
           flux.kpi_query("enterprise", ".*", "1h", ["carbon_intensity_t_co2e_per_t"]), "none",
           g(h=8, w=12, x=0, y=16), "Click a series for the enterprise drill-down", drill),
        ts("Exchange outflow (supplier) per minute", flux.kpi_query("exchange", ".*", "1m",
           ["outflow"]), "none", g(h=8, w=12, x=12, y=16),
           "Quantity leaving the supplier's meters of each symbiotic exchange, canonical units"),
        ts("Exchange mass balance (relative imbalance, 15 min)",
           flux.kpi_query("exchange", ".*", "15m", ["relative_imbalance"]), PCT,
           g(h=8, w=12, x=0, y=24),
           "Supplier outflow minus consumer inflow, over outflow; flagged beyond the allowed loss"),
        ts("Energy flows (rate per hour)", flux.meter_query(
           "rate_per_h", "steam|heat|electricity|fuel_gas"), "none", g(h=8, w=12, x=12, y=24)),
        ts("Avoided emissions per exchange (1 h, t CO2e)",
           flux.kpi_query("exchange", ".*", "1h", ["avoided_t_co2e"]), "none",
           g(h=8, w=12, x=0, y=32)),
        table("Open incidents", flux.open_incidents_table(), g(h=8, w=12, x=12, y=32)),
    ]
    return _dash("overview", "park overview", panels, _vars(), _alerts_annotation())


def network(park: Any) -> Dashboard:
    """The symbiosis network as a Node Graph: enterprises and live exchanges."""
    graph = NodeGraph(
        title="Symbiosis network (edge: live rate; colour: normal / declining / dropped / no data)",
        dataSource=INFLUX, gridPos=GridPos(h=20, w=24, x=0, y=0),
        targets=flux_targets(flux.node_graph_nodes(park), flux.node_graph_edges(park),
                             ref_ids=("nodes", "edges")),
        description="Nodes: enterprises (main stat: avoided t CO2e, secondary: scope 1 + 2, "
                    "latest 1 h view). Edges: exchanges (main stat: mean rate of the last "
                    f"{flux.RECENT} of the range; secondary: that rate / the range's median; "
                    f"dropped below {flux.DROPPED_BELOW:.0%}, declining below "
                    f"{flux.DECLINING_BELOW:.0%}). Topology from the park file.")
    panels = [graph,
              table("Open incidents", flux.open_incidents_table(), GridPos(h=8, w=24, x=0, y=20))]
    return _dash("network", "symbiosis network", panels, _vars(), _alerts_annotation())


def enterprise(park: Any) -> Dashboard:
    """One enterprise: its indicators and meters, per carrier."""
    e, g = "${enterprise}", GridPos
    mw = '_measurement == "meter_window" and r.park == "${park}"'
    templ = _vars(
        _tag_var("enterprise", "enterprise", f"r.{mw}", "enterprise"),
        _tag_var("carrier", "carrier", f'r.{mw} and r.enterprise == "${{enterprise}}"',
                 "carrier"))
    ent = ' and r.enterprise == "${enterprise}" and r.carrier == "${carrier}"'
    panels = [
        stat("Scope 1 (1 h, t CO2e)", flux.kpi_query("enterprise", e, "1h", ["scope1_t_co2e"]),
             "none", g(h=4, w=6, x=0, y=0)),
        stat("Scope 2 (1 h, t CO2e)", flux.kpi_query("enterprise", e, "1h", ["scope2_t_co2e"]),
             "none", g(h=4, w=6, x=6, y=0)),
        stat("Avoided (1 h, t CO2e)", flux.kpi_query("enterprise", e, "1h", ["avoided_t_co2e"]),
             "none", g(h=4, w=6, x=12, y=0)),
        stat("Energy input (1 h, MWh)", flux.kpi_query("enterprise", e, "1h",
             ["energy_input_mwh"]), "none", g(h=4, w=6, x=18, y=0)),
        ts("Emissions (1 h rolling, t CO2e)", flux.kpi_query(
           "enterprise", e, "1h", ["scope1_t_co2e", "scope2_t_co2e", "avoided_t_co2e"]),
           "none", g(h=8, w=12, x=0, y=4)),
        ts("Energy and product (1 h rolling)", flux.kpi_query(
           "enterprise", e, "1h", ["energy_input_mwh", "product_output_t"]), "none",
           g(h=8, w=12, x=12, y=4)),
        ts("Meters of ${enterprise}, carrier ${carrier} (rate per hour)",
           flux.meter_query("rate_per_h", ".*", ent), "none", g(h=8, w=24, x=0, y=12)),
        ts("Readings per minute, ${carrier} meters", flux.meter_query("count", ".*", ent,
           fn="sum"), "none", g(h=6, w=24, x=0, y=20)),
    ]
    return _dash("enterprise", "enterprise", panels, templ,
                 _alerts_annotation(' and (r.enterprise == "${enterprise}"'
                                    ' or r.supplier == "${enterprise}")'))


def exchange_health(park: Any) -> Dashboard:
    """Supplier vs consumer meters, the mass-balance gap and the alerts of each exchange."""
    g = GridPos
    ex = Template(name="exchange", label="exchange", dataSource=INFLUX, type="query",
                  query=flux.tag_values("entity", 'r._measurement == "kpi" and r.park == '
                                        '"${park}" and r.scope == "exchange"'), refresh=2)
    x = "${exchange}"
    panels = [
        ts("Supplier outflow vs consumer inflow (1 min)", flux.kpi_query(
           "exchange", x, "1m", ["outflow", "inflow"]), "none", g(h=8, w=12, x=0, y=0),
           "Canonical quantity per minute on the supplier's meters and on the consumers'"),
        ts("Mass-balance gap vs allowed loss (15 min)", flux.kpi_query(
           "exchange", x, "15m", ["imbalance", "allowed_loss"]), "none",
           g(h=8, w=12, x=12, y=0),
           "imbalance = outflow - inflow; allowed_loss = outflow x the declared loss fraction"),
        ts("Relative imbalance (15 min)", flux.kpi_query("exchange", x, "15m",
           ["relative_imbalance"]), PCT, g(h=8, w=12, x=0, y=8)),
        ts("Out of tolerance (15 min; 1 = the gap exceeds the allowed loss)", flux.kpi_query(
           "exchange", x, "15m", ["out_of_tolerance"]) + "\n  |> toInt()", "none",
           g(h=8, w=12, x=12, y=8)),
        table("Alerts of ${exchange}", flux.open_incidents_table(
              ' and r.exchange == "${exchange}"', active="true"), g(h=8, w=24, x=0, y=16),
              "Latest state of each supply alert on the exchange (detector levels and bounds "
              "are not stored in InfluxDB: the alert text carries magnitude and impact)"),
    ]
    return _dash("exchange", "exchange health", panels, _vars(ex),
                 _alerts_annotation(' and r.exchange == "${exchange}"'))


def data_quality(park: Any) -> Dashboard:
    g = GridPos
    panels = [
        table("Data-quality alerts per meter (silent / stuck / out of range / disagrees)",
              flux.dq_alerts_table(), g(h=8, w=12, x=0, y=0)),
        stat("Data-quality alerts open", flux.open_incidents_count(
             ' and r.alertname == "data_quality"'), "none", g(h=8, w=12, x=12, y=0)),
        ts("Readings per minute by meter (count per base window)", flux.meter_query(
           "count", ".*", fn="sum"), "none", g(h=8, w=12, x=0, y=8),
           "A silent meter drops to no point; a stuck one keeps its count but not its value"),
        ts("Windows corrected by late readings (revision) and rate gaps", flux.meter_query(
           "revision", ".*", fn="max"),
           "none", g(h=8, w=12, x=12, y=8),
           "revision > 0: the window was re-emitted after a reading late within grace. Readings"
           " late beyond grace are not stored in InfluxDB: see the Prometheus panels below"),
        prom_ts("Dead letters by reason (gateway, readings/s)",
                [("sum by (reason) (rate(parkmon_gateway_readings_rejected_total[5m]))",
                  "{{reason}}")], "none", g(h=8, w=12, x=0, y=16),
                "Dead letters live in Kafka (parkmon.<park>.deadletter), not in InfluxDB"),
        prom_ts("Late beyond grace and streams dead letters (per s)",
                [("rate(parkmon_streams_late_total[5m])", "late beyond grace"),
                 ("sum by (reason) (rate(parkmon_streams_deadlettered_total[5m]))",
                  "streams {{reason}}"),
                 ("rate(parkmon_gateway_duplicates_total[5m])", "duplicates")],
                "none", g(h=8, w=12, x=12, y=16)),
    ]
    return _dash("quality", "data quality", panels, _vars(),
                 _alerts_annotation(' and r.alertname == "data_quality"'))


def pipeline_health(park: Any) -> Dashboard:
    g = GridPos
    panels = [
        prom_ts("Gateway: messages and readings per s", [
            ("rate(parkmon_gateway_messages_received_total[5m])", "messages received"),
            ("rate(parkmon_gateway_readings_accepted_total[5m])", "readings accepted"),
            ("sum(rate(parkmon_gateway_readings_rejected_total[5m]))", "readings rejected")],
            "none", g(h=8, w=12, x=0, y=0)),
        prom_ts("Gateway: Kafka produce latency p99 and in-flight messages", [
            ("histogram_quantile(0.99, rate(parkmon_gateway_kafka_produce_latency_seconds_bucket"
             "[5m]))", "p99 latency (s)"),
            ("parkmon_gateway_inflight_messages", "in flight"),
            ("parkmon_gateway_mqtt_connected", "MQTT connected")], "none",
            g(h=8, w=12, x=12, y=0)),
        prom_ts("Streams: readings and points written per s", [
            ("rate(parkmon_streams_readings_total[5m])", "readings"),
            ("rate(parkmon_streams_windows_written_total[5m])", "meter windows"),
            ("rate(parkmon_streams_kpi_points_written_total[5m])", "kpi points"),
            ("rate(parkmon_streams_sink_failures_total[5m])", "InfluxDB retries")], "none",
            g(h=8, w=12, x=0, y=8)),
        prom_ts("Streams: event-time lag and close-to-stored latency", [
            ("time() - max(parkmon_streams_watermark_ms) / 1000", "watermark lag (s)"),
            ('parkmon_streams_close_to_stored_seconds{quantile="0.99"}', "close->stored p99 (s)")],
            "s", g(h=8, w=12, x=12, y=8)),
        prom_ts("Detect: readings, events, dead letters per s", [
            ("rate(parkmon_detect_readings_total[5m])", "readings"),
            ("rate(parkmon_detect_events_total[5m])", "events"),
            ("rate(parkmon_detect_dead_letters_total[5m])", "dead letters")], "none",
            g(h=8, w=12, x=0, y=16)),
        prom_ts("Detect: event-time lag and lagging partitions", [
            ("time() - parkmon_detect_watermark_seconds", "watermark lag (s)"),
            ("parkmon_detect_lagging_partitions", "lagging partitions")], "none",
            g(h=8, w=12, x=12, y=16)),
        prom_ts("Alerts: outbox depth by status", [
            ("parkmon_alerts_outbox_messages", "{{status}}")], "none", g(h=8, w=12, x=0, y=24)),
        prom_ts("Alerts: webhook deliveries and retries per s", [
            ("sum by (outcome) (rate(parkmon_alerts_delivery_attempts_total[5m]))", "{{outcome}}"),
            ("sum by (result) (rate(parkmon_alerts_events_total[5m]))", "events {{result}}")],
            "none", g(h=8, w=12, x=12, y=24)),
        prom_ts("Edge mode: points written, InfluxDB failures, unacked messages", [
            ("rate(parkmon_edge_points_written_total[5m])", "points written"),
            ("rate(parkmon_edge_influx_failures_total[5m])", "InfluxDB failures"),
            ("parkmon_edge_unacked_messages", "unacked")], "none", g(h=8, w=24, x=0, y=32)),
    ]
    return _dash("pipeline", "pipeline health", panels, Templating(list=[]), refresh="1m")


DASHBOARDS: dict[str, Callable[[Any], Dashboard]] = {
    "park-overview": park_overview, "network": network, "enterprise": enterprise,
    "exchange-health": exchange_health, "data-quality": data_quality,
    "pipeline-health": pipeline_health,
}
