"""Run a configured federation across processes and machines: the server side, the client side.

``run_server`` is ``fedbus server``: it builds the same server ``fedbus run`` simulates (the
same configuration, dataset, model and strategy), serves it over gRPC, waits for its clients,
and writes the same run directory, plus a ``checkpoint.npz`` after every round so that a
server restarted with ``resume`` continues after the last completed round.

``run_client`` is ``fedbus client``: it builds client ``K`` of the configured partition (node
id ``K + 1``, exactly the client the simulation runs) or a client of a local data file, and
connects it to the server until the federation ends.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.data import ClientData, load_csv, load_npz
from fedbus.data.base import split_client
from fedbus.errors import ConfigError
from fedbus.fl import Callback, RoundRecord, ServerBase
from fedbus.message import Metadata
from fedbus.run.checkpoint import (
    CHECKPOINT_FILE,
    Checkpointing,
    load_checkpoint,
    load_sampler_state,
    load_strategy_state,
)
from fedbus.run.config import Config, config_to_toml
from fedbus.run.dashboard import LiveRun, serve_dashboard
from fedbus.run.experiment import DashboardOptions, metrics_line, run_statistics, write_outputs
from fedbus.run.federation import (
    build_client,
    build_config_model,
    build_model_and_data,
    build_server,
)
from fedbus.run.outputs import RunDirectory, model_digest
from fedbus.run.resume import keep_metrics_up_to, resumed_config
from fedbus.run.trace import TraceRow, TraceWriter, chunk_paths, row_of
from fedbus.run.tracking import Trackers, open_trackers
from fedbus.run.versions import write_versions
from fedbus.runtime.grpc import (
    ClientSettings,
    GrpcServer,
    Heartbeat,
    NodeIdentity,
    ReceiveLimits,
    ServerObserver,
    ServerTls,
    connect_many,
    serve,
)
from fedbus.worker import Worker

__all__ = ["ClientOptions", "DeploymentResult", "ServerOptions", "run_client", "run_server"]

logger = logging.getLogger("fedbus.deployment")

#: The server's audit log in its run directory: joins, refusals, revocations, departures.
AUDIT_FILE = "audit.jsonl"
# How often the dashboard's panel of the server's wait is brought up to date (seconds).
_WAITS_EVERY = 0.5


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What ``fedbus server`` takes besides the configuration.

    ``min_clients`` defaults to ``federation.num_clients``: round 1 samples from the same
    clients as the simulation does. ``join_timeout`` is in seconds (None: wait for ever).
    """

    listen: str
    token: str | None
    tls: ServerTls | None = None
    insecure: bool = False
    resume: Path | None = None
    min_clients: int | None = None
    join_timeout: float | None = 600.0
    #: None: ``deployment.max_clients`` of the configuration.
    max_clients: int | None = None
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    #: The key registry file; None: ``deployment.key_registry`` (empty: no keys).
    keys: Path | None = None
    #: PEM of the CA that signs client certificates (mutual TLS).
    client_ca: bytes | None = None
    #: Serve a live dashboard of the run (None: none).
    dashboard: DashboardOptions | None = None


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """What ``fedbus client`` takes besides the configuration: one of partition or data_path.

    ``nodes`` hosts partitions ``partition`` to ``partition + nodes - 1`` from this process,
    one node each. ``identity`` (a node key) and ``certificate`` (mutual TLS) prove who the
    node is; without them the token does.
    """

    server: str
    token: str | None
    partition: int | None = None
    data_path: Path | None = None
    num_classes: int | None = None
    root_certificates: bytes | None = None
    insecure: bool = False
    nodes: int = 1
    identity: NodeIdentity | None = None
    certificate: ServerTls | None = None
    connect_timeout: float = 300.0
    reconnect_timeout: float = 300.0
    heartbeat: Heartbeat = field(default_factory=Heartbeat)


@dataclass(frozen=True, slots=True)
class DeploymentResult:
    """Where the server wrote its outputs, and its summary."""

    run_dir: Path
    summary: dict[str, Any]


# -- the server side -----------------------------------------------------------------------


def _open_run(config: Config | None, resume: Path | None) -> tuple[Config, RunDirectory, int]:
    """The configuration, run directory and completed rounds of a new or resumed run."""
    if resume is None:
        if config is None:
            raise ConfigError("fedbus server: give a configuration, or --resume RUN_DIR")
        toml = config_to_toml(config)
        return config, RunDirectory.create(config.run.output_dir, config.run.name, toml), 0
    stored = resumed_config(resume, config)
    completed = load_checkpoint(resume)[0] if (resume / CHECKPOINT_FILE).exists() else 0
    keep_metrics_up_to(resume, completed)
    return stored, RunDirectory(resume), completed


