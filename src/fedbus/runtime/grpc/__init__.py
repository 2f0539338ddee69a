"""The deployment runtime: nodes in separate processes or machines, over gRPC.

One bidirectional stream per client, kept open; messages are the codec's bytes, cut into
transport frames (``framing``). Every stream of a process is a coroutine on one event loop
(``ioloop``); each worker's handlers and timers run on a dispatcher thread (``dispatcher``).
``serve`` runs the server worker, ``connect`` a client worker, ``connect_many`` many client
workers from one process, and ``run_local`` a whole federation on 127.0.0.1 (tests,
notebooks). Who may join: tokens (``security``), node keys (``identity``), client
certificates; what they did: the audit log (``audit``). See docs/deployment.md.
"""

from fedbus.runtime.grpc.api import check_flow, connect, connect_many, serve
from fedbus.runtime.grpc.audit import AuditLog, read_audit
from fedbus.runtime.grpc.budget import ReceiveLimits
from fedbus.runtime.grpc.client import ClientSettings, GrpcClient, NodeIdentity
from fedbus.runtime.grpc.framing import TransportLimits
from fedbus.runtime.grpc.group import ClientGroup
from fedbus.runtime.grpc.identity import KeyRegistry, NodeKey, PublicKey
from fedbus.runtime.grpc.local import LocalResult, run_local
from fedbus.runtime.grpc.observer import ServerObserver
from fedbus.runtime.grpc.security import Authenticator, ServerTls
from fedbus.runtime.grpc.server import GrpcServer, ServerSettings, TransportStats
from fedbus.runtime.grpc.stream import Heartbeat

__all__ = [
    "AuditLog",
    "Authenticator",
    "ClientGroup",
    "ClientSettings",
    "GrpcClient",
    "GrpcServer",
    "Heartbeat",
    "KeyRegistry",
    "LocalResult",
    "NodeIdentity",
    "NodeKey",
    "PublicKey",
    "ReceiveLimits",
    "ServerObserver",
    "ServerSettings",
    "ServerTls",
    "TransportLimits",
    "TransportStats",
    "check_flow",
    "connect",
    "connect_many",
    "read_audit",
    "run_local",
    "serve",
]
