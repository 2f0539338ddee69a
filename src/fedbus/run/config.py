"""Configuration: a TOML file of sections, every key declared once.

Each section is a frozen dataclass; each key is a field declared with ``setting`` (type,
default, meaning, accepted values). Validation, ``--set`` overrides, ``config_to_toml`` and the
key reference of ``docs/config.md`` all come from these declarations.

Nothing here evaluates, executes or unpickles anything: a file is parsed by ``tomllib``, and so
is the value of an override (or it is kept as text).

Examples
--------
>>> config = load_config(None, ["federation.num_rounds=5", "data.dataset=synthetic"])
>>> config.federation.num_rounds, config.data.dataset
(5, 'synthetic')
>>> load_config(None, ["federation.num_rounds=0"])
Traceback (most recent call last):
...
fedbus.errors.ConfigError: federation.num_rounds: expected an integer >= 1, got 0
"""

from __future__ import annotations

import difflib
import inspect
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import tomli_w

from fedbus.data.federated import PARTITION_NAMES
from fedbus.data.leaf_tasks import LEAF_TASKS
from fedbus.data.registry import DATASETS
from fedbus.data.text import TOKENIZERS as TEXT_TOKENIZERS
from fedbus.errors import ConfigError, PluginError
from fedbus.fl.asynchronous import BROADCASTS, DISCOUNTS
from fedbus.fl.asynchronous import TRIGGERS as ASYNC_TRIGGERS
from fedbus.fl.attacks import ATTACK_KINDS
from fedbus.fl.compression import DIRECTIONS as COMPRESSION_DIRECTIONS
from fedbus.fl.compression import MethodNames
from fedbus.fl.privacy import MODES as DP_MODES
from fedbus.fl.record import RECORD_METRICS
from fedbus.fl.registry import STRATEGIES
from fedbus.run.schema import (
    ConfigSection,
    format_problems,
    key_spec,
    section_fields,
    section_problems,
    setting,
    show,
)
from fedbus.runtime.simulation import DEFAULT_MEMORY_BUDGET_MB
from fedbus.train.registry import MODELS

__all__ = [
    "ATTACKS",
    "DATASETS",
    "FRAMEWORKS",
    "LEAF_TASKS",
    "MODELS",
    "PARTITIONS",
    "PRIVACY_MODES",
    "SECTIONS",
    "STRATEGIES",
    "TRIGGERS",
    "AggregationConfig",
    "AttackConfig",
    "COMPRESSION_METHODS",
    "CompressionConfig",
    "Config",
    "DataConfig",
    "FederationConfig",
    "ModelConfig",
    "PrivacyConfig",
    "RunConfig",
    "SimulationConfig",
    "DeploymentConfig",
    "StrategyConfig",
    "TrainerConfig",
    "TrackingConfig",
    "config_from_dict",
    "config_to_dict",
    "config_to_toml",
    "load_config",
    "reference_markdown",
]

# Strategies, datasets and models are not listed here: each registers itself in its own module
# (fedbus.plugins), and their keys accept what the registries STRATEGIES, DATASETS and MODELS
# know when a configuration is checked, installed plugins' names included.
PARTITIONS: tuple[str, ...] = PARTITION_NAMES
FRAMEWORKS: tuple[str, ...] = ("numpy", "torch", "hf")
PRIVACY_MODES: tuple[str, ...] = ("none", *DP_MODES)
#: "all" is the synchronous Server; the others are AsyncServer's triggers.
TRIGGERS: tuple[str, ...] = ("all", *ASYNC_TRIGGERS)
ATTACKS: tuple[str, ...] = ("none", *ATTACK_KINDS)
#: ``none`` and the registered compression methods, plugins' included.
COMPRESSION_METHODS = MethodNames()
# federation.client_mods and server_mods: the names are checked against fedbus.fl.mods.MODS when
# the federation is built (fedbus.run.federation), with a message that lists the known ones.
_MOD_NAMES = r"([^,\s]+(,[^,\s]+)*)?"
# tracking.mlflow_tracking_uri: empty, a tracking server (http, https), a file store, or a
# database store as SQLAlchemy names it (sqlite, postgresql, mysql, mssql, with a +driver).
_TRACKING_URI = r"(https?://.+|file:.+|(sqlite|postgresql|mysql|mssql)(\+[A-Za-z0-9_]+)?://.+)?"


def _file_datasets() -> tuple[str, ...]:
    """fedbus's datasets read from ``data.path``; a plugin's dataset checks its own path."""
    return tuple(name for name in DATASETS.builtin_names() if DATASETS.get(name).reads_file)


