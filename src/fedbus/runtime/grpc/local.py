"""``run_local``: a whole federation over gRPC on this machine, for tests and notebooks.

It is ``simulate`` with real streams: the server and every client run in this process, on
their own threads, and talk over 127.0.0.1 through the same code a deployment uses (framing,
authentication, routing, heartbeats). Because every node is here, the run can tell when
nothing is left in flight, and returns then, as a simulation returns when its event queue is
empty, or as soon as the server worker stops.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fedbus.errors import InvalidArgumentError, RunError
from fedbus.runtime.grpc.api import connect, serve
from fedbus.runtime.grpc.client import ClientSettings, GrpcClient
from fedbus.runtime.grpc.dispatcher import Activity
from fedbus.runtime.grpc.framing import TransportLimits
from fedbus.runtime.grpc.server import GrpcServer
from fedbus.runtime.grpc.stream import Heartbeat
from fedbus.worker import SERVER_NODE_ID, Worker

__all__ = ["LocalResult", "run_local"]

_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class LocalResult:
    """What ``run_local`` returns: the workers by node id, and whether the run went idle."""

    server: Worker
    workers: Mapping[int, Worker]
    port: int
    went_idle: bool


def _client_ids(clients: Sequence[Worker]) -> list[int]:
    """Node ids as the simulation gives them: a worker's own id, else its position 1..N."""
    ids = [position if w.node_id < 0 else w.node_id for position, w in enumerate(clients, 1)]
    if len(set(ids)) != len(ids) or SERVER_NODE_ID in ids:
        raise InvalidArgumentError(
            f"run_local: client node ids must be unique and not 0, got {ids}"
        )
    return ids


def run_local(
    server: Worker,
    clients: Sequence[Worker],
    *,
    timeout: float = 60.0,
    limits: TransportLimits | None = None,
    heartbeat: Heartbeat | None = None,
) -> LocalResult:
    """Run ``server`` and ``clients`` over gRPC on 127.0.0.1 until nothing is left to do.

    The message-flow check runs first. Clients get the ids ``simulate`` would give them.
    Returns when no message is in flight, no handler runs and no timer is pending, or when
    the server worker stops (after its last messages reached the clients).

    Raises
    ------
    RunError
        The federation was still busy after ``timeout`` seconds, or the server failed.

    Examples
    --------
    >>> from fedbus import Message, RecordDict, Worker
    >>> class Ping(Worker):
    ...     start_sends = ["ping"]
    ...     def __init__(self):
    ...         super().__init__(0)
    ...         self.replies = []
    ...         self.register_handlers("ping", self.replies.append)
    ...     def on_start(self):
    ...         self.send(Message(RecordDict(), 1, "ping"))
    >>> class Pong(Worker):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.register_handlers("ping", lambda m: m.create_reply(RecordDict()))
    >>> server = Ping()
    >>> result = run_local(server, [Pong()])
    >>> [reply.sender for reply in server.replies]
    [1]
    """
    if not clients:
        raise InvalidArgumentError("run_local: give at least one client")
    ids = _client_ids(clients)
    activity = Activity()
    token = secrets.token_urlsafe(16)
    handle = serve(
        server,
        f"{_LOOPBACK}:0",
        token=token,
        insecure=True,
        min_clients=len(clients),
        limits=limits,
        heartbeat=heartbeat,
        check_with=clients,
        activity=activity,
    )
    address = f"{_LOOPBACK}:{handle.port}"
    connected: list[GrpcClient] = []
    deadline = time.monotonic() + timeout
    finished = went_idle = False
    try:
        for node_id, worker in zip(ids, clients, strict=True):
            settings = ClientSettings(
                node_id=node_id,
                connect_timeout=max(1.0, deadline - time.monotonic()),
                reconnect=False,
                limits=limits or TransportLimits(),
                heartbeat=heartbeat or Heartbeat(),
            )
            client = connect(
                worker,
                address,
                token=token,
                insecure=True,
                settings=settings,
                start_worker=False,
                activity=activity,
            )
            connected.append(client)
        # As in the simulation, every node is there before any client starts.
        for client in connected:
            client.start_worker()
        finished = activity.wait_idle(max(0.0, deadline - time.monotonic()))
        went_idle = activity.pending <= 0
    finally:
        _close(handle, connected, deadline)
    if not finished:
        raise RunError(
            f"run_local: the federation was still busy after {timeout:g} s "
            f"({activity.pending} messages, timers or actions pending)"
        )
    if handle.error is not None:
        raise handle.error
    workers = {SERVER_NODE_ID: server, **{c.node_id or 0: c.worker for c in connected}}
    return LocalResult(server, workers, handle.port, went_idle)


def _close(handle: GrpcServer, clients: list[GrpcClient], deadline: float) -> None:
    handle.stop()
    # Ten more seconds past the deadline at most: stopping is bounded even when running was not.
    grace = max(deadline - time.monotonic(), 0.0) + 10.0
    handle.wait(grace)
    for client in clients:
        client.stop()
    for client in clients:
        client.wait(grace)
