"""Simulated sensor fleets: deterministic readings for a park, fault scenarios with ground truth,
and an MQTT publisher. See docs/simulator.md."""

from simulators.fleet import Fleet, FleetOptions, SimReading, run_scenario
from simulators.scenarios import (
           Label,
           Scenario,
           ScenarioError,
           load_scenario,
           read_labels,
           write_labels,
)

__all__ = ["Fleet", "FleetOptions", "Label", "Scenario", "ScenarioError", "SimReading",
           "load_scenario", "read_labels", "run_scenario", "write_labels"]