@dataclass(frozen=True, slots=True)
class RunConfig(ConfigSection):
    """[run]: what a run is called and what it writes."""

    section: ClassVar[str] = "run"
    name: str = setting(
        "fedbus",
        "prefix of the run directory's name",
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*",
        pattern_text="letters, digits, '.', '_' and '-', starting with a letter or digit",
    )
    output_dir: str = setting(
        "runs",
        "directory that holds the run directories (created when missing)",
        pattern=r".+",
        pattern_text="a non-empty path",
    )
    save_model: bool = setting(True, "write the final global model to model.npz")
    plot: bool = setting(True, "draw curves.png (accuracy and loss curves) after the run")
    trace: bool = setting(
        True, "write RUN_DIR/trace/, one row per message (fedbus trace RUN_DIR summarises it)"
    )
    checkpoint_every: int = setting(
        1,
        "rounds between the checkpoints a stopped simulation resumes from (fedbus run --resume "
        "RUN_DIR), and the last round; 0 = none; asynchronous runs write none",
        bounds="x >= 0",
    )


@dataclass(frozen=True, slots=True)
class FederationConfig(ConfigSection):
    """[federation]: clients, rounds, sampling, deadlines and evaluation."""

    section: ClassVar[str] = "federation"
    num_clients: int = setting(100, "clients in the federation", bounds="x >= 1")
    clients_per_round: int = setting(
        10,
        "clients sampled for training each round (when not set: 10, or num_clients if fewer)",
        bounds="1 <= x <= num_clients",
    )
    num_rounds: int = setting(
        80, "training rounds (asynchronous training: aggregations)", bounds="x >= 1"
    )
    seed: int = setting(0, "seed of every random choice: same seed, same run", bounds="x >= 0")
    min_replies: int = setting(
        0,
        "replies a round needs (0 = half of clients_per_round rounded up, or the fewest the "
        "strategy works with)",
        bounds="0 <= x <= clients_per_round",
    )
    round_timeout: float = setting(
        0.0,
        "seconds a round waits for replies, simulated in simulation (0 = wait for all); "
        "asynchronous training: seconds after which a client that has not answered is given up",
        bounds="x >= 0",
    )
    watchdog: float = setting(
        60.0,
        "seconds a round (an asynchronous model version, the start of training) waits before the "
        "server logs a warning naming the nodes it waits on, repeated as long as it waits; "
        "simulated seconds in simulation (0 = never); results do not depend on it",
        bounds="x >= 0",
    )
    max_round_retries: int = setting(
        2,
        "times a round that timed out with fewer than min_replies replies is retried with a "
        "fresh sample; after that the run stops",
        bounds="x >= 0",
    )
    straggler_fraction: float = setting(
        0.0,
        "share of each round's sampled clients that emulate slow devices, as in the FedProx "
        "paper: each trains a random 1..epochs-1 local epochs, or none with drop_stragglers "
        "(synchronous rounds only)",
        bounds="0 <= x <= 1",
    )
    drop_stragglers: bool = setting(
        False,
        "stragglers get no train request (FedAvg's answer in the FedProx paper) instead of "
        "doing partial work",
    )
    evaluate_every: int = setting(
        1,
        "evaluate the global model on the held-out test set every K rounds "
        "(0 = only after the last round)",
        bounds="x >= 0",
    )
    federated_evaluate_every: int = setting(
        0, "evaluate on sampled clients' own test data every K rounds (0 = never)", bounds="x >= 0"
    )
    clients_per_evaluation: int = setting(
        0,
        "clients sampled for a federated evaluation, when federated_evaluate_every > 0 "
        "(0 = clients_per_round)",
        bounds="0 <= x <= num_clients",
    )
    early_stopping_patience: int = setting(
        0,
        "end the run once early_stopping_metric has not improved for this many evaluated "
        "rounds (0 = never stop early); summary.json's stopped_early says why",
        bounds="x >= 0",
    )
    early_stopping_metric: str = setting(
        "test_accuracy",
        "the metric early stopping watches; larger is better, smaller for a loss",
        choices=RECORD_METRICS,
    )
    early_stopping_min_delta: float = setting(
        0.0,
        "how much better than the best so far the metric must be to count as an improvement",
        bounds="x >= 0",
    )
    client_mods: str = setting(
        "",
        "comma-separated names of mods installed on every client, after those the strategy and "
        "privacy.mode install (docs/mods.md)",
        pattern=_MOD_NAMES,
        pattern_text="mod names separated by commas, without spaces (or empty)",
    )
    server_mods: str = setting(
        "",
        "comma-separated names of mods installed on the server (docs/mods.md)",
        pattern=_MOD_NAMES,
        pattern_text="mod names separated by commas, without spaces (or empty)",
    )


