"""Workers: the handler registry, dispatch, mods, the runtime seam and the message-flow check."""

from fedbus.worker.comm import CommManager, TimerHandle
from fedbus.worker.flow import START, FlowEdge, MessageFlow, RoutingPolicy
from fedbus.worker.mods import CallNext, MessageContext, Mod
from fedbus.worker.worker import (
    CLIENT_ROLE,
    ROLES,
    SERVER_NODE_ID,
    SERVER_ROLE,
    Handler,
    HandlerSpec,
    ReplyHandler,
    Worker,
    handler,
    is_reply_or_error,
    role_of,
    runtime_error_reply,
)

__all__ = [
    "CLIENT_ROLE",
    "ROLES",
    "SERVER_NODE_ID",
    "SERVER_ROLE",
    "START",
    "CallNext",
    "CommManager",
    "FlowEdge",
    "Handler",
    "HandlerSpec",
    "MessageContext",
    "MessageFlow",
    "Mod",
    "ReplyHandler",
    "RoutingPolicy",
    "TimerHandle",
    "Worker",
    "handler",
    "is_reply_or_error",
    "role_of",
    "runtime_error_reply",
]
