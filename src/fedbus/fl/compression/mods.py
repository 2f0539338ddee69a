"""Compression as a mod: one ``CompressionMod`` on the server and on every client.

Upstream (``direction`` ``up`` or ``both``), a client compresses its training reply: a lossy
method the update (trained minus received), zstd the exclusive-or of their bits; the server
rebuilds the model by adding the update to exactly what it sent that client. Downstream
(``down`` or ``both``), the server compresses the model in its requests, once per distinct
model (a broadcast to 1,000 clients is encoded once; a model is known by its ``ArrayRecord``
object, which servers replace rather than change), and each client restores it before its
handler sees the request; for a lossy method the server then adds the clients' updates to the
model as they decoded it, not as it was before quantisation.

On the server, the mod remembers for each request in flight the model sent (a reference, not a
copy: a broadcast shares one record) and forgets it when the reply comes, fails or is given up
(``on_forget``). A reply that does not decode (malformed payloads, an update to a model that was
not sent, a decompression bomb) becomes an error reply: the request fails for that client alone
and the federation goes on.

Stochastic rounding draws from ``[seed, request seed, stream]`` (as ``ClientPrivacy`` does):
the same in every run of a simulation, fresh entropy from the operating system with no seed.

>>> from fedbus.fl import Client
>>> from fedbus.train import NumpyTrainer, SoftmaxRegression
>>> import numpy as np
>>> trainer = NumpyTrainer(SoftmaxRegression(2, 2), np.zeros((4, 2)), np.array([0, 1, 0, 1]))
>>> client = Client(trainer).use(CompressionMod("int8", seed=7))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.client import CLIENT_STATE, request_seed
from fedbus.fl.compression.base import CodecOptions, build_codec
from fedbus.fl.compression.wire import (
    MAX_ELEMENTS,
    Compressed,
    compress,
    compress_content,
    decompress,
    decompress_content,
    is_compressed,
)
from fedbus.fl.protocol import ARRAYS
from fedbus.fl.state import ClientStateStore
from fedbus.message import ArrayRecord, Message
from fedbus.worker import is_reply_or_error
from fedbus.worker.mods import CallNext, MessageContext, Mod

__all__ = ["DIRECTIONS", "RESIDUAL", "CompressionMod"]

#: Which messages are compressed: client replies (up), server requests (down), or both.
DIRECTIONS: Final = ("up", "down", "both")
#: Name of error feedback's residual in the client's ``ClientStateStore``.
RESIDUAL: Final = "compression.residual"
#: Most requests in flight whose model the server remembers (as ``Worker``'s own bound).
MAX_REMEMBERED: Final = 1_000_000
#: Mixed into the seed of stochastic rounding, apart from the trainer's and the noise's streams.
_STREAM: Final = 0xC0


@dataclass(slots=True)
class _Sent:
    """A model the server sent: the record, what the clients restore, and who has it."""

    record: ArrayRecord
    base: ArrayRecord  # what a client's update is added to: ``record``, or it decoded
    compressed: Compressed | None  # downstream: what every request carrying it sends
    in_flight: int = 0


class CompressionMod(Mod):
    """Compresses models on the way out of a node and restores them on the way in.

    Parameters
    ----------
    method
        ``int8``, ``int4``, ``topk`` or ``zstd`` (``fedbus.fl.compression.codec_names()``), or
        ``none``: compress nothing, but restore what others compressed.
    direction
        ``up`` (client replies), ``down`` (server requests) or ``both``.
    topk_ratio
        Share of each array's values top-k sends.
    zstd_level
        Zstandard's level, 1 to 22.
    seed
        Seed of stochastic rounding, with each request's seed; None: the operating system's
        entropy (deployments).
    max_elements
        Most values a client decodes from a compressed request.

    Raises
    ------
    InvalidArgumentError
        An unknown method or direction, or top-k downstream.
    """

    def __init__(
        self,
        method: str = "int8",
        *,
        direction: str = "up",
        topk_ratio: float = 0.01,
        zstd_level: int = 3,
        seed: int | None = None,
        max_elements: int = MAX_ELEMENTS,
    ) -> None:
        if direction not in DIRECTIONS:
            raise InvalidArgumentError(
                f"CompressionMod: direction must be one of {list(DIRECTIONS)}, got {direction!r}"
            )
        options = CodecOptions(topk_ratio, zstd_level)
        self.codec = None if method == "none" else build_codec(method, options)
        if direction != "up" and self.codec is not None and not self.codec.downstream:
            raise InvalidArgumentError(
                f'compression method {method!r} compresses updates only: set direction = "up"'
            )
        self.method, self.direction = method, direction
        self.seed, self.max_elements = seed, max_elements
        self.up = self.codec is not None and direction in ("up", "both")
        self.down = self.codec is not None and direction in ("down", "both")
        # server side: the model each request in flight carried, by message id
        self._in_flight: dict[str, _Sent] = {}
        self._unstamped: list[tuple[Message, _Sent]] = []
        self._sent: dict[int, _Sent] = {}  # by id() of the record, which _Sent keeps alive
        self._latest: _Sent | None = None

    # -- a client: requests in, replies out ---------------------------------------------------
    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        """Restore a compressed request; compress the reply's update (upstream)."""
        request = message
        if message.has_content() and is_compressed(message.content):
            content = decompress_content(message.content, max_elements=self.max_elements)
            request = Message.from_metadata(message.metadata, content=content)
        reply = call_next(request, context)
        codec = self.codec
        if (
            not self.up
            or codec is None
            or not isinstance(reply, Message)
            or not reply.has_content()
        ):
            return reply
        trained, received = reply.content.get(ARRAYS), request.content.get(ARRAYS)
        if not isinstance(trained, ArrayRecord) or not isinstance(received, ArrayRecord):
            return reply
        store = self._store(context) if codec.error_feedback else None
        residual = store.get(context.node_id, RESIDUAL) if store is not None else None
        packed = compress(trained, codec, self._rng(request), base=received, residual=residual)
        if store is not None:
            store.put(context.node_id, RESIDUAL, packed.residual)
        return Message.from_metadata(
            reply.metadata, content=compress_content(reply.content, packed)
        )

    def _store(self, context: MessageContext) -> ClientStateStore:
        """The client's state store, where error feedback keeps its residual."""
        store = context.get(CLIENT_STATE)
        if not isinstance(store, ClientStateStore):
            raise InvalidArgumentError(
                f"{self.method} keeps error feedback's residual in the client's state store: "
                "install CompressionMod on a fedbus.fl.Client"
            )
        return store

    def _rng(self, message: Message) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, request_seed(message), _STREAM])

    # -- the server: requests out, replies in -------------------------------------------------
    def on_send(self, message: Message, context: MessageContext) -> Message:
        """Remember the model a request carries; compress it (downstream)."""
        self._settle()
        if is_reply_or_error(message) or not message.has_content():
            return message
        record = message.content.get(ARRAYS)
        if not isinstance(record, ArrayRecord):
            return message
        sent = self._model(record, message)
        if sent.compressed is not None:
            content = compress_content(message.content, sent.compressed)
            message = Message.from_metadata(message.metadata, content=content)
        sent.in_flight += 1
        self._unstamped.append((message, sent))
        return message

    def on_reply(self, message: Message, context: MessageContext) -> Message:
        """Rebuild a compressed reply's model on the one its request carried."""
        self._settle()
        sent = self._in_flight.pop(message.metadata.reply_to_message_id, None)
        if sent is not None:
            self._release(sent)
        if message.has_error() or not is_compressed(message.content):
            return message
        base = None if sent is None else sent.base
        content = decompress_content(message.content, base=base)
        return Message.from_metadata(message.metadata, content=content)

    def on_forget(self, message_id: str) -> None:
        """The request was given up: its model need not be kept for it."""
        self._settle()
        sent = self._in_flight.pop(message_id, None)
        if sent is not None:
            self._release(sent)

    def _model(self, record: ArrayRecord, message: Message) -> _Sent:
        """What the server keeps for ``record``, compressed once for every request carrying it."""
        sent = self._sent.get(id(record))
        if sent is None:
            compressed, base = None, record
            if self.down and self.codec is not None:
                compressed = compress(record, self.codec, self._rng(message))
                if self.codec.lossy:  # the updates will be to what the clients decoded
                    base = decompress(compressed.arrays, compressed.header, max_elements=2**62)
            sent = self._sent[id(record)] = _Sent(record, base, compressed)
        if self._latest is not sent:
            previous, self._latest = self._latest, sent
            if previous is not None and previous.in_flight == 0:
                self._sent.pop(id(previous.record), None)
        return sent

    def _settle(self) -> None:
        """File the requests sent since the last call under the ids the runtime gave them."""
        for message, sent in self._unstamped:
            message_id = message.metadata.message_id
            if not message_id:  # the runtime refused to send it
                self._release(sent)
                continue
            self._in_flight[message_id] = sent
            if len(self._in_flight) > MAX_REMEMBERED:
                self._release(self._in_flight.pop(next(iter(self._in_flight))))
        self._unstamped.clear()

    def _release(self, sent: _Sent) -> None:
        sent.in_flight -= 1
        if sent.in_flight <= 0 and sent is not self._latest:
            self._sent.pop(id(sent.record), None)

    def __repr__(self) -> str:
        return f"CompressionMod({self.method!r}, direction={self.direction!r})"