@dataclass(frozen=True, slots=True)
class DataConfig(ConfigSection):
    """[data]: the dataset and how it is split among clients."""

    section: ClassVar[str] = "data"
    dataset: str = setting("digits", "dataset to learn", registry=DATASETS)
    path: str = setting(
        "",
        "file or directory of the dataset: an npz, csv or text file, a LEAF directory, a folder "
        "of images, a saved Hugging Face dataset (relative paths start at the current directory)",
        is_path=True,
        required_when=("dataset", _file_datasets),
    )
    label_column: str = setting(
        "label",
        "column that holds the labels (csv, huggingface)",
        pattern=r".+",
        pattern_text="a non-empty column name",
    )
    feature_columns: str = setting(
        "",
        "comma-separated columns that hold the features (huggingface; empty: every column but "
        "the label and client columns)",
        pattern=_MOD_NAMES,
        pattern_text="column names separated by commas, without spaces (or empty)",
    )
    client_column: str = setting(
        "",
        "column that names each sample's client (csv, huggingface), for partition = natural",
    )
    leaf_task: str = setting(
        "femnist", "leaf: the LEAF task that data.path holds", choices=LEAF_TASKS
    )
    hf_name: str = setting(
        "",
        "huggingface: a dataset on the Hugging Face hub, by name, read when data.path is empty "
        "(needs access to the hub)",
    )
    hf_split: str = setting(
        "train",
        "huggingface: the split whose samples are divided among clients",
        pattern=r"[A-Za-z0-9_.\-\[\]:%]+",
        pattern_text="a split name such as train",
    )
    image_size: int = setting(
        28, "side in pixels that images are resized to (images, leaf celeba)", bounds="x >= 4"
    )
    grayscale: bool = setting(
        True,
        "read images as one grey channel (false: three colour channels, three times the features)",
    )
    partition: str = setting("dirichlet", "how samples are split among clients", choices=PARTITIONS)
    alpha: float = setting(
        0.5, "Dirichlet concentration (dirichlet): smaller = more skewed labels", bounds="x > 0"
    )
    shards_per_client: int = setting(
        2, "label-sorted shards each client gets (shards)", bounds="x >= 1"
    )
    classes_per_client: int = setting(
        2, "distinct labels each client holds (pathological)", bounds="x >= 1"
    )
    size_exponent: float = setting(
        1.5,
        "power_law: exponent of the client sizes' power law; smaller = a heavier tail of large "
        "clients",
        bounds="x > 0",
    )
    size_alpha: float = setting(
        1.0,
        "dirichlet_sizes: Dirichlet concentration of the clients' shares; smaller = more "
        "unequal sizes",
        bounds="x > 0",
    )
    size_ratio: float = setting(
        10.0,
        "linear, exponential: size of the largest client over the smallest",
        bounds="x >= 1",
    )
    central_test_fraction: float = setting(
        0.2, "fraction held out for the server's central evaluation", bounds="0 < x < 1"
    )
    client_test_fraction: float = setting(
        0.2, "fraction of each client's samples kept for federated evaluation", bounds="0 <= x < 1"
    )
    synthetic_alpha: float = setting(
        1.0, "how much client models differ (synthetic only)", bounds="x >= 0"
    )
    synthetic_beta: float = setting(
        1.0, "how much client inputs differ (synthetic only)", bounds="x >= 0"
    )
    samples_per_client: int = setting(
        64, "samples each client holds (synthetic only)", bounds="x >= 2"
    )
    size_sigma: float = setting(
        0.0,
        "spread of client sizes (synthetic only): 0 gives every client samples_per_client "
        "samples, a positive value lognormal sizes around it (the FedProx paper: 2)",
        bounds="x >= 0",
    )
    num_features: int = setting(60, "input features (synthetic only)", bounds="x >= 1")
    block_size: int = setting(
        64, "tokens in each training sequence (text only; docs/llm.md)", bounds="x >= 2"
    )
    tokenizer: str = setting(
        "bytes",
        "how a text becomes tokens (text only): bytes (its UTF-8 bytes: 256 ids, the same on "
        "every client) or model (the tokenizer of model.hf_model)",
        choices=TEXT_TOKENIZERS,
    )


@dataclass(frozen=True, slots=True)
class ModelConfig(ConfigSection):
    """[model]: the model every client trains."""

    section: ClassVar[str] = "model"
    framework: str = setting(
        "numpy",
        "what trains the model: NumPy, PyTorch (fedbus[torch]), or a Hugging Face causal "
        "language model, hf (fedbus[llm], docs/llm.md)",
        choices=FRAMEWORKS,
    )
    name: str = setting(
        "softmax",
        "model architecture (cnn: torch only, square images; hf: unused)",
        registry=MODELS,
    )
    hidden: int = setting(64, "hidden units (mlp only)", bounds="x >= 1")
    hf_model: str = setting(
        "",
        "hf: a causal language model, as a Hugging Face hub id or a local directory with its "
        "config.json and *.safetensors weights (config.json alone: random weights from "
        "federation.seed)",
        required_when=("framework", ("hf",)),
    )
    hf_revision: str = setting(
        "main",
        "hf: the hub revision (branch, tag or commit) of hf_model; pin a commit so that every "
        "client loads the same weights",
        pattern=r"[^\s]+",
        pattern_text="a branch, tag or commit, without spaces",
    )
    hf_device: str = setting(
        "auto",
        "hf: where the model trains: auto (a CUDA GPU when torch sees one, else the CPU), cpu, "
        "cuda, cuda:N or mps",
        pattern=r"auto|cpu|mps|cuda(:\d+)?",
        pattern_text="auto, cpu, mps, cuda or cuda:N",
    )
    lora: bool = setting(
        True,
        "hf: train LoRA adapters only, and send only them (false: full fine-tuning, every "
        "parameter trains and travels)",
    )
    lora_r: int = setting(8, "hf: rank of each LoRA adapter", bounds="x >= 1")
    lora_alpha: float = setting(
        16.0, "hf: LoRA scale numerator: updates are scaled by lora_alpha / lora_r", bounds="x > 0"
    )
    lora_dropout: float = setting(
        0.0, "hf: dropout on the input of each LoRA adapter", bounds="0 <= x < 1"
    )
    lora_target_modules: str = setting(
        "",
        "hf: comma-separated names of the modules that get adapters, e.g. q_proj,v_proj "
        "(empty: peft's default for the architecture); checked against the model before the run",
        pattern=_MOD_NAMES,
        pattern_text="module names separated by commas, without spaces (or empty)",
    )


