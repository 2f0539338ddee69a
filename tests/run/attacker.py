"""A malicious client process: it holds the federation's token and speaks the wire format.

Run by ``test_attackers.py`` as ``python attacker.py HOST:PORT NODE_ID OUT.json``. Whenever the
server asks it to train, it declines (an error reply, so the honest clients' updates alone are
aggregated) and tries, every round:

- to answer the other clients' ``train`` requests: replies whose ``reply_to`` are ids derived
  from its own request's id (what predictable ids allowed) or random ones;
- to send ``finish`` and ``train`` to every other client (only the server may);
- to speak as another node (a message whose sender is node 1, put on its own stream);
- to replay the reply it sent in an earlier round.

It writes what came back to ``OUT.json``: the error codes it received, by message type.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections import Counter
from pathlib import Path

from fedbus import Message, RecordDict
from fedbus.message import Error, ErrorCode, Metadata, mark_sent
from fedbus.runtime.grpc import ClientSettings, connect
from fedbus.worker import SERVER_ROLE, Worker


class Attacker(Worker):
    def __init__(self, honest: list[int]) -> None:
        super().__init__()
        self.honest = honest
        self.errors: Counter[str] = Counter()
        self.rounds = 0
        self.old_reply: Message | None = None
        self.raw_send = None  # the stream itself, set once connected
        for kind in ("train", "evaluate"):
            self.register_handlers(kind, self.on_request, senders=[SERVER_ROLE], replies=False)
        self.register_handlers(
            "finish", lambda m: self.stop(), senders=[SERVER_ROLE], replies=False
        )

    def deliver(self, message: Message) -> None:
        if message.has_error():
            self.errors[f"{message.msg_type}:{ErrorCode(message.error.code).name}"] += 1
        super().deliver(message)

    def on_request(self, message: Message) -> Message:
        self.rounds += 1
        assert self.comm_manager is not None
        send = self.comm_manager.send
        request = message.metadata
        # 1. answer the other clients' requests, with guessed ids
        own = request.message_id
        guesses = [own[:-1] + digit for digit in "0123456789abcdef" if digit != own[-1]]
        guesses += [f"{int(own, 16) + step:032x}" for step in (-2, -1, 1, 2)]
        guesses += [secrets.token_hex(16) for _ in range(1)]
        for guess in guesses:
            stolen = Metadata(
                request.run_id, guess, 0, self.node_id, "", request.group_id,
                request.created_at, request.ttl, request.message_type,
            )  # fmt: skip
            poison = Message.from_metadata(stolen, content=RecordDict())
            send(poison.create_reply(message.content))  # the server's own model, as a "result"
        # 2. tell the other clients to finish, or to train on a model of its choosing
        for node_id in self.honest:
            send(Message(RecordDict(), node_id, "finish"))
            send(Message(message.content, node_id, "train"))
        # 3. speak as node 1: put a message claiming its id on this node's own stream
        forged = Message(RecordDict(), 0, "join")
        mark_sent(forged, run_id=request.run_id, message_id=secrets.token_hex(16), src_node_id=1)
        assert self.raw_send is not None
        self.raw_send(forged)
        # 4. replay last round's reply
        if self.old_reply is not None:
            replay = Message.from_metadata(self.old_reply.metadata, error=self.old_reply.error)
            send(replay)
        reply = message.create_error_reply(Error(ErrorCode.UNKNOWN, "not training today"))
        self.old_reply = reply
        return reply


def main() -> int:
    address, node_id, out = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    honest = [int(node) for node in sys.argv[4].split(",")]
    attacker = Attacker(honest)
    handle = connect(
        attacker, address, token=os.environ["FEDBUS_TOKEN"], insecure=True,
        settings=ClientSettings(node_id=node_id, connect_timeout=60),
    )  # fmt: skip
    # a raw peer writes whatever it likes on its stream: here, past the stamping of its sends
    attacker.raw_send = handle._route  # type: ignore[assignment]
    handle.wait(120)
    out.write_text(json.dumps({"rounds": attacker.rounds, "errors": dict(attacker.errors)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