class _Observer(ServerObserver):
    """The server's traffic as trace rows (written at each round's end) and, with a dashboard,
    as what the page shows. Called on the server's I/O thread; rows are taken on the worker's."""

    def __init__(self, started: float, trace: bool, live: LiveRun | None) -> None:
        self.started, self.trace, self.live = started, trace, live
        self._rows: list[TraceRow] = []
        self._lock = threading.Lock()

    def message(self, metadata: Metadata, size: int, outcome: str, error: int) -> None:
        now = time.time()
        if self.trace:
            # a client's own send time is not known here: its creation stands for it
            row = row_of(metadata, size, None, now, outcome, error, epoch=self.started)
            with self._lock:
                self._rows.append(row)
        if self.live is not None:
            src, dst, settled = metadata.src_node_id, metadata.dst_node_id, now - self.started
            self.live.message(src, dst, metadata.message_type, size, outcome, settled, error)

    def connected(self, node_id: int) -> None:
        if self.live is not None:
            self.live.node_seen(node_id, connected=True, heartbeat=time.time() - self.started)

    def heard(self, node_id: int) -> None:
        if self.live is not None:
            self.live.node_seen(node_id, connected=True, heartbeat=time.time() - self.started)

    def disconnected(self, node_id: int) -> None:
        if self.live is not None:
            self.live.node_seen(node_id, connected=False)

    def take_rows(self) -> list[TraceRow]:
        """The rows settled since the last call."""
        with self._lock:
            rows, self._rows = self._rows, []
        return rows


class _RoundLog(Callback):
    """Metrics line and log line of each completed round (after ``Checkpointing``), with the
    trace, the trackers and the dashboard."""

    def __init__(self, run_dir: RunDirectory, completed: int, num_rounds: int) -> None:
        self.run_dir, self.offset, self.num_rounds = run_dir, completed, num_rounds
        self.handle: GrpcServer | None = None
        self.earlier = run_dir.wall_time_so_far() if completed else 0.0
        self.started = time.perf_counter()
        self._bytes = (0, 0)
        self.observer: _Observer | None = None
        self.trace: TraceWriter | None = None
        self.trackers = Trackers()

    def write_trace(self) -> None:
        """Write the rows settled so far as a chunk (at each round's end, and the last)."""
        if self.observer is not None and self.trace is not None:
            self.trace.write_rows(self.observer.take_rows())

    def elapsed(self) -> float:
        """Seconds the run has taken, earlier lives of a resumed server included."""
        return self.earlier + time.perf_counter() - self.started

    def on_round_end(self, server: ServerBase, record: RoundRecord) -> None:
        """Append the round's metrics line and log it."""
        assert self.handle is not None  # set before the server starts
        server_round = record.round  # the server keeps the numbering of a resumed run
        stats = self.handle.stats
        up, down = stats.bytes_in - self._bytes[0], stats.bytes_out - self._bytes[1]
        self._bytes = (stats.bytes_in, stats.bytes_out)
        elapsed = self.elapsed()
        line = metrics_line(
            record,
            server_round=server_round,
            simulated_time=elapsed,  # a deployment's clock is the wall clock
            wall_time=elapsed,
            bytes_up=up,
            bytes_down=down,
        )
        self.run_dir.append_metrics(line)
        self.trackers.log_round(line)
        self.write_trace()
        if self.observer is not None and self.observer.live is not None:
            self.observer.live.round_ended(line)
        accuracy = "n/a" if record.test_accuracy is None else f"{record.test_accuracy:.4f}"
        logger.info(
            "round %d/%d: test accuracy %s; %d of %d sampled clients replied, %d failed",
            server_round,
            self.num_rounds,
            accuracy,
            record.clients_replied,
            record.clients_sampled,
            record.clients_failed,
        )