@dataclass(frozen=True, slots=True)
class TrainerConfig(ConfigSection):
    """[trainer]: local training on each client."""

    section: ClassVar[str] = "trainer"
    epochs: int = setting(5, "local epochs per round", bounds="x >= 1")
    batch_size: int = setting(32, "samples per step (0 = full batch)", bounds="x >= 0")
    lr: float = setting(0.5, "learning rate", bounds="x > 0")


@dataclass(frozen=True, slots=True)
class StrategyConfig(ConfigSection):
    """[strategy]: how the server combines client updates."""

    section: ClassVar[str] = "strategy"
    name: str = setting("fedavg", "aggregation strategy or algorithm", registry=STRATEGIES)
    server_lr: float = setting(
        0.0,
        "server learning rate of fedavgm, fedadagrad, fedadam, fedyogi, scaffold and fedbuff "
        "(0 = the algorithm's default)",
        bounds="x >= 0",
    )
    momentum: float = setting(0.9, "server momentum (fedavgm)", bounds="0 <= x < 1")
    beta1: float = setting(
        0.9, "first-moment decay (fedadagrad, fedadam, fedyogi)", bounds="0 <= x < 1"
    )
    beta2: float = setting(0.99, "second-moment decay (fedadam, fedyogi)", bounds="0 <= x < 1")
    tau: float = setting(
        0.001,
        "adaptivity: added to the root of the second moment (fedadagrad, fedadam, fedyogi)",
        bounds="x > 0",
    )
    proximal_mu: float = setting(
        0.01, "strength of the pull to the global model (fedprox)", bounds="x >= 0"
    )
    num_malicious: int = setting(
        1, "attackers the rule must withstand, f (krum, multikrum, bulyan)", bounds="x >= 0"
    )
    num_selected: int = setting(
        0, "updates averaged by multikrum (0 = clients_per_round - num_malicious)", bounds="x >= 0"
    )
    trim_fraction: float = setting(
        0.1,
        "share of the largest and of the smallest values dropped (trimmed_mean)",
        bounds="0 <= x < 0.5",
    )
    max_norm: float = setting(1.0, "largest norm of a client update (norm_bound)", bounds="x > 0")
    local_layers: str = setting(
        "bn*,*.bn*",
        "comma-separated glob patterns of the arrays that stay on the clients (fedbn)",
        pattern=r"[^,\s]+(,[^,\s]+)*",
        pattern_text="glob patterns separated by commas, without spaces",
    )
    ditto_lambda: float = setting(
        0.1, "pull of each personal model toward the global one (ditto)", bounds="x >= 0"
    )
    fedasync_alpha: float = setting(
        0.5, "mixing weight of a fresh update (fedasync)", bounds="0 < x <= 1"
    )


@dataclass(frozen=True, slots=True)
class AggregationConfig(ConfigSection):
    """[aggregation]: when the server aggregates and whom it sends the model (synchronous
    rounds or asynchronous training; docs/async.md)."""

    section: ClassVar[str] = "aggregation"
    trigger: str = setting(
        "all",
        "when to aggregate: once every sampled client answered (all: synchronous rounds), "
        "after `goal` updates, or every `period` seconds; when not set, goal for an "
        "asynchronous strategy (fedasync, fedbuff) and all for any other",
        choices=TRIGGERS,
    )
    goal: int = setting(10, "updates per aggregation (goal trigger)", bounds="x >= 1")
    period: float = setting(
        5.0, "seconds between aggregations, simulated in simulation (time trigger)", bounds="x > 0"
    )
    broadcast: str = setting(
        "after_receiving",
        "asynchronous: send the current model to a fresh client as soon as one reports, or "
        "only after each aggregation",
        choices=BROADCASTS,
    )
    concurrency: int = setting(
        0,
        "asynchronous: clients training at once (0 = federation.clients_per_round)",
        bounds="x >= 0",
    )
    over_selection: float = setting(
        0.0,
        "synchronous: sample this share more clients than clients_per_round and close each "
        "round on the first clients_per_round replies",
        bounds="x >= 0",
    )
    staleness_tolerance: int = setting(
        10,
        "asynchronous: oldest update aggregated, in model versions; older ones are dropped",
        bounds="x >= 0",
    )
    staleness_discount: str = setting(
        "polynomial",
        "weight of an update s versions old: 1 (constant), (1 + s)^-a (polynomial), or 1 up "
        "to s = b then 1 / (a (s - b) + 1) (hinge)",
        choices=DISCOUNTS,
    )
    staleness_exponent: float = setting(
        0.5, "a of the polynomial and hinge discounts", bounds="x > 0"
    )
    staleness_hinge: float = setting(
        4.0, "b of the hinge discount: staleness that still counts fully", bounds="x >= 0"
    )


