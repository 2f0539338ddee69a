"""``serve`` and ``connect``: a federation across processes and machines, from Python.

On the server machine::

    from fedbus.runtime.grpc import ServerTls, serve

    handle = serve(server, "0.0.0.0:8080", token=TOKEN, min_clients=10,
                   tls=ServerTls.from_files("server.pem", "server.key"))
    handle.wait()

On each client machine::

    from fedbus.runtime.grpc import connect

    client_handle = connect(client, "server.example.org:8080", token=TOKEN,
                            root_certificates=open("ca.pem", "rb").read())
    client_handle.wait()

The workers are the same objects that run in ``simulate``: nothing in them changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from fedbus.errors import InvalidArgumentError
from fedbus.runtime.grpc.audit import AuditLog
from fedbus.runtime.grpc.budget import ReceiveLimits
from fedbus.runtime.grpc.client import ClientSettings, GrpcClient, NodeIdentity
from fedbus.runtime.grpc.dispatcher import Activity
from fedbus.runtime.grpc.framing import TransportLimits
from fedbus.runtime.grpc.group import ClientGroup, connect_group
from fedbus.runtime.grpc.identity import KeyRegistry
from fedbus.runtime.grpc.observer import ServerObserver
from fedbus.runtime.grpc.security import Authenticator, ServerTls
from fedbus.runtime.grpc.server import GrpcServer, ServerSettings
from fedbus.runtime.grpc.stream import Heartbeat
from fedbus.worker import MessageFlow, RoutingPolicy, Worker

__all__ = ["check_flow", "connect", "connect_many", "serve"]

logger = logging.getLogger("fedbus.grpc")


def check_flow(server: Worker, clients: Sequence[Worker]) -> MessageFlow:
    """Run the message-flow check on the server and one client of each class; returns the flow.

    Raises ``FlowError`` naming each type that some handler sends and no role handles.
    """
    samples: dict[type, Worker] = {}
    for client in clients:
        samples.setdefault(type(client), client)
    single = len(samples) == 1
    roles: list[tuple[str, Worker]] = [("server", server)]
    roles += [("client" if single else f"client:{k.__name__}", w) for k, w in samples.items()]
    flow = MessageFlow.from_roles(roles)
    flow.check()
    return flow


def serve(
    server: Worker,
    address: str,
    *,
    token: str | None = None,
    node_tokens: Mapping[int, str] | None = None,
    keys: KeyRegistry | str | Path | None = None,
    tls: ServerTls | None = None,
    client_ca: bytes | None = None,
    insecure: bool = False,
    min_clients: int = 1,
    join_timeout: float | None = None,
    max_clients: int = 10_000,
    first_node_id: int = 1,
    run_id: int = 1,
    limits: TransportLimits | None = None,
    heartbeat: Heartbeat | None = None,
    receive: ReceiveLimits | None = None,
    spill_dir: str | None = None,
    handshake_timeout: float = 5.0,
    audit_log: str | Path | None = None,
    check_with: Sequence[Worker] = (),
    activity: Activity | None = None,
    observer: ServerObserver | None = None,
) -> GrpcServer:
    """Serve ``server`` as node 0 on ``address`` and return at once (the server runs on).

    The server worker starts (``on_nodes_registered`` with the clients connected so far, then
    ``on_start``) when ``min_clients`` clients are connected; a client that connects later is
    registered with ``on_nodes_registered([its id])``, again after each reconnection.

    Parameters
    ----------
    server
        The worker that plays node 0.
    address
        ``host:port`` to listen on; port 0 picks a free port (read it from ``.port``).
    token, node_tokens
        The federation's shared secret, and optional per-node secrets (see ``Authenticator``).
    keys
        The registry of node public keys (a ``KeyRegistry`` or its file): a node that names
        itself proves its key by signing a fresh challenge; the file is read again when it
        changes, and a revoked node is disconnected at once. With keys and no token, every
        node must prove a key.
    tls, insecure
        The server's certificate and key; or ``insecure=True`` to serve plain text, which must
        be asked for and is logged as a warning.
    client_ca
        PEM certificate(s) of the CA that signs client certificates: mutual TLS. Every node
        must then present a certificate it signed; its common name is the node's name.
    min_clients, join_timeout
        Clients to wait for before starting, and how long (None: for ever). When the timeout
        passes first the server stops and ``.error`` says why.
    max_clients
        Most clients connected at once.
    first_node_id
        Clients that ask for no node id get ``first_node_id``, ``first_node_id + 1``, ...
        in join order; lower ids stay free for clients that ask for theirs.
    run_id
        Stamped on every message.
    limits, heartbeat
        Sizes (default: 1 MiB chunks, 64 GiB messages) and liveness (5 s heartbeats, a client
        silent for 15 s is unavailable).
    receive
        The receive budget: bytes of messages in transit per client and in all in memory, and
        in spill files beyond that (``ReceiveLimits``).
    spill_dir
        Where spill files go; None: the system's temporary directory.
    handshake_timeout
        Seconds a new connection has to finish its TLS and HTTP/2 handshake.
    audit_log
        A JSON-lines file of joins, refusals, revocations, reconnections and departures.
    check_with
        Client workers of this federation (one per class is enough): the message-flow check
        runs on the server with them before anything is served, and the flow they declare is
        the routing policy (``RoutingPolicy``). Without them only the server's declarations
        are known: clients may send it what its handlers accept, and no message travels from
        client to client.
    activity
        Shared pending-work counter (``run_local`` passes one).
    observer
        Told of every message's fate and of clients coming and going (``ServerObserver``):
        ``fedbus server`` records its trace and feeds its dashboard from it.

    Returns
    -------
    GrpcServer
        ``.port``, ``.wait(timeout)``, ``.stop()``, ``.connected``, ``.error``.
    """
    policy = (
        RoutingPolicy.from_flow(check_flow(server, check_with))
        if check_with
        else RoutingPolicy.from_server(server)
    )
    if (tls is None) == (not insecure):
        raise InvalidArgumentError(
            "serve: pass tls=ServerTls(...) to serve over TLS, or insecure=True to serve "
            "plain text (only on a trusted network)"
            if tls is None
            else "serve: pass tls or insecure=True, not both"
        )
    if not isinstance(min_clients, int) or min_clients < 1:
        raise InvalidArgumentError(f"serve: min_clients must be an int >= 1, got {min_clients!r}")
    if not isinstance(first_node_id, int) or first_node_id < 1:
        raise InvalidArgumentError(
            f"serve: first_node_id must be an int >= 1, got {first_node_id!r}"
        )
    if not isinstance(max_clients, int) or max_clients < min_clients:
        raise InvalidArgumentError(
            f"serve: max_clients must be an int >= min_clients ({min_clients}), got {max_clients!r}"
        )
    if client_ca is not None and tls is None:
        raise InvalidArgumentError("serve: client_ca (mutual TLS) needs tls=ServerTls(...)")
    authenticator = Authenticator(token, node_tokens)
    registry = KeyRegistry.load(keys) if isinstance(keys, str | Path) else keys
    if insecure:
        logger.warning("serving %s WITHOUT TLS: tokens and models travel in clear text", address)
    if authenticator.open and registry is None and client_ca is None:
        logger.warning("serving %s WITHOUT a token: anyone who reaches it may join", address)
    settings = ServerSettings(
        min_clients=min_clients,
        join_timeout=join_timeout,
        max_clients=max_clients,
        first_node_id=first_node_id,
        run_id=run_id,
        limits=limits or TransportLimits(),
        heartbeat=heartbeat or Heartbeat(),
        receive=receive or ReceiveLimits(),
        spill_dir=spill_dir,
        handshake_timeout=handshake_timeout,
    )
    runtime = GrpcServer(
        server,
        authenticator,
        settings,
        activity,
        policy=policy,
        keys=registry,
        audit=AuditLog(audit_log),
        observer=observer,
    )
    credentials = (
        None
        if tls is None
        else grpc.ssl_server_credentials(
            [(tls.private_key, tls.certificate_chain)],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
    )
    runtime.start(address, credentials)
    return runtime


def connect(
    client: Worker,
    address: str,
    *,
    token: str | None = None,
    root_certificates: bytes | None = None,
    certificate: ServerTls | None = None,
    insecure: bool = False,
    settings: ClientSettings | None = None,
    start_worker: bool = True,
    activity: Activity | None = None,
) -> GrpcClient:
    """Connect ``client`` to the server at ``address``, start it, and return at once.

    The first connection is tried for ``settings.connect_timeout`` seconds (the server may
    start after its clients); a refusal that retrying cannot change raises at once.

    Parameters
    ----------
    client
        The worker to run as a client node. Its node id, if it has one, is asked for.
    address
        The server's ``host:port``.
    token
        The federation's (or this node's) secret.
    root_certificates, insecure
        PEM certificates to trust (None: the system's); or ``insecure=True`` for a plain-text
        connection, which must be asked for and is logged as a warning.
    certificate
        This node's certificate and key, for a server that asks for client certificates
        (mutual TLS).
    settings
        Node id to ask for, reconnection, sizes and liveness (see ``ClientSettings``).
    start_worker
        Run the worker's ``on_start`` once connected; False leaves it to
        ``.start_worker()`` (messages that arrive before are held for it).
    activity
        Shared pending-work counter (``run_local`` passes one).

    Returns
    -------
    GrpcClient
        ``.node_id``, ``.wait(timeout)``, ``.stop()``, ``.error``.

    Raises
    ------
    RunError
        The server refused this client, or could not be reached in time.
    """
    credentials = _channel_credentials(address, root_certificates, certificate, insecure)
    runtime = GrpcClient(
        client,
        address,
        token=token,
        credentials=credentials,
        settings=settings or ClientSettings(),
        activity=activity,
    )
    runtime.start(start_worker=start_worker)
    return runtime


def connect_many(
    clients: Sequence[Worker],
    address: str,
    *,
    token: str | None = None,
    root_certificates: bytes | None = None,
    certificate: ServerTls | None = None,
    insecure: bool = False,
    settings: ClientSettings | None = None,
    identities: Sequence[NodeIdentity] | None = None,
    threads: int | None = None,
    start_workers: bool = True,
    activity: Activity | None = None,
) -> ClientGroup:
    """Connect every worker of ``clients`` as its own node, from this process.

    Each node has its own connection, node id and reconnection, exactly as if it ran alone
    (``connect``); they share this process's event loop and ``threads`` dispatcher threads
    (default: one per core), so hosting thousands of nodes costs no thread per node. A
    worker's own node id, if it has one, is asked for. The connections open concurrently; if
    any node is refused or cannot connect in time, every node leaves and ``RunError`` says
    how many failed and why.

    Parameters
    ----------
    identities
        One ``NodeIdentity`` (name and key) per worker, for a server with a key registry.
    threads
        Dispatcher threads that run the workers' handlers (node i on thread i mod threads).

    The other parameters are ``connect``'s, for every node.

    Returns
    -------
    ClientGroup
        ``.node_ids``, ``.wait(timeout)``, ``.stop()``, ``.errors``.

    Examples
    --------
    >>> group = connect_many(workers, "server:8080", token=TOKEN)  # doctest: +SKIP
    >>> group.wait()  # doctest: +SKIP
    """
    credentials = _channel_credentials(address, root_certificates, certificate, insecure)
    return connect_group(
        clients,
        address,
        token=token,
        credentials=credentials,
        settings=settings or ClientSettings(),
        identities=identities,
        threads=threads,
        start_workers=start_workers,
        activity=activity,
    )


def _channel_credentials(
    address: str,
    root_certificates: bytes | None,
    certificate: ServerTls | None,
    insecure: bool,
) -> grpc.ChannelCredentials | None:
    if insecure and (root_certificates is not None or certificate is not None):
        raise InvalidArgumentError(
            "connect: pass root_certificates (and a client certificate) or insecure=True, not both"
        )
    if insecure:
        logger.warning("connecting to %s WITHOUT TLS", address)
        return None
    return grpc.ssl_channel_credentials(
        root_certificates,
        private_key=None if certificate is None else certificate.private_key,
        certificate_chain=None if certificate is None else certificate.certificate_chain,
    )
