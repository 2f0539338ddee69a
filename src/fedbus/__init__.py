"""fedbus: message-oriented federated learning.

A federation is a server and many clients that exchange typed messages; what a node does is the
set of handlers it registered, one per message type.

Layers, each importing only those below it::

    cli            command line
    run            configuration, building a federation, outputs
    fl | runtime   FL flows and strategies | simulation, gRPC and Ray runtimes
    worker         handler registry, dispatch, message-flow check
    message        Message, records, codec
    train | data   trainers on arrays | datasets and partitioners
"""

from fedbus.errors import DecodeError, FedbusError
from fedbus.fl import Client, FedAvg, Server, Strategy
from fedbus.message import (
    DEFAULT_TTL,
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    ErrorCode,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
    decode_message,
    encode_message,
)
from fedbus.runtime.simulation import SimulationResult, simulate
from fedbus.worker import Worker, handler

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_TTL",
    "Client",
    "FedAvg",
    "Server",
    "SimulationResult",
    "Strategy",
    "Worker",
    "handler",
    "simulate",
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "DecodeError",
    "Error",
    "ErrorCode",
    "FedbusError",
    "Message",
    "Metadata",
    "MetricRecord",
    "RecordDict",
    "decode_message",
    "encode_message",
]
