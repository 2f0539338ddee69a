"""Workers: the handler registry, dispatch, the runtime seam and the message-flow check."""

from fedbus.worker.comm import CommManager, TimerHandle
from fedbus.worker.flow import START, FlowEdge, MessageFlow
from fedbus.worker.worker import (
    SERVER_NODE_ID,
    Handler,
    HandlerSpec,
    Worker,
    handler,
    runtime_error_reply,
)

__all__ = [
    "SERVER_NODE_ID",
    "START",
    "CommManager",
    "FlowEdge",
    "Handler",
    "HandlerSpec",
    "MessageFlow",
    "TimerHandle",
    "Worker",
    "handler",
    "runtime_error_reply",
]