@dataclass(frozen=True, slots=True)
class PrivacyConfig(ConfigSection):
    """[privacy]: user-level differential privacy with accounting (docs/privacy.md)."""

    section: ClassVar[str] = "privacy"
    mode: str = setting(
        "none",
        "central: the server clips each update and noises the sum; client_clip: clients clip, "
        "the server noises; local: clients clip and noise their own update",
        choices=PRIVACY_MODES,
    )
    clipping_norm: float = setting(
        1.0,
        "largest L2 norm of a client's update (the start, with adaptive_clipping)",
        bounds="x > 0",
    )
    noise_multiplier: float = setting(
        1.0, "the noise's standard deviation divided by clipping_norm", bounds="x >= 0"
    )
    target_delta: float = setting(1e-5, "delta at which epsilon is reported", bounds="0 < x < 1")
    max_epsilon: float = setting(
        0.0,
        "end the run cleanly before a round would pass this epsilon (0 = no limit)",
        bounds="x >= 0",
    )
    adaptive_clipping: bool = setting(
        False, "move clipping_norm toward a quantile of the update norms (central, client_clip)"
    )
    target_quantile: float = setting(
        0.5, "share of updates adaptive clipping leaves unclipped", bounds="0 <= x <= 1"
    )
    clipping_lr: float = setting(
        0.2, "learning rate of adaptive clipping's geometric update", bounds="x >= 0"
    )
    clipped_count_stddev: float = setting(
        0.0,
        "noise of adaptive clipping's unclipped count (0 = clients_per_round / 20)",
        bounds="x >= 0",
    )
    secure_aggregation: bool = setting(
        False,
        "SecAgg+: the server sees only the sum of the updates (sum-based strategies; with "
        "mode none, client_clip or local)",
    )
    secagg_clip_range: float = setting(
        1.0,
        "secure aggregation: each coordinate of an update is clipped to [-x, x] before "
        "quantisation",
        bounds="x > 0",
    )
    secagg_bits: int = setting(
        32, "secure aggregation: arithmetic modulo 2^bits", bounds="16 <= x <= 62"
    )
    secagg_degree: int = setting(
        0,
        "secure aggregation: neighbours each client shares its secrets with (0 = 2 log2 of "
        "clients_per_round, at least 4)",
        bounds="x >= 0",
    )
    secagg_threshold: int = setting(
        0,
        "secure aggregation: neighbours that must answer to rebuild a client's secrets "
        "(0 = a majority of its neighbours)",
        bounds="x >= 0",
    )


@dataclass(frozen=True, slots=True)
class CompressionConfig(ConfigSection):
    """[compression]: compression of the models nodes send (docs/compression.md)."""

    section: ClassVar[str] = "compression"
    method: str = setting(
        "none",
        "int8, int4: unbiased stochastic quantisation of each array of the update to 8 or 4 "
        "bits; topk: only the largest values of each array of the update, the rest kept for "
        "later (error feedback); zstd: lossless Zstandard",
        registry=COMPRESSION_METHODS,
    )
    direction: str = setting(
        "up",
        "what is compressed: the clients' updates (up), the model the server sends (down), "
        "or both (topk: up only)",
        choices=COMPRESSION_DIRECTIONS,
    )
    topk_ratio: float = setting(
        0.01, "share of each array's values topk sends", bounds="0 < x <= 1"
    )
    zstd_level: int = setting(
        3, "Zstandard's level: higher is smaller and slower", bounds="1 <= x <= 22"
    )


@dataclass(frozen=True, slots=True)
class AttackConfig(ConfigSection):
    """[attack]: malicious clients, for robustness experiments (simulation)."""

    section: ClassVar[str] = "attack"
    kind: str = setting(
        "none",
        "what attackers do: flip the sign of, scale or add noise to their update, send NaN or "
        "infinite values, or train on flipped labels",
        choices=ATTACKS,
    )
    fraction: float = setting(0.0, "share of the clients that attack", bounds="0 <= x <= 1")
    scale: float = setting(10.0, "factor of a scaled or sign-flipped update")
    noise_std: float = setting(1.0, "standard deviation of the gaussian noise", bounds="x >= 0")


