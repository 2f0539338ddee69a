"""Running a federation: configuration, the run directory, plots and progress.

- ``config``: the TOML configuration, its seven sections and ``--set`` overrides
  (``load_config``, ``Config``, ``config_to_toml``); ``schema`` declares keys once.
- ``outputs``: the run directory (``RunDirectory``): ``config.toml``, ``metrics.jsonl``,
  ``summary.json``, ``model.npz``.
- ``plot``: accuracy and loss curves of one or more runs (``plot_runs``, ``write_curves``).
- ``progress``: the live round display (``RoundProgress``).

This is the only layer that reads configuration files; the layers below take plain arguments.
"""

from __future__ import annotations

from fedbus.run.config import (
    DATASETS,
    MODELS,
    PARTITIONS,
    SECTIONS,
    STRATEGIES,
    Config,
    DataConfig,
    FederationConfig,
    ModelConfig,
    RunConfig,
    SimulationConfig,
    StrategyConfig,
    TrainerConfig,
    config_from_dict,
    config_to_dict,
    config_to_toml,
    load_config,
    reference_markdown,
)
from fedbus.run.outputs import METRIC_KEYS, SUMMARY_KEYS, RunDirectory, load_model, read_metrics
from fedbus.run.plot import plot_runs, write_curves
from fedbus.run.progress import RoundProgress
from fedbus.run.schema import ConfigSection, KeySpec, setting

__all__ = [
    "DATASETS",
    "METRIC_KEYS",
    "MODELS",
    "PARTITIONS",
    "SECTIONS",
    "STRATEGIES",
    "SUMMARY_KEYS",
    "Config",
    "ConfigSection",
    "DataConfig",
    "FederationConfig",
    "KeySpec",
    "ModelConfig",
    "RoundProgress",
    "RunConfig",
    "RunDirectory",
    "SimulationConfig",
    "StrategyConfig",
    "TrainerConfig",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "load_config",
    "load_model",
    "plot_runs",
    "read_metrics",
    "reference_markdown",
    "setting",
    "write_curves",
]
