"""The embedded simulation runtime: deterministic, event-driven, in simulated time."""

from fedbus.runtime.simulation.loop import (
    DEFAULT_MEMORY_BUDGET_MB,
    Simulation,
    SimulationResult,
    SimulationState,
    SimulationStats,
    TraceEntry,
    simulate,
)
from fedbus.runtime.simulation.processes import cores
from fedbus.runtime.simulation.profiles import (
    HANDLER_TIME,
    SERVER_PROFILE,
    ClientProfile,
    ProfileDistribution,
    ProfileSource,
    ProfileTable,
    load_profiles_csv,
)

__all__ = [
    "DEFAULT_MEMORY_BUDGET_MB",
    "HANDLER_TIME",
    "SERVER_PROFILE",
    "ClientProfile",
    "ProfileDistribution",
    "ProfileSource",
    "ProfileTable",
    "Simulation",
    "SimulationResult",
    "SimulationState",
    "SimulationStats",
    "TraceEntry",
    "cores",
    "load_profiles_csv",
    "simulate",
]