@dataclass(frozen=True, slots=True)
class SimulationConfig(ConfigSection):
    """[simulation]: simulated clients' speed, network and failures."""

    section: ClassVar[str] = "simulation"
    check_serialization: bool = setting(
        False, "encode and decode every message, as deployment would (slower)"
    )
    profiles_csv: str = setting(
        "",
        "CSV with one row per client (columns node_id, speed, uplink_mbps, downlink_mbps, "
        "latency, dropout, windows, window_period; windows are online seconds like "
        "0-100;200-350.5, repeated every window_period seconds if > 0); overrides the "
        "distributions below",
        is_path=True,
    )
    speed: float = setting(2000.0, "median client speed, samples per second", bounds="x > 0")
    speed_sigma: float = setting(0.0, "lognormal spread of client speeds", bounds="x >= 0")
    slow_fraction: float = setting(
        0.0, "fraction of clients that are slow_factor times slower", bounds="0 <= x <= 1"
    )
    slow_factor: float = setting(10.0, "how many times slower a slow client is", bounds="x >= 1")
    uplink_mbps: float = setting(20.0, "client upload bandwidth, Mbit/s", bounds="x > 0")
    downlink_mbps: float = setting(100.0, "client download bandwidth, Mbit/s", bounds="x > 0")
    latency: float = setting(0.05, "one-way network latency, seconds", bounds="x >= 0")
    dropout: float = setting(
        0.0, "probability that a client silently fails a message", bounds="0 <= x <= 1"
    )
    availability: float = setting(
        1.0, "share of the time each client is online (1 = always)", bounds="0 < x <= 1"
    )
    availability_period: float = setting(
        0.0,
        "seconds of one on/off cycle of a client's availability (needed when availability < 1)",
        bounds="x >= 0",
    )
    offline: str = setting(
        "wait",
        "what a message to an offline client does: wait for its next window, or fail at once",
        choices=("wait", "fail"),
    )
    client_state_mb: float = setting(
        0.0,
        "memory for client state that outlives a round (scaffold, ditto, fedbn); beyond it "
        "the least recently used spills to a temporary directory (0 = no limit)",
        bounds="x >= 0",
    )
    workers: int = setting(
        0,
        "processes running client work in parallel: 0 = decide by measuring (one per core, "
        "started in the background, once client updates take 5 ms or more on one core; back "
        "to this process if they answer slower), 1 = all in this process; results are the "
        "same, bit for bit, for any number",
        bounds="x >= 0",
    )
    backend: str = setting(
        "local",
        "where client work runs: this machine (simulation.workers processes) or Ray "
        '(pip install "fedbus[ray]")',
        choices=("local", "ray"),
    )
    ray_address: str = setting(
        "",
        'the Ray cluster to join with backend = "ray" (e.g. "auto" or "ray://head:10001"); '
        "empty starts a local Ray for the run",
    )
    memory_budget_mb: float = setting(
        DEFAULT_MEMORY_BUDGET_MB,
        "replies in flight to the server kept in memory, MB; beyond it each waits in a spill "
        "file and the server reads it from there (results are the same; 0 = spill every "
        "reply of 64 KiB or more)",
        bounds="x >= 0",
    )
    spill_dir: str = setting(
        "",
        "directory for spill files (made if missing; a private folder in it is removed after "
        "the run); empty: the system's temporary directory",
    )


@dataclass(frozen=True, slots=True)
class DeploymentConfig(ConfigSection):
    """[deployment]: the gRPC server of `fedbus server`: room, budgets and identity."""

    section: ClassVar[str] = "deployment"
    max_clients: int = setting(
        10_000, "client nodes connected at once; more are told the server is full", bounds="x >= 1"
    )
    receive_budget_per_peer_mb: int = setting(
        512,
        "largest message from one client the server holds in memory while it arrives, MiB "
        "(a larger one goes to a spill file)",
        bounds="1 <= x <= receive_budget_total_mb",
    )
    receive_budget_total_mb: int = setting(
        2048,
        "all messages from clients the server holds in memory, arriving or not yet let go of "
        "by its worker, MiB; beyond it they go to spill files, and when those are full too, "
        "clients wait",
        bounds="x >= 1",
    )
    spill_budget_mb: int = setting(
        65536,
        "all messages arriving at the server together in spill files, MiB (0 = never spill: "
        "a message larger than receive_budget_per_peer_mb is refused)",
        bounds="x >= 0",
    )
    spill_dir: str = setting(
        "",
        "directory for the server's spill files (made if missing; a private folder in it is "
        "removed when the server stops); empty: the system's temporary directory",
    )
    handshake_timeout: float = setting(
        5.0,
        "seconds a new connection has to finish its TLS and HTTP/2 handshake before it is closed",
        bounds="x > 0",
    )
    key_registry: str = setting(
        "",
        "JSON registry of node public keys (fedbus keys register); nodes then join by "
        "proving their key, and a revoked key is disconnected at once",
        is_path=True,
    )


@dataclass(frozen=True, slots=True)
class TrackingConfig(ConfigSection):
    """[tracking]: the run's metrics in TensorBoard and MLflow as well (fedbus[tracking];
    docs/tracking.md)."""

    section: ClassVar[str] = "tracking"
    tensorboard: bool = setting(
        False, "write TensorBoard event files to RUN_DIR/tensorboard/, one scalar per metric"
    )
    mlflow: bool = setting(
        False, "log the configuration as parameters and every round's metrics to an MLflow run"
    )
    mlflow_tracking_uri: str = setting(
        "",
        "where MLflow stores runs: a tracking server (http://host:5000) or a database such as "
        "sqlite:///mlflow.db; empty: a SQLite store in the run directory, RUN_DIR/mlflow.db",
        pattern=_TRACKING_URI,
        pattern_text=(
            "empty, an http:// or https:// address, a file: URI, or a database URI such as "
            "sqlite:///mlflow.db or postgresql://host/db"
        ),
    )
    mlflow_experiment: str = setting(
        "fedbus",
        "the MLflow experiment the run belongs to (created when missing)",
        pattern=r"\S(.{0,498}\S)?",
        pattern_text="a name of 1 to 500 characters, not starting or ending with a space",
    )