def run_server(config: Config | None, options: ServerOptions) -> DeploymentResult:
    """Serve the configured federation until its last round; write the run directory.

    Raises ``RunError`` when the run could not finish (too few clients joined, too few
    replies); what was done is written first.
    """
    config, run_dir, completed = _open_run(config, options.resume)
    federation = config.federation
    dataset, model = build_model_and_data(config)
    arrays = load_checkpoint(run_dir.path)[1] if completed else None
    log = _RoundLog(run_dir, completed, federation.num_rounds)
    remaining = federation.num_rounds - completed
    if completed:
        logger.info(
            "resuming %s after round %d of %d", run_dir.path, completed, federation.num_rounds
        )
    if remaining <= 0:
        logger.info("all %d rounds are done already", federation.num_rounds)
        return DeploymentResult(run_dir.path, run_dir.read_summary())
    # A resumed server continues the round numbering and the sampler where they stopped.
    server = build_server(
        config,
        dataset,
        model,
        callbacks=[Checkpointing(run_dir.path), log],
        initial_arrays=arrays,
        first_round=completed + 1,
        sampler_state=load_sampler_state(run_dir.path) if completed else None,
        seeded_noise=False,
    )
    if completed:
        server.strategy.load_state(load_strategy_state(run_dir.path))
    if not completed:
        write_versions(run_dir.path)
    log.trackers = open_trackers(config, run_dir.path)
    if config.run.trace:  # chunks go on after those of earlier lives
        log.trace = TraceWriter(run_dir.path, start=len(chunk_paths(run_dir.path)))
    live = None
    if options.dashboard is not None:
        live = LiveRun(run_dir.path.name, run_dir.path, federation.num_rounds)
        for line in run_dir.rounds_so_far() if completed else []:
            live.round_ended(line)
    observer = log.observer = _Observer(time.time() - log.earlier, config.run.trace, live)
    deployment = config.deployment
    keys = options.keys or (Path(deployment.key_registry) if deployment.key_registry else None)
    max_clients = options.max_clients or deployment.max_clients
    handle = log.handle = serve(
        server,
        options.listen,
        token=options.token,
        keys=keys,
        tls=options.tls,
        client_ca=options.client_ca,
        insecure=options.insecure,
        min_clients=options.min_clients or federation.num_clients,
        join_timeout=options.join_timeout,
        max_clients=max(max_clients, options.min_clients or federation.num_clients),
        # ids 1..num_clients belong to the partitions; clients with their own data come after
        first_node_id=federation.num_clients + 1,
        heartbeat=options.heartbeat,
        receive=ReceiveLimits(
            per_peer=deployment.receive_budget_per_peer_mb << 20,
            total=deployment.receive_budget_total_mb << 20,
            spill=deployment.spill_budget_mb << 20,
        ),
        spill_dir=deployment.spill_dir or None,
        handshake_timeout=deployment.handshake_timeout,
        audit_log=run_dir.path / AUDIT_FILE,
        check_with=[build_client(config, model, dataset.client(0), 1)],
        observer=observer,
    )
    logger.info(
        "serving on port %d; run directory %s; waiting for %d clients",
        handle.port,
        run_dir.path,
        options.min_clients or federation.num_clients,
    )
    page = None
    done = threading.Event()
    if live is not None and options.dashboard is not None:
        dashboard = options.dashboard
        page = serve_dashboard([live], dashboard.host, dashboard.port, dashboard.token)
        logger.info("dashboard: %s", page.url)
        waits = _Waits(server, live, observer.started, log, done)
        threading.Thread(target=waits.run, name="fedbus-dashboard-waits", daemon=True).start()
    try:
        _wait(handle)
        result = _finish(config, run_dir, server, handle, log)
    except BaseException:
        log.write_trace()
        log.trackers.close(None)
        if live is not None:
            live.finished("interrupted", None)
        raise
    finally:
        done.set()
        if page is not None:
            page.close()
    return result


@dataclass(frozen=True, slots=True)
class _Waits:
    """The dashboard's panel of what the server waits for, from its watchdog, twice a second
    until ``done`` (on a thread of its own: the server's state is only read)."""

    server: ServerBase
    live: LiveRun
    started: float
    log: _RoundLog
    done: threading.Event

    def run(self) -> None:
        while not self.done.wait(_WAITS_EVERY):
            try:
                current = self.server.watchdog.current()
            except RuntimeError:  # the server changed what it waits for while it was read
                continue
            if current is None:
                continue
            waiting = current.waiting
            deadline = waiting.deadline
            self.live.round_waiting(
                self.log.offset + len(self.server.history) + 1,
                waiting.nodes,
                waiting.done or 0,
                len(waiting.nodes) if waiting.of is None else waiting.of,
                None if deadline is None else deadline - self.started,
                current.since - self.started,
            )


def _wait(handle: GrpcServer) -> None:
    try:
        handle.wait()
    except KeyboardInterrupt:
        logger.warning("interrupted: closing the federation")
        handle.stop("interrupted")
        handle.wait(30.0)


