"""Fixtures shared by the whole suite.

``federation`` runs a server and clients on every runtime available, so each behaviour test
holds for each runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from fedbus.runtime.grpc import run_local
from fedbus.runtime.simulation import simulate
from fedbus.worker import Worker

RunFederation = Callable[[Worker, Sequence[Worker]], None]

RUNTIMES = ["simulation", "grpc"]

#: Seconds a federation over gRPC may take in a test before it counts as hung.
GRPC_TIMEOUT = 30.0


@pytest.fixture(params=RUNTIMES)
def federation(request: pytest.FixtureRequest) -> RunFederation:
    """Run ``server`` and ``clients`` to completion on one runtime."""

    def run(server: Worker, clients: Sequence[Worker]) -> None:
        if request.param == "simulation":
            simulate(server, clients, check_serialization=True)
        else:
            # Server and clients in this process, on threads, over real streams on 127.0.0.1.
            run_local(server, clients, timeout=GRPC_TIMEOUT)

    return run
