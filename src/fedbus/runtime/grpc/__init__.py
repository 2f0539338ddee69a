"""The deployment runtime: nodes in separate processes or machines, over gRPC.

One bidirectional stream per client, kept open; messages are the codec's bytes, cut into
transport frames (``framing``); each worker's handlers and timers run on one thread of its
own (``dispatcher``). ``serve`` runs the server worker, ``connect`` a client worker, and
``run_local`` a whole federation on 127.0.0.1 (tests, notebooks). See docs/deployment.md.
"""

from fedbus.runtime.grpc.api import check_flow, connect, serve
from fedbus.runtime.grpc.client import ClientSettings, GrpcClient
from fedbus.runtime.grpc.framing import TransportLimits
from fedbus.runtime.grpc.local import LocalResult, run_local
from fedbus.runtime.grpc.security import Authenticator, ServerTls
from fedbus.runtime.grpc.server import GrpcServer, ServerSettings, TransportStats
from fedbus.runtime.grpc.stream import Heartbeat

__all__ = [
    "Authenticator",
    "ClientSettings",
    "GrpcClient",
    "GrpcServer",
    "Heartbeat",
    "LocalResult",
    "ServerSettings",
    "ServerTls",
    "TransportLimits",
    "TransportStats",
    "check_flow",
    "connect",
    "run_local",
    "serve",
]
