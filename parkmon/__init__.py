"""parkmon: IoT streaming monitor for eco-industrial parks.

Shared domain package: park model, reading contract, units, configuration, errors and the
`parkmon` command line. The pipeline stages live in the sibling top-level packages
`ingest` (MQTT gateway), `streams` (KPI core + Faust worker), `alerts` (detection follow-up and
delivery) and `simulators` (sensor fleets).
"""

__version__ = "0.1.0"
