"""A mod that logs what a node handles and sends: ``federation.client_mods = "log"``.

Each request, the reply (or the exception) that came of it and each message sent outside a reply
is logged at INFO level on the ``fedbus.mods.log`` logger. It serves on clients and servers.
"""

from __future__ import annotations

import logging

from fedbus.fl.mods.registry import register_mod
from fedbus.message import Message
from fedbus.worker.mods import CallNext, MessageContext, Mod

__all__ = ["LogMessages"]

logger = logging.getLogger("fedbus.mods.log")


class LogMessages(Mod):
    """Logs each request, its reply and each send of the node it is installed on."""

    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        """Log the request, then its reply (or the exception that became an error reply)."""
        logger.info("node %s handles %r", context.node_id, message)
        try:
            reply = call_next(message, context)
        except Exception as exc:
            logger.info("node %s failed on %r: %s", context.node_id, message, exc)
            raise
        logger.info("node %s replies %r", context.node_id, reply)
        return reply

    def on_send(self, message: Message, context: MessageContext) -> Message:
        """Log ``message`` and send it as it is."""
        logger.info("node %s sends %r", context.node_id, message)
        return message


_SHARED = LogMessages()
register_mod("log", lambda settings, seed: _SHARED, roles=("client", "server"))