def _finish(
    config: Config, run_dir: RunDirectory, server: ServerBase, handle: GrpcServer, log: _RoundLog
) -> DeploymentResult:
    failure = server.failure or (None if handle.error is None else str(handle.error))
    if failure is None and not server.finished:
        failure = f"the server stopped after {log.offset + len(server.history)} rounds"
    metrics = run_dir.rounds_so_far()  # none when the clients never all joined
    accuracy = next(
        (m["test_accuracy"] for m in reversed(metrics) if m.get("test_accuracy") is not None),
        None,
    )
    stats = handle.stats
    summary: dict[str, Any] = {
        "final_test_accuracy": accuracy,
        "num_rounds": log.offset + len(server.history),
        "simulated_time": log.elapsed(),
        "wall_time": log.elapsed(),
        "bytes_up": stats.bytes_in,
        "bytes_down": stats.bytes_out,
        "messages": stats.messages_in + stats.messages_out,
        "resumed_after_round": log.offset,
        **run_statistics(metrics, server),
        "failure": failure,
    }
    arrays = server.arrays.to_numpy_dict()
    summary["model_sha256"] = model_digest(arrays)
    log.write_trace()
    observer = log.observer
    if observer is not None and observer.live is not None:
        observer.live.finished("failed" if failure else "finished", summary)
    try:
        write_outputs(config, run_dir, summary, arrays)
    finally:
        log.trackers.close(summary)
    logger.info("finished: %d rounds; outputs in %s", summary["num_rounds"], run_dir.path)
    return DeploymentResult(run_dir.path, summary)


# -- the client side -----------------------------------------------------------------------


def _local_data(config: Config, options: ClientOptions) -> tuple[ClientData, int, int]:
    """A data file's train/test split, its feature count and its class count."""
    path = options.data_path
    assert path is not None
    if path.suffix == ".csv":
        data = load_csv(path, config.data.label_column, num_classes=options.num_classes)
    else:
        data = load_npz(path, num_classes=options.num_classes)
    rng = np.random.default_rng(config.federation.seed)
    train, test = split_client(len(data.y), config.data.client_test_fraction, rng)
    split = ClientData(data.x[train], data.y[train], data.x[test], data.y[test])
    return split, data.num_features, data.num_classes


def run_client(config: Config, options: ClientOptions) -> int:
    """Join the federation at ``options.server`` and take part until it ends.

    Returns the node id the client had (the first one, with ``nodes`` > 1). Raises
    ``RunError`` when it was refused or lost the server for longer than ``reconnect_timeout``.
    """
    if (options.partition is None) == (options.data_path is None):
        raise ConfigError("fedbus client: give --partition K or --data PATH (one of them)")
    if options.nodes < 1:
        raise ConfigError(f"--nodes {options.nodes}: expected 1 or more")
    if options.nodes > 1 and options.partition is None:
        raise ConfigError("--nodes hosts consecutive partitions: give --partition K with it")
    if options.nodes > 1 and options.identity is not None:
        raise ConfigError(
            "--key proves one node; host many nodes with keys from Python "
            "(connect_many(..., identities=...))"
        )
    clients = _build_clients(config, options)
    settings = ClientSettings(
        connect_timeout=options.connect_timeout,
        reconnect_timeout=options.reconnect_timeout,
        heartbeat=options.heartbeat,
        identity=options.identity,
    )
    # one node or many: the same call (one node gets one dispatcher thread of its own)
    group = connect_many(
        clients,
        options.server,
        token=options.token,
        root_certificates=options.root_certificates,
        certificate=options.certificate,
        insecure=options.insecure,
        settings=settings,
    )
    node_ids = group.node_ids
    logger.info("joined %s as node(s) %s", options.server, _id_ranges(node_ids))
    try:
        group.wait()
    except KeyboardInterrupt:
        logger.warning("interrupted: leaving the federation")
        group.stop()
        group.wait(10.0)
    errors = list(group.errors.values())
    if errors:
        if len(errors) > 1:
            logger.error("%d of %d nodes ended with an error", len(errors), len(clients))
        raise errors[0]
    return node_ids[0]


def _build_clients(config: Config, options: ClientOptions) -> list[Worker]:
    """The client workers this process hosts: partitions K.., or one local data file."""
    if options.partition is not None:
        num_clients = config.federation.num_clients
        last = options.partition + options.nodes - 1
        if not 0 <= options.partition <= last < num_clients:
            span = f"{options.partition}" + (f" to {last}" if options.nodes > 1 else "")
            raise ConfigError(
                f"--partition {span}: expected partitions 0 to {num_clients - 1} "
                f"(federation.num_clients={num_clients})"
            )
        dataset, model = build_model_and_data(config)
        # node id K + 1: the simulation's node id of partition K
        return [
            build_client(config, model, dataset.client(k), k + 1, seeded_noise=False)
            for k in range(options.partition, last + 1)
        ]
    data, num_features, num_classes = _local_data(config, options)
    model = build_config_model(config, num_features, num_classes)
    return [build_client(config, model, data, None, seeded_noise=False)]


def _id_ranges(node_ids: list[int]) -> str:
    if len(node_ids) > 3 and node_ids == list(range(node_ids[0], node_ids[-1] + 1)):
        return f"{node_ids[0]}..{node_ids[-1]}"
    return ", ".join(map(str, node_ids))
