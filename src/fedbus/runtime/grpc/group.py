"""Many client nodes in one process: how a fleet of devices is emulated, and load is tested.

``connect_many`` connects every worker as its own node, with its own channel and TCP
connection, all on the process's ``IoLoop``. Their handlers run on a few shared dispatcher
threads (node i on dispatcher i mod ``threads``): a process that hosts 2,500 nodes has the
same handful of threads as one that hosts one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Sequence

import grpc

from fedbus.errors import InvalidArgumentError, RunError
from fedbus.runtime.grpc.client import ClientSettings, GrpcClient, NodeIdentity
from fedbus.runtime.grpc.dispatcher import Activity, Dispatcher
from fedbus.runtime.grpc.ioloop import IoLoop
from fedbus.worker import Worker

__all__ = ["ClientGroup", "connect_group"]

logger = logging.getLogger("fedbus.grpc.client")


class ClientGroup:
    """The nodes one process hosts: ``clients``, ``node_ids``, ``wait``, ``stop``, ``errors``."""

    def __init__(self, clients: list[GrpcClient], dispatchers: list[Dispatcher]) -> None:
        self.clients = clients
        self._dispatchers = dispatchers

    @property
    def node_ids(self) -> list[int]:
        """The node id of each client, in the order of the workers given."""
        return [client.node_id or 0 for client in self.clients]

    def start_workers(self) -> None:
        """Run every worker's ``on_start`` (after ``connect_many(..., start_workers=False)``)."""
        for client in self.clients:
            client.start_worker()

    def stop(self) -> None:
        """Every node leaves the federation (from any thread)."""
        for client in self.clients:
            client.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every node has ended; False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for client in self.clients:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not client.wait(left):
                return False
        for dispatcher in self._dispatchers:
            dispatcher.stop()
            dispatcher.join(10.0)
        return True

    @property
    def errors(self) -> dict[int, RunError]:
        """Why nodes ended with an error, by node id."""
        return {c.node_id or 0: c.error for c in self.clients if c.error is not None}


def connect_group(
    workers: Sequence[Worker],
    address: str,
    *,
    token: str | None,
    credentials: grpc.ChannelCredentials | None,
    settings: ClientSettings,
    identities: Sequence[NodeIdentity] | None = None,
    threads: int | None = None,
    start_workers: bool = True,
    activity: Activity | None = None,
) -> ClientGroup:
    """Connect each worker as a node; see ``fedbus.runtime.grpc.connect_many``."""
    if not workers:
        raise InvalidArgumentError("connect_many: give at least one worker")
    if identities is not None and len(identities) != len(workers):
        raise InvalidArgumentError(
            f"connect_many: {len(identities)} identities for {len(workers)} workers"
        )
    count = threads or min(len(workers), os.cpu_count() or 1)
    if not isinstance(count, int) or count < 1:
        raise InvalidArgumentError(f"connect_many: threads must be an int >= 1, got {threads!r}")
    io = IoLoop.shared()
    dispatchers = [Dispatcher(f"fedbus-nodes-{i}", activity) for i in range(count)]
    clients = []
    for position, worker in enumerate(workers):
        node_settings = settings
        if identities is not None:
            node_settings = dataclasses.replace(settings, identity=identities[position])
        clients.append(
            GrpcClient(
                worker,
                address,
                token=token,
                credentials=credentials,
                settings=node_settings,
                activity=activity,
                io=io,
                dispatcher=dispatchers[position % count],
            )
        )
    for dispatcher in dispatchers:
        dispatcher.start()
    group = ClientGroup(clients, dispatchers)
    outcomes = io.run(_open_all(clients))
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        group.stop()
        group.wait(30.0)
        first = failures[0]
        raise RunError(
            f"{len(failures)} of {len(clients)} nodes could not join: {first}"
        ) from first
    logger.info("%d nodes joined %s", len(clients), address)
    if start_workers:
        group.start_workers()
    return group


async def _open_all(clients: list[GrpcClient]) -> list[object]:
    return list(await asyncio.gather(*(c.open() for c in clients), return_exceptions=True))
