"""Simulated trackers: plausible vehicles reporting over real Wialon IPS 2.0 TCP connections.

`run_simulation` drives a fleet against a listener and returns its `SimulationStats`; the
`fleetplane simulate` command wraps it with a progress display.
"""

from fleetplane.simulator.route import Fix, VehicleProfile, vehicle_fixes
from fleetplane.simulator.runner import run_simulation
from fleetplane.simulator.stats import SimulationStats

__all__ = ["Fix", "SimulationStats", "VehicleProfile", "run_simulation", "vehicle_fixes"]
