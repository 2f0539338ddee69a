"""From a ``Config`` to a runnable federation: data, model, server, clients and runtime.

This is the one place where configuration keys meet the objects they configure; everything
below ``run`` takes plain arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from fedbus.data import ClientData, FederatedDataset
from fedbus.data.registry import DATASETS
from fedbus.errors import ConfigError, InvalidArgumentError, InvalidTypeError, PluginError
from fedbus.fl import (
    AsyncServer,
    Callback,
    CentralEvaluation,
    Client,
    EarlyStopping,
    EvaluateFn,
    RoundEndFunction,
    RoundRecord,
    Server,
    ServerBase,
    Staleness,
    Strategy,
    TrainingSettings,
)
from fedbus.fl.attacks import AttackedTrainer, choose_attackers, flip_labels
from fedbus.fl.compression import build_codec
from fedbus.fl.mods import MODS, build_mods
from fedbus.fl.privacy import DifferentialPrivacy
from fedbus.fl.registry import STRATEGIES
from fedbus.fl.secagg import SecAggClient, SecAggServer
from fedbus.fl.state import ClientStateStore
from fedbus.fl.stragglers import Stragglers
from fedbus.plugins import Settings
from fedbus.run.algorithms import algorithm, build_strategy, client_class, settings_of
from fedbus.run.config import Config
from fedbus.run.resume import ResumePoint
from fedbus.runtime.ray import RAY  # the import registers the simulation's "ray" backend
from fedbus.runtime.simulation import (
    ProfileDistribution,
    ProfileSource,
    ProfileTable,
    Simulation,
    load_profiles_csv,
)
from fedbus.train import NumpyModel, NumpyTrainer, Trainer
from fedbus.train.registry import MODELS
from fedbus.worker import CLIENT_ROLE, SERVER_ROLE

if TYPE_CHECKING:
    # imports torch, transformers and peft: only a run with model.framework = "hf" loads it
    from fedbus.train.hf import CausalLM

__all__ = [
    "Federation",
    "ModelKit",
    "build_client",
    "build_config_model",
    "build_federation",
    "build_model_and_data",
    "build_server",
    "check_compression",
    "check_mods",
    "configured_dataset",
    "early_stopping",
    "mod_names",
]

#: The mod that clips (and noises) on the clients in privacy's client_clip and local modes.
CLIENT_PRIVACY_MOD = "privacy"
#: The mod ``[compression]`` installs on the server and every client, outermost.
COMPRESSION_MOD = "compression"

Arrays = dict[str, np.ndarray[Any, Any]]


class ModelKit:
    """The model ``[model]`` names, for data of one shape, in NumPy or PyTorch.

    It makes what the rest of a run needs, whichever framework trains: the initial arrays, a
    trainer for one client's data, and the central evaluation. Both frameworks name and shape
    the arrays of ``softmax`` and ``mlp`` alike. The model comes from the model registry
    (``fedbus.train.registry``); torch is imported only for a torch model. With
    ``model.framework = "hf"`` it is a causal language model instead (``language_model``, a
    ``fedbus.train.hf.CausalLM``; docs/llm.md): the data are text blocks, ``num_features`` the
    block size and ``num_classes`` the tokenizer's vocabulary.
    """

    def __init__(self, config: Config, num_features: int, num_classes: int) -> None:
        model = config.model
        self.framework, self.name = model.framework, model.name
        self.num_features, self.num_classes = num_features, num_classes
        self._settings = settings_of(config)
        self._trainer_options: dict[str, Any] = {
            "epochs": config.trainer.epochs,
            "batch_size": config.trainer.batch_size,
            "lr": config.trainer.lr,
        }
        self.language_model: CausalLM | None = None
        if self.framework == "hf":
            self._language_model(config, num_features, num_classes)
            return
        if config.data.dataset == "text":
            raise ConfigError(
                'data.dataset = "text" trains a causal language model: set model.framework = '
                '"hf" and model.hf_model (docs/llm.md)'
            )
        source = MODELS.get(model.name)
        if self.framework == "numpy":
            if source.numpy is None:
                raise ConfigError(
                    f'model.name = "{model.name}" is a PyTorch model: set model.framework = '
                    '"torch" (and install fedbus[torch])'
                )
            self.numpy_model: NumpyModel | None = source.numpy(
                num_features, num_classes, self._settings
            )
        else:
            if source.torch is None:
                raise ConfigError(
                    f'model.name = "{model.name}" is a NumPy model: set model.framework = "numpy"'
                )
            self.numpy_model = None
        self._build_torch = source.torch
        # The server's own torch module (initial arrays, central evaluation); built now so that
        # a missing torch fails here, with the install hint, rather than in a client.
        self._server_module: Any = None if self.numpy_model is not None else self._torch_model()

    def _language_model(self, config: Config, block_size: int, vocab_size: int) -> None:
        """``model.framework = "hf"``: a causal language model, trained on text blocks."""
        if config.data.dataset != "text":
            raise ConfigError(
                'model.framework = "hf" trains a causal language model on text: set '
                'data.dataset = "text" and data.path (docs/llm.md)'
            )
        # fedbus[llm]: torch, transformers and peft are imported only for a language model.
        from fedbus.train.hf import CausalLM

        self.numpy_model, self._build_torch, self._server_module = None, None, None
        self.language_model = CausalLM.from_settings(self._settings, block_size, vocab_size)

    def _torch_model(self) -> Any:
        assert self._build_torch is not None, "a torch ModelKit has a torch builder"
        return self._build_torch(self.num_features, self.num_classes, self._settings)

    def init(self, seed: int) -> Arrays:
        """The initial global model."""
        if self.language_model is not None:
            return self.language_model.initial_arrays(seed)
        if self.numpy_model is not None:
            return self.numpy_model.init(seed=seed)
        from fedbus.train.torch_models import init_state

        return init_state(self._server_module, seed)

    def trainer(self, data: ClientData, seed: int) -> Trainer:
        """A trainer on one client's data, with the configured epochs, batch size and lr.

        Each torch trainer gets a module of its own: clients may train on parallel threads.
        """
        splits = (data.x_train, data.y_train, data.x_test, data.y_test)
        if self.language_model is not None:
            return self.language_model.trainer(*splits, **self._trainer_options, seed=seed)
        if self.numpy_model is not None:
            return NumpyTrainer(self.numpy_model, *splits, **self._trainer_options, seed=seed)
        from fedbus.train.torch_trainer import TorchTrainer

        return TorchTrainer(self._torch_model(), *splits, **self._trainer_options, seed=seed)

    def evaluate_fn(self, x_test: np.ndarray[Any, Any], y_test: np.ndarray[Any, Any]) -> EvaluateFn:
        """Central evaluation of global arrays on ``(x_test, y_test)``: loss and accuracy."""
        if self.language_model is not None:
            return self.language_model.evaluate_fn(x_test, y_test)
        model = self.numpy_model
        if model is None:
            from fedbus.train.torch_trainer import TorchTrainer

            trainer = TorchTrainer(self._server_module, x_test, y_test)

            def evaluate_torch(arrays: Arrays) -> tuple[float, dict[str, float]]:
                loss, _, metrics = trainer.evaluate(arrays, {})
                return loss, {"accuracy": metrics["accuracy"]}

            return evaluate_torch

        def evaluate(arrays: Arrays) -> tuple[float, dict[str, float]]:
            accuracy = float(np.mean(model.predict(arrays, x_test) == y_test))
            return model.loss(arrays, x_test, y_test), {"accuracy": accuracy}

        return evaluate

    def __repr__(self) -> str:
        return f"ModelKit({self.framework} {self.name}, {self.num_features} -> {self.num_classes})"


@dataclass(frozen=True, slots=True)
class Federation:
    """Everything a configured run is made of, ready to ``simulation.run()``."""

    config: Config
    dataset: FederatedDataset
    model: ModelKit
    server: ServerBase
    client_fn: ConfiguredClients
    simulation: Simulation


def configured_dataset(config: Config) -> FederatedDataset:
    """The dataset ``data.dataset`` names, from the dataset registry (``fedbus.data.registry``).

    ``fedbus run`` and ``fedbus partition`` both build their data here, so the partition report
    shows exactly the split a run trains on.
    """
    name = config.data.dataset
    try:
        return DATASETS.get(name).build(settings_of(config))
    except ConfigError:
        raise
    except (InvalidArgumentError, InvalidTypeError) as exc:
        raise ConfigError(f"dataset {name!r}: {exc}") from exc


def _profiles(config: Config) -> ProfileSource:
    simulation = config.simulation
    distribution = ProfileDistribution(
        speed=simulation.speed,
        speed_sigma=simulation.speed_sigma,
        slow_fraction=simulation.slow_fraction,
        slow_factor=simulation.slow_factor,
        uplink_mbps=simulation.uplink_mbps,
        downlink_mbps=simulation.downlink_mbps,
        latency=simulation.latency,
        dropout=simulation.dropout,
        seed=config.federation.seed,
        availability=simulation.availability,
        availability_period=simulation.availability_period,
    )
    if not simulation.profiles_csv:
        return distribution
    table = load_profiles_csv(simulation.profiles_csv)
    # Clients missing from the trace get the configured distribution's median device.
    return ProfileTable(table, distribution.typical())


def build_model_and_data(config: Config) -> tuple[FederatedDataset, ModelKit]:
    """The dataset split among ``federation.num_clients`` clients, and the model to train."""
    dataset = configured_dataset(config)
    return dataset, build_config_model(config, dataset.num_features, dataset.num_classes)


def build_config_model(config: Config, num_features: int, num_classes: int) -> ModelKit:
    """The model ``config.model`` names, for data of this shape."""
    return ModelKit(config, num_features, num_classes)


def build_server(
    config: Config,
    dataset: FederatedDataset,
    model: ModelKit,
    on_round_end: Callable[[RoundRecord], None] | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    initial_arrays: Mapping[str, np.ndarray[Any, Any]] | None = None,
    first_round: int = 1,
    sampler_state: Mapping[str, Any] | None = None,
    seeded_noise: bool = True,
) -> ServerBase:
    """The FL server ``config`` describes, evaluating on ``dataset``'s central test set.

    ``aggregation.trigger = "all"`` gives the synchronous ``Server``; ``"goal"`` and ``"time"``
    give ``AsyncServer``. Its callbacks, in order: central evaluation, early stopping (when
    ``federation.early_stopping_patience`` is set), ``callbacks``, then ``on_round_end``.
    ``initial_arrays``, ``first_round`` and ``sampler_state`` continue a run (a resumed
    deployment): the model, the round and the client sampler where it stopped.
    ``seeded_noise`` draws differential privacy's noise from the federation's seed, so that a
    simulation repeats; a deployment sets it False, since the seed is no secret. The server gets
    the mods ``federation.server_mods`` names.
    """
    federation, trainer = config.federation, config.trainer
    check_compression(config)
    strategy = _private(config, build_strategy(config), seeded_noise)
    _check_schedule(config, strategy)
    every_round: list[Callback] = [
        CentralEvaluation(model.evaluate_fn(*dataset.test_set()), every=federation.evaluate_every),
        *early_stopping(config),
        *callbacks,
    ]
    if on_round_end is not None:
        every_round.append(RoundEndFunction(on_round_end))
    settings = TrainingSettings(
        num_rounds=federation.num_rounds,
        train_config={"epochs": trainer.epochs, "batch_size": trainer.batch_size, "lr": trainer.lr},
        seed=federation.seed,
        first_round=first_round,
        sampler_state=sampler_state,
        callbacks=tuple(every_round),
        watchdog=federation.watchdog or None,
    )
    arrays = model.init(federation.seed) if initial_arrays is None else dict(initial_arrays)
    server = _build_server(config, strategy, arrays, settings)
    names = mod_names(config, SERVER_ROLE)
    if names:
        seed = config.federation.seed if seeded_noise else None
        server.use(*_build_mods(config, names, SERVER_ROLE, seed))
    return server


def early_stopping(config: Config) -> list[Callback]:
    """``[EarlyStopping(...)]`` as ``federation.early_stopping_*`` asks, or ``[]`` (patience 0).

    Raises ``ConfigError`` when the metric it watches is never measured in this run.
    """
    federation = config.federation
    if federation.early_stopping_patience == 0:
        return []
    metric = federation.early_stopping_metric
    if metric.startswith("test_") and federation.evaluate_every == 0:
        raise ConfigError(
            f'federation.early_stopping_metric = "{metric}" is measured only after the last '
            "round with federation.evaluate_every = 0: set evaluate_every >= 1"
        )
    if metric.startswith("federated_") and federation.federated_evaluate_every == 0:
        raise ConfigError(
            f'federation.early_stopping_metric = "{metric}" needs a federated evaluation: set '
            'federation.federated_evaluate_every >= 1, or watch "test_accuracy"'
        )
    return [
        EarlyStopping(
            metric,
            patience=federation.early_stopping_patience,
            min_delta=federation.early_stopping_min_delta,
        )
    ]


def _build_server(
    config: Config, strategy: Strategy, arrays: Arrays, settings: TrainingSettings
) -> ServerBase:
    """The server of the configured schedule, with ``settings``."""
    federation, aggregation = config.federation, config.aggregation
    if config.privacy.secure_aggregation:
        return _secure_server(config, strategy, arrays, settings)
    if aggregation.trigger == "all":
        return Server(
            strategy,
            arrays,
            clients_per_round=federation.clients_per_round,
            min_replies=federation.min_replies or None,
            round_timeout=federation.round_timeout or None,
            max_round_retries=federation.max_round_retries,
            over_selection=aggregation.over_selection,
            federated_evaluate_every=federation.federated_evaluate_every,
            clients_per_evaluation=federation.clients_per_evaluation or None,
            stragglers=_stragglers(config),
            settings=settings,
        )
    return AsyncServer(
        strategy,
        arrays,
        concurrency=_concurrency(config),
        trigger=aggregation.trigger,
        goal=aggregation.goal,
        period=aggregation.period,
        broadcast=aggregation.broadcast,
        staleness=Staleness(
            tolerance=aggregation.staleness_tolerance,
            discount=aggregation.staleness_discount,
            exponent=aggregation.staleness_exponent,
            hinge=aggregation.staleness_hinge,
        ),
        request_timeout=federation.round_timeout or None,
        settings=settings,
    )


def _stragglers(config: Config) -> Stragglers | None:
    """The emulated stragglers ``federation.straggler_fraction`` asks for, or None."""
    federation = config.federation
    if federation.straggler_fraction == 0:
        return None
    if federation.drop_stragglers and federation.straggler_fraction == 1:
        raise ConfigError(
            "federation.straggler_fraction = 1 with drop_stragglers = true drops every sampled "
            "client: lower the fraction, or set drop_stragglers = false for partial work"
        )
    if not federation.drop_stragglers and config.trainer.epochs < 2:
        raise ConfigError(
            "federation.straggler_fraction: stragglers train 1..epochs-1 local epochs, but "
            f"trainer.epochs = {config.trainer.epochs}; set trainer.epochs >= 2 or "
            "federation.drop_stragglers = true"
        )
    stragglers = Stragglers(
        federation.straggler_fraction, federation.drop_stragglers, federation.seed
    )
    active = stragglers.active(federation.clients_per_round)
    if federation.drop_stragglers and federation.min_replies > active:
        raise ConfigError(
            f"federation.min_replies = {federation.min_replies}, but dropping "
            f"{stragglers.count(federation.clients_per_round)} stragglers of "
            f"{federation.clients_per_round} sampled clients leaves {active}: set "
            f"min_replies <= {active} (0 chooses for you)"
        )
    return stragglers


def _private(config: Config, strategy: Strategy, seeded_noise: bool) -> Strategy:
    """``strategy`` wrapped in ``DifferentialPrivacy`` when ``[privacy]`` asks for it."""
    privacy, federation = config.privacy, config.federation
    if privacy.mode == "none":
        return strategy
    if not strategy.aggregates_by_sum:
        by_sum = [name for name in STRATEGIES.builtin_names() if _aggregates_by_sum(name)]
        raise ConfigError(
            f'privacy.mode = "{privacy.mode}" noises the sum of the updates, but strategy.name = '
            f'"{config.strategy.name}" needs every update: use {", ".join(by_sum)}'
        )
    if config.aggregation.trigger != "all":
        raise ConfigError(
            "privacy.mode accounts for synchronous rounds of sampled clients: "
            + _synchronous_fix(config, strategy)
        )
    rng = np.random.default_rng([federation.seed, 0xD9]) if seeded_noise else None
    try:
        return DifferentialPrivacy(
            strategy,
            mode=privacy.mode,
            clipping_norm=privacy.clipping_norm,
            noise_multiplier=privacy.noise_multiplier,
            num_clients=federation.num_clients,
            clients_per_round=federation.clients_per_round,
            target_delta=privacy.target_delta,
            max_epsilon=privacy.max_epsilon or None,
            adaptive_clipping=privacy.adaptive_clipping,
            target_quantile=privacy.target_quantile,
            clipping_lr=privacy.clipping_lr,
            clipped_count_stddev=privacy.clipped_count_stddev or None,
            rng=rng,
        )
    except InvalidArgumentError as exc:
        raise ConfigError(f"[privacy]: {exc}") from exc


def _aggregates_by_sum(name: str) -> bool:
    """Whether the registered strategy ``name`` needs only the sum of the updates."""
    return STRATEGIES.get(name).strategy.aggregates_by_sum


def _secure_server(
    config: Config, strategy: Strategy, arrays: Arrays, settings: TrainingSettings
) -> SecAggServer:
    """The SecAgg+ server ``[privacy]`` asks for, or a ConfigError naming what to change."""
    privacy, federation = config.privacy, config.federation
    problems = []
    if config.aggregation.trigger != "all":
        problems.append(
            "secure aggregation runs synchronous rounds: " + _synchronous_fix(config, strategy)
        )
    if privacy.mode == "central" or privacy.adaptive_clipping:
        problems.append(
            "privacy.secure_aggregation hides each update from the server, so it cannot clip "
            'them (mode = "central") or count the clipped ones (adaptive_clipping): use '
            'mode = "client_clip" without adaptive clipping'
        )
    if federation.federated_evaluate_every > 0 or config.aggregation.over_selection > 0:
        problems.append(
            "secure aggregation rounds have no federated evaluation and no over-selection: set "
            "federation.federated_evaluate_every and aggregation.over_selection to 0"
        )
    if client_class(config) is not Client:
        problems.append(
            f'strategy.name = "{config.strategy.name}" has clients of its own, which do not '
            "take part in secure aggregation"
        )
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return SecAggServer(
            strategy,
            arrays,
            clients_per_round=federation.clients_per_round,
            degree=privacy.secagg_degree or None,
            threshold=privacy.secagg_threshold or None,
            clip_range=privacy.secagg_clip_range,
            bits=privacy.secagg_bits,
            stage_timeout=federation.round_timeout or None,
            settings=settings,
        )
    except InvalidArgumentError as exc:
        raise ConfigError(f"[privacy] secure aggregation: {exc}") from exc


def _synchronous_fix(config: Config, strategy: Strategy) -> str:
    """What to change for synchronous rounds: the trigger, or an asynchronous strategy."""
    if strategy.asynchronous:
        return (
            f'set strategy.name to a synchronous strategy (such as "fedavg") instead of '
            f'"{config.strategy.name}", which trains asynchronously'
        )
    return 'set aggregation.trigger = "all"'


def _concurrency(config: Config) -> int:
    return config.aggregation.concurrency or config.federation.clients_per_round


def _check_schedule(config: Config, strategy: Strategy) -> None:
    """Refuse, naming the keys to change, what the configured server cannot run."""
    aggregation, federation = config.aggregation, config.federation
    name = config.strategy.name
    if federation.straggler_fraction > 0 and config.privacy.secure_aggregation:
        raise ConfigError(
            "federation.straggler_fraction is not emulated with privacy.secure_aggregation "
            "(SecAgg+ rounds handle real dropouts): set one of them off"
        )
    if aggregation.trigger == "all":
        if strategy.asynchronous:
            raise ConfigError(
                f'strategy.name = "{name}" trains asynchronously, but aggregation.trigger = "all" '
                "runs synchronous rounds: remove aggregation.trigger (it then follows the "
                'strategy: "goal"), or set it to "goal" (aggregate every aggregation.goal '
                'updates) or "time"'
            )
        return
    problems = []
    if strategy.synchronous_only:
        problems.append(
            f'strategy.name = "{name}" needs synchronous rounds: set aggregation.trigger = "all"'
        )
    if federation.federated_evaluate_every > 0:
        problems.append(
            "federation.federated_evaluate_every runs with synchronous rounds only: set it to 0 "
            '(central evaluation still runs) or aggregation.trigger = "all"'
        )
    if federation.straggler_fraction > 0:
        problems.append(
            "federation.straggler_fraction emulates stragglers of synchronous rounds; "
            "asynchronous training has no rounds to straggle in: set it to 0"
        )
    if aggregation.over_selection > 0:
        problems.append(
            "aggregation.over_selection applies to synchronous rounds; asynchronous training "
            "keeps aggregation.concurrency clients busy instead: set it to 0"
        )
    smallest = aggregation.goal if aggregation.trigger == "goal" else 1
    try:
        strategy.check_round_size(smallest)
    except InvalidArgumentError as exc:
        what = (
            f"aggregation.goal = {smallest}"
            if aggregation.trigger == "goal"
            else ('aggregation.trigger = "time" (a window may close on one update)')
        )
        problems.append(f"{what}: each aggregation is a round here; {exc}")
    concurrency = _concurrency(config)
    if concurrency > federation.num_clients:
        problems.append(
            f"aggregation.concurrency = {concurrency} exceeds federation.num_clients = "
            f"{federation.num_clients}"
        )
    after_aggregating = aggregation.broadcast == "after_aggregating"
    if aggregation.trigger == "goal" and after_aggregating and aggregation.goal > concurrency:
        problems.append(
            f"aggregation.goal = {aggregation.goal} exceeds the {concurrency} clients busy at "
            'once with broadcast = "after_aggregating": lower the goal or raise '
            "aggregation.concurrency"
        )
    if problems:
        raise ConfigError("\n".join(problems))


def build_client(
    config: Config,
    model: ModelKit,
    data: ClientData,
    node_id: int | None,
    state: ClientStateStore | None = None,
    *,
    seeded_noise: bool = True,
) -> Client:
    """The FL client of node ``node_id``, training ``model`` on ``data`` as configured.

    The client's class is the configured algorithm's; an attacker (``[attack]``) trains on
    flipped labels or poisons its update. ``state`` is the store of per-client state that a
    simulation shares among its clients. ``node_id=None`` leaves the id to the runtime (a
    deployed client with its own data); its trainer is then seeded as node 0's.

    The client gets the mods its configuration needs (``mod_names``), built with the client's
    seed: a copy built again by a worker process or on Ray is the same client. ``seeded_noise=
    False`` (deployments) gives them no seed, so that local differential privacy's noise comes
    from the operating system rather than from the federation's seed, which is no secret.
    """
    federation, attack = config.federation, config.attack
    # One stream per client, the same in every run with this seed.
    seed = federation.seed * 1_000_003 + (node_id or 0)
    attacking = attack.kind != "none" and node_id in choose_attackers(
        federation.num_clients, attack.fraction, federation.seed
    )
    if attacking and attack.kind == "label_flip":
        data = replace(data, y_train=flip_labels(data.y_train, model.num_classes))
    trainer = model.trainer(data, seed)
    if attacking and attack.kind != "label_flip":
        trainer = AttackedTrainer(
            trainer, attack.kind, scale=attack.scale, noise_std=attack.noise_std, seed=seed
        )
    chosen: type[Client] = (
        SecAggClient if config.privacy.secure_aggregation else client_class(config)
    )
    client = chosen(trainer, node_id, state=state)
    names = mod_names(config, CLIENT_ROLE)
    if names:
        client.use(*_build_mods(config, names, CLIENT_ROLE, seed if seeded_noise else None))
    return client


def mod_names(config: Config, role: str) -> tuple[str, ...]:
    """The mods a node of ``role`` gets, outermost first, each once.

    With ``compression.method`` set, both start with ``"compression"``: outermost, it restores
    a compressed request before any other mod reads the model, and compresses what they made.
    Then a client gets those its strategy needs (``Strategy.client_mods``: FedProx's
    ``"fedprox"``), ``"privacy"`` when ``privacy.mode`` clips on the clients (client_clip,
    local), then those ``federation.client_mods`` names; the server, those
    ``federation.server_mods`` names.
    """
    federation = config.federation
    first = [COMPRESSION_MOD] if config.compression.method != "none" else []
    if role == SERVER_ROLE:
        return tuple(dict.fromkeys([*first, *_split(federation.server_mods)]))
    names = [*first, *algorithm(config).strategy.client_mods]
    if config.privacy.mode not in ("none", "central"):
        names.append(CLIENT_PRIVACY_MOD)
    names += _split(federation.client_mods)
    return tuple(dict.fromkeys(names))


def _split(names: str) -> tuple[str, ...]:
    return tuple(names.split(",")) if names else ()


def _build_mods(
    config: Config, names: tuple[str, ...], role: str, seed: int | None
) -> list[object]:
    """The mods ``names`` names for one node, or a ConfigError naming the key to change."""
    try:
        return build_mods(names, role, _settings(config), seed)
    except (PluginError, InvalidArgumentError) as exc:
        key = "server_mods" if role == SERVER_ROLE else "client_mods"
        raise ConfigError(f"federation.{key}: {exc}") from exc


@functools.lru_cache(maxsize=4)
def _settings(config: Config) -> Settings:
    """``settings_of(config)``, made once per config rather than once per client built."""
    return settings_of(config)


def check_mods(config: Config) -> None:
    """Raise ``ConfigError`` now, rather than when the first client is built, for a mod that
    ``federation.client_mods`` or ``server_mods`` names and that is not known or not allowed
    on its nodes (the message lists the known mods), or for ``[compression]`` settings the
    run cannot honour (``check_compression``)."""
    check_compression(config)
    for role in (CLIENT_ROLE, SERVER_ROLE):
        for name in mod_names(config, role):
            try:
                registered = MODS.get(name)
            except PluginError as exc:
                raise ConfigError(f"federation.{role}_mods: {exc}") from exc
            if role not in registered.roles:
                raise ConfigError(
                    f"federation.{role}_mods: mod {name!r} runs on "
                    f"{' and '.join(sorted(registered.roles))} nodes only, not on the {role}"
                )


def check_compression(config: Config) -> None:
    """Raise ``ConfigError`` for a ``[compression]`` the rest of the configuration excludes.

    Secure aggregation masks each update as integers before it leaves the client, which no
    method can compress; privacy's client_clip mode has the server refuse an update above the
    clipping norm, which a lossy method's rounding (or top-k's residual) may push it over.
    """
    compression, privacy = config.compression, config.privacy
    method = compression.method
    if method == "none":
        return
    problems = []
    if privacy.secure_aggregation:
        problems.append(
            f'compression.method = "{method}" cannot compress the masked updates of secure '
            'aggregation: set compression.method = "none" or privacy.secure_aggregation = false'
        )
    if privacy.mode == "client_clip" and build_codec(method).lossy:
        problems.append(
            f'compression.method = "{method}" changes the clipped update, which the server of '
            'privacy.mode = "client_clip" then refuses: use method "zstd" (lossless), or '
            'privacy.mode = "central" or "local"'
        )
    if compression.direction != "up" and not build_codec(method).downstream:
        problems.append(
            f'compression.method = "{method}" compresses updates only: set '
            'compression.direction = "up"'
        )
    if problems:
        raise ConfigError("\n".join(problems))


class ConfiguredClients:
    """The client factory of a configured simulation: ``clients(node_id) -> Client``.

    Its clients share one ``ClientStateStore`` (sized by ``simulation.client_state_mb``). It
    travels to worker processes and Ray tasks as its config alone: there it builds the dataset
    and model again from the config (the same, as they are seeded), a store of its own, whose
    entries arrive with each task, and clients with the same mods (``build_client``).
    """

    def __init__(
        self,
        config: Config,
        dataset: FederatedDataset | None = None,
        model: ModelKit | None = None,
    ) -> None:
        self.config = config
        self._data = None if dataset is None or model is None else (dataset, model)
        budget = config.simulation.client_state_mb
        self.state = ClientStateStore(int(budget * 2**20) if budget > 0 else None)

    def __call__(self, node_id: int) -> Client:
        if self._data is None:
            self._data = build_model_and_data(self.config)
        dataset, model = self._data
        return build_client(self.config, model, dataset.client(node_id - 1), node_id, self.state)

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}  # what is built from it is built again where it lands

    def __setstate__(self, state: dict[str, Any]) -> None:
        fresh = ConfiguredClients(state["config"])
        self.config, self._data, self.state = fresh.config, fresh._data, fresh.state


def build_federation(
    config: Config,
    on_round_end: Callable[[RoundRecord], None] | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    resume: ResumePoint | None = None,
) -> Federation:
    """Build the dataset, model, server, client factory and simulation that ``config`` describes.

    The server runs ``callbacks``, then ``on_round_end``, after its own (``build_server``).
    ``resume`` continues a run from a checkpoint of it (``fedbus.run.resume``).
    """
    federation = config.federation
    if federation.round_timeout == 0 and config.simulation.dropout > 0:
        raise ConfigError(
            "simulation.dropout > 0 needs federation.round_timeout > 0: a lost reply is only "
            "noticed when the round times out"
        )
    availability = config.simulation.availability
    if availability < 1 and config.simulation.availability_period == 0:
        raise ConfigError(
            f"simulation.availability = {availability} needs simulation.availability_period "
            "> 0: set it to the seconds of one on/off cycle (e.g. 86400 for a daily cycle)"
        )
    check_mods(config)
    dataset, model = build_model_and_data(config)
    server = build_server(
        config,
        dataset,
        model,
        on_round_end,
        callbacks=callbacks,
        initial_arrays=None if resume is None else resume.arrays,
        first_round=1 if resume is None else resume.completed + 1,
        sampler_state=None if resume is None else resume.sampler,
    )
    client_fn = ConfiguredClients(config, dataset, model)
    simulation = Simulation(
        server,
        client_fn,
        num_clients=federation.num_clients,
        seed=federation.seed,
        profiles=_profiles(config),
        check_serialization=config.simulation.check_serialization,
        offline="fail" if config.simulation.offline == "fail" else "wait",
        workers=config.simulation.workers,
        backend=RAY if config.simulation.backend == RAY else "local",
        ray_address=config.simulation.ray_address or None,
        memory_budget_mb=config.simulation.memory_budget_mb,
        spill_dir=config.simulation.spill_dir or None,
        record_trace=config.run.trace,
    )
    if resume is not None:
        resume.apply(server, simulation, client_fn.state)
    return Federation(config, dataset, model, server, client_fn, simulation)
