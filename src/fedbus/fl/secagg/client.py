"""``SecAggClient``: a ``Client`` that answers the four SecAgg+ stages with handlers.

It trains on ``secagg_train`` as any client does, but keeps its update to itself: only a masked,
quantised version of it ever leaves, in ``secagg_mask``. Secrets of a round (key pairs, mask
seed, the shares neighbours sent) live in memory until the next round starts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.client import Client, from_server, plain_config
from fedbus.fl.protocol import METRICS
from fedbus.fl.secagg import protocol as p
from fedbus.fl.secagg.crypto import KeyPair, agree, decrypt, encrypt, mask
from fedbus.fl.secagg.quantize import Quantizer
from fedbus.fl.secagg.shamir import split_secret
from fedbus.fl.updates import check_finite, model_delta
from fedbus.message import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    PackedList,
    RecordDict,
)

__all__ = ["SecAggClient", "flatten_update"]

_SEED_BYTES = 32


def flatten_update(trained: dict[str, np.ndarray], received: dict[str, np.ndarray]) -> np.ndarray:
    """``trained - received`` as one float64 vector, arrays in sorted name order."""
    if trained.keys() != received.keys():
        raise InvalidArgumentError(
            f"the trained arrays {sorted(trained)} differ from the model's {sorted(received)}"
        )
    delta = model_delta(trained, received)
    parts = [delta[name].ravel() for name in sorted(delta)]
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass(slots=True)
class _RoundSecrets:
    server_round: int
    threshold: int
    neighbours: frozenset[int]
    quantized: np.ndarray[Any, Any]
    bits: int
    encryption: KeyPair = field(default_factory=KeyPair.generate)
    masking: KeyPair = field(default_factory=KeyPair.generate)
    seed: bytes = field(default_factory=lambda: secrets.token_bytes(_SEED_BYTES))
    peer_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # c_pk, s_pk
    received: dict[int, bytes] = field(default_factory=dict)  # encrypted shares, by sender


class SecAggClient(Client):
    """A client of secure aggregation: trains, then takes part in the four SecAgg+ stages.

    It is built as a ``Client`` is; its four handlers are declared with ``@from_server``.
    """

    #: The secrets of the round in progress; None between rounds. They live on the object from
    #: one stage to the next, so a simulation answers this client's messages in its own process.
    _round: _RoundSecrets | None = None
    portable = False

    # -- stage 0: train, advertise keys ---------------------------------------------------------
    @from_server(p.SECAGG_TRAIN)
    def on_secagg_train(self, message: Message) -> Message | None:
        """Train, quantise the update, keep it; reply with two fresh public keys."""
        # the privacy mod's update filter clips (and noises) in train_on: before masking
        received, arrays, num_examples, metrics = self.train_on(message)
        # the server sees only sums, so it cannot refuse a NaN: a diverged client drops out
        check_finite(self.node_id, ArrayRecord(arrays))
        config = plain_config(message.content)
        quantizer = Quantizer(
            float(_number(config, p.CLIP_RANGE)),
            int(_number(config, p.BITS)),
            int(_number(config, p.NUM_INPUTS)),
        )
        neighbours = config.get(p.NEIGHBOURS, [])
        if not isinstance(neighbours, list | PackedList):
            raise InvalidArgumentError(f"{p.NEIGHBOURS!r}: expected a list of node ids")
        self._round = _RoundSecrets(
            server_round=int(_number(config, p.ROUND)),
            threshold=int(_number(config, p.THRESHOLD)),
            neighbours=frozenset(int(n) for n in neighbours),
            quantized=_compact(
                quantizer.quantize(flatten_update(arrays, received)), quantizer.bits
            ),
            bits=int(_number(config, p.BITS)),
        )
        keys = ConfigRecord(
            {
                "c_pk": self._round.encryption.public_bytes,
                "s_pk": self._round.masking.public_bytes,
            }
        )
        reply_metrics = MetricRecord({**metrics, "num_examples": num_examples})
        return message.create_reply(RecordDict({"keys": keys, METRICS: reply_metrics}))

    # -- stage 1: share the secrets with the neighbours -----------------------------------------
    @from_server(p.SECAGG_SHARE)
    def on_secagg_share(self, message: Message) -> Message | None:
        """Shamir-share the mask seed and the mask key among the neighbours that advertised."""
        current = self._current(message)
        if current is None:
            return None
        record = _config(message.content, "peers")
        peers = [int(v) for v in _list(record, "ids")]
        c_pks, s_pks = _list(record, "c_pks"), _list(record, "s_pks")
        if not set(peers) <= current.neighbours or len(c_pks) != len(peers) != len(s_pks):
            raise InvalidArgumentError("secagg_share: peers must be this client's neighbours")
        current.peer_keys = {
            v: (bytes(c), bytes(s)) for v, c, s in zip(peers, c_pks, s_pks, strict=True)
        }
        seed_shares = split_secret(current.seed, current.threshold, peers)
        key_shares = split_secret(current.masking.private_bytes(), current.threshold, peers)
        node = self.node_id
        ciphertexts = []
        for v in peers:
            key = agree(current.encryption, current.peer_keys[v][0], info=p.ENCRYPTION_INFO)
            plaintext = _pack(seed_shares[v], key_shares[v])
            ad = p.share_associated_data(current.server_round, node, v)
            ciphertexts.append(encrypt(key, plaintext, ad))
        shares = ConfigRecord({"to": peers, "ciphertexts": ciphertexts})
        return message.create_reply(RecordDict({"shares": shares}))

    # -- stage 2: masked input ------------------------------------------------------------------
    @from_server(p.SECAGG_MASK)
    def on_secagg_mask(self, message: Message) -> Message | None:
        """Keep the shares addressed to this client; reply with the masked, quantised update."""
        current = self._current(message)
        if current is None:
            return None
        record = _config(message.content, "shares")
        senders = [int(v) for v in _list(record, "from")]
        if not set(senders) <= set(current.peer_keys):
            raise InvalidArgumentError("secagg_mask: shares from clients that are no neighbours")
        current.received = {
            v: bytes(ct) for v, ct in zip(senders, _list(record, "ciphertexts"), strict=True)
        }
        size, bits = current.quantized.size, current.bits
        modulus_mask = np.uint64((1 << bits) - 1)
        masked = current.quantized.astype(np.uint64) + mask(current.seed, size, bits)
        for v in senders:  # exactly the neighbours that will mask with this client
            seed = agree(current.masking, current.peer_keys[v][1], info=p.MASK_INFO)
            pairwise = mask(seed, size, bits)
            masked = masked + pairwise if p.pair_sign(self.node_id, v) > 0 else masked - pairwise
        masked &= modulus_mask
        if bits <= 32:  # half the bytes on the wire
            masked = masked.astype(np.uint32)
        return message.create_reply(RecordDict({"masked": ArrayRecord({"y": masked})}))

    # -- stage 3: unmasking ---------------------------------------------------------------------
    @from_server(p.SECAGG_UNMASK)
    def on_secagg_unmask(self, message: Message) -> Message | None:
        """Reveal the survivors' seed shares and the dropped clients' mask-key shares."""
        current = self._current(message)
        if current is None:
            return None
        record = _config(message.content, "status")
        survivors = {int(v) for v in _list(record, "survivors")}
        dropped = {int(v) for v in _list(record, "dropped")}
        if survivors & dropped or not (survivors | dropped) <= set(current.received):
            raise InvalidArgumentError(
                "secagg_unmask: a client is listed as both survivor and dropped, or sent this "
                "client no share; refusing to reveal anything"
            )
        node = self.node_id
        b_from: list[int] = []
        b_shares: list[bytes] = []
        s_from: list[int] = []
        s_shares: list[bytes] = []
        for v in sorted(survivors | dropped):
            key = agree(current.encryption, current.peer_keys[v][0], info=p.ENCRYPTION_INFO)
            ad = p.share_associated_data(current.server_round, v, node)
            seed_share, key_share = _unpack(decrypt(key, current.received[v], ad))
            if v in survivors:
                b_from.append(v)
                b_shares.append(seed_share)
            else:
                s_from.append(v)
                s_shares.append(key_share)
        reveal = ConfigRecord(
            {"b_from": b_from, "b_shares": b_shares, "s_from": s_from, "s_shares": s_shares}
        )
        self._round = None  # the round's secrets are spent
        return message.create_reply(RecordDict({"reveal": reveal}))

    def _current(self, message: Message) -> _RoundSecrets | None:
        current = self._round
        if current is None or message.metadata.group_id != str(current.server_round):
            raise InvalidArgumentError(
                f"{message.msg_type}: no secure aggregation round {message.metadata.group_id} "
                "in progress on this client"
            )
        return current


def _compact(values: np.ndarray[Any, Any], bits: int) -> np.ndarray[Any, Any]:
    """Quantised values in uint32 when they fit: a simulation keeps one per client per round."""
    return values.astype(np.uint32) if bits <= 32 else values


def _number(config: dict[str, object], key: str) -> float:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"secagg_train: config {key!r} must be a number, got {value!r}")
    return value


def _config(content: RecordDict, name: str) -> ConfigRecord:
    record = content.get(name)
    if not isinstance(record, ConfigRecord):
        raise InvalidArgumentError(f"expected a ConfigRecord named {name!r}, found {list(content)}")
    return record


def _list(record: ConfigRecord, key: str) -> list[Any]:
    value = record.get(key, [])
    if isinstance(value, PackedList):  # a long list, decoded from a frame
        return value.tolist()
    if not isinstance(value, list):
        raise InvalidArgumentError(f"{key!r}: expected a list, got {type(value).__name__}")
    return value


def _pack(first: bytes, second: bytes) -> bytes:
    """Two byte strings as one: a 4-byte length, then both."""
    return len(first).to_bytes(4, "big") + first + second


def _unpack(data: bytes) -> tuple[bytes, bytes]:
    length = int.from_bytes(data[:4], "big")
    if len(data) < 4 + length:
        raise InvalidArgumentError("a decrypted share is shorter than its header says")
    return data[4 : 4 + length], data[4 + length :]