SECTIONS: dict[str, type[ConfigSection]] = {
    section.section: section
    for section in (
        RunConfig,
        FederationConfig,
        DataConfig,
        ModelConfig,
        TrainerConfig,
        StrategyConfig,
        AggregationConfig,
        PrivacyConfig,
        CompressionConfig,
        AttackConfig,
        SimulationConfig,
        DeploymentConfig,
        TrackingConfig,
    )
}


@dataclass(frozen=True, slots=True)
class Config:
    """A complete, validated configuration: one attribute per section.

    Build it with ``load_config`` (a file plus ``--set`` overrides) or ``config_from_dict``;
    ``Config()`` holds the built-in defaults. Sections check their keys when built, so a
    ``Config`` is always valid.

    Examples
    --------
    >>> Config().federation.clients_per_round
    10
    """

    run: RunConfig = field(default_factory=RunConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def _suggest(section: str, key: str) -> str:
    """The known key the user most likely meant as ``section.key``, or an empty string."""
    close = difflib.get_close_matches(key, list(section_fields(SECTIONS[section])), n=1)
    if close:
        return f"{section}.{close[0]}"
    # the right key in the wrong section, e.g. federation.lr for trainer.lr
    for other, other_class in SECTIONS.items():
        if key in section_fields(other_class):
            return f"{other}.{key}"
    everywhere = [
        f"{name}.{known}" for name in SECTIONS for known in section_fields(SECTIONS[name])
    ]
    close = difflib.get_close_matches(f"{section}.{key}", everywhere, n=1)
    return close[0] if close else ""


def _unknown_key(section: str, key: str) -> str:
    hint = _suggest(section, key)
    did_you_mean = f"did you mean {hint}? " if hint else ""
    known = ", ".join(section_fields(SECTIONS[section]))
    return f"{section}.{key}: unknown key; {did_you_mean}known keys in [{section}]: {known}"


def _unknown_section(section: str) -> str:
    # prefixes too: "fed" is too short for difflib to find "federation"
    close = [name for name in SECTIONS if section and name.startswith(section)]
    close = close or difflib.get_close_matches(section, list(SECTIONS), n=1)
    did_you_mean = f"did you mean [{close[0]}]? " if close else ""
    return f"[{section}]: unknown section; {did_you_mean}known sections: {', '.join(SECTIONS)}"


def _round_size_of_federation(
    sections: Mapping[str, ConfigSection], values: Mapping[str, Any], default: Any
) -> Any:
    """A federation of fewer clients than the declared default samples all of them."""
    num_clients = values["num_clients"]
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        return default  # refused: its problem is reported
    return min(default, num_clients)


def _trigger_of_strategy(
    sections: Mapping[str, ConfigSection], values: Mapping[str, Any], default: Any
) -> Any:
    """An asynchronous strategy (fedasync, fedbuff) aggregates every aggregation.goal updates;
    any other keeps synchronous rounds."""
    strategy = sections.get("strategy")
    if not isinstance(strategy, StrategyConfig):
        return default  # refused: its problem is reported
    try:
        asynchronous = STRATEGIES.get(strategy.name).strategy.asynchronous
    except PluginError:
        return default  # a plugin that fails to load is reported when the run builds it
    return "goal" if asynchronous else default


_Follow = Callable[[Mapping[str, ConfigSection], Mapping[str, Any], Any], Any]
#: Keys whose default follows other keys, by section: ``follow(sections, values, declared)``
#: reads the sections built before (SECTIONS' order) and the values of its own. A key the user
#: set is kept as set, to be refused if it contradicts another.
_FOLLOWING_DEFAULTS: dict[str, dict[str, _Follow]] = {
    "federation": {"clients_per_round": _round_size_of_federation},
    "aggregation": {"trigger": _trigger_of_strategy},
}


def _build(data: Mapping[str, Any], problems: list[str]) -> Config | None:
    """Add every problem of ``data`` to ``problems``; return the Config if there are none."""
    problems.extend(_unknown_section(str(name)) for name in data if name not in SECTIONS)
    sections: dict[str, ConfigSection] = {}
    for name, section in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, Mapping):
            problems.append(f"[{name}]: expected a table of keys, got {show(table)}")
            continue
        keys = section_fields(section)
        problems.extend(_unknown_key(name, str(key)) for key in table if key not in keys)
        values = {key: table.get(key, key_field.default) for key, key_field in keys.items()}
        for key, follow in _FOLLOWING_DEFAULTS.get(name, {}).items():
            if key not in table:
                values[key] = follow(sections, values, values[key])
        found = section_problems(section, values)
        problems.extend(found)
        if not found:
            sections[name] = section(**values)
    return None if problems else Config(**sections)  # type: ignore[arg-type]


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a ``Config`` from ``{"section": {"key": value}}``; missing keys take defaults.

    Raises
    ------
    ConfigError
        Listing every unknown section or key, wrong type and value that is not allowed.
    """
    problems: list[str] = []
    config = _build(data, problems)
    if config is None:
        raise ConfigError(format_problems(problems))
    return config


def _parse_override(text: str) -> tuple[str, str, object]:
    """Split ``"section.key=value"`` and read the value as TOML, or keep it as text."""
    name, equals, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not (equals and dot and section and key):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. federation.seed=3")
    raw = raw.strip()
    try:
        parsed = tomllib.loads(f"value = {raw}")
    except tomllib.TOMLDecodeError:
        return section, key, raw
    # a value with a newline could add keys of its own: accept exactly one TOML value
    if set(parsed) != {"value"}:
        return section, key, raw
    keys = section_fields(SECTIONS[section]) if section in SECTIONS else {}
    # a str key takes the text as typed: run.name=2024 names the run "2024"
    if key in keys and keys[key].type == "str" and not isinstance(parsed["value"], str):
        return section, key, raw
    return section, key, parsed["value"]


#: How the files a config is often mistaken for begin: a NumPy archive (a zip) and a .npy array.
_DATA_MAGIC: tuple[bytes, ...] = (b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")
_DATA_SUFFIXES: tuple[str, ...] = (".npz", ".npy", ".csv")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problem = f"not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line})"
        raise ConfigError(_not_a_config(path, raw, problem, "save it as UTF-8")) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_not_a_config(path, raw, f"not valid TOML ({exc})")) from exc


def _not_a_config(path: Path, raw: bytes, problem: str, fix: str = "") -> str:
    """Why ``path`` is refused as a config, and what to do; a dataset is sent to data.path."""
    name = str(path)
    if raw.startswith(_DATA_MAGIC) or path.suffix.lower() in _DATA_SUFFIXES:
        kind = "csv" if path.suffix.lower() == ".csv" else "npz"
        return (
            f"config file {name!r} is {problem} and looks like a dataset: a config must be a "
            f"UTF-8 TOML file, and a dataset goes in data.path, e.g. "
            f"--set data.dataset={kind} --set data.path={name}"
        )
    return f"config file {name!r} is {problem}" + (
        f": a config must be a UTF-8 TOML file; {fix}" if fix else ""
    )


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML config file, apply ``--set`` overrides and validate the result.

    Parameters
    ----------
    path : str, Path or None
        A TOML file; None starts from the built-in defaults.
    overrides : sequence of str
        ``"section.key=value"`` strings, applied in order after the file. The value is read as
        a TOML value (``3``, ``0.5``, ``false``, ``"text"``); a bare word that is not valid
        TOML, such as ``synthetic``, is taken as a string, and so is any value of a text key.

    Returns
    -------
    Config
        The validated configuration.

    Raises
    ------
    ConfigError
        The file cannot be read or is not TOML, or keys are unknown, of the wrong type or not
        allowed; the message names every such key as ``section.key``.

    Examples
    --------
    >>> load_config(None, ["trainer.lr=0.05", "run.plot=false"]).trainer.lr
    0.05
    """
    data: dict[str, Any] = {} if path is None else _read_toml(Path(path))
    problems: list[str] = []
    for text in [overrides] if isinstance(overrides, str) else overrides:
        try:
            section, key, value = _parse_override(text)
        except ConfigError as problem:
            problems.append(str(problem))
            continue
        table = data.setdefault(section, {})
        if isinstance(table, dict):
            table[key] = value
    config = _build(data, problems)
    if config is None:
        raise ConfigError(format_problems(problems, "" if path is None else f"config {path}"))
    return config


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """Every key of ``config`` as ``{"section": {"key": value}}``, in declaration order."""
    return {
        name: {key: getattr(getattr(config, name), key) for key in section_fields(section)}
        for name, section in SECTIONS.items()
    }


def config_to_toml(config: Config) -> str:
    """The fully resolved ``config`` as TOML; ``load_config`` of it gives an equal Config."""
    header = "# fedbus configuration with every key resolved; reference: docs/config.md\n\n"
    return header + tomli_w.dumps(config_to_dict(config))


def reference_markdown() -> str:
    """The key reference of ``docs/config.md``: one Markdown table per section."""
    parts: list[str] = []
    for name, section in SECTIONS.items():
        summary = inspect.cleandoc(section.__doc__ or "").partition(": ")[2]
        parts.append(f"### [{name}]\n\n{summary[:1].upper()}{summary[1:]}\n")
        parts.append("| key | type | default | allowed | meaning |\n|---|---|---|---|---|")
        for key, key_field in section_fields(section).items():
            spec = key_spec(key_field)
            cells = [f"`{name}.{key}`", str(key_field.type), f"`{show(key_field.default)}`"]
            anything = "true or false" if key_field.type == "bool" else "any"
            cells += [spec.rule(name) or anything, spec.meaning]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)
