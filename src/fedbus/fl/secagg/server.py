"""``SecAggServer``: synchronous rounds whose updates the server only ever sees summed.

Each round runs the four SecAgg+ stages of ``protocol`` over the sampled clients, four chained
``RequestGroup``s: each closes when every client still in the round answered or when
``stage_timeout`` passes, and its closing opens the next; a client that fails or stays silent
drops out of the round. The server relays keys and encrypted shares, collects masked inputs,
asks the survivors for the shares that remove the masks, and hands the strategy one update: the
mean of the survivors' updates, recovered to quantisation error.

A round in which some secret can no longer be recovered (fewer than ``threshold`` of a client's
neighbours answered) fails cleanly: the model stays as it was, the failure is recorded in
``secagg_failures``, and the federation goes on with the next round.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Unpack

import numpy as np

from fedbus.errors import InvalidArgumentError
from fedbus.fl.protocol import CONFIG, FINISH, METRICS
from fedbus.fl.record import RoundRecord
from fedbus.fl.requests import RequestGroup
from fedbus.fl.secagg import protocol as p
from fedbus.fl.secagg.crypto import KeyPair, agree, mask
from fedbus.fl.secagg.graph import default_degree, default_threshold, neighbour_graph
from fedbus.fl.secagg.quantize import Quantizer
from fedbus.fl.secagg.shamir import combine_shares
from fedbus.fl.server_base import ServerBase
from fedbus.fl.settings import SharedOptions, TrainingSettings, settings_from_options
from fedbus.fl.strategy.base import Strategy, WeightedMetrics
from fedbus.message import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    PackedList,
    RecordDict,
)
from fedbus.worker import SERVER_NODE_ID

__all__ = ["SecAggServer"]

logger = logging.getLogger("fedbus.secagg")

_KEY_BYTES = 32


@dataclass(slots=True)
class _Stage:
    kind: str
    replies: dict[int, RecordDict] = field(default_factory=dict)


@dataclass(slots=True)
class _Round:
    number: int
    sampled: list[int]
    graph: dict[int, frozenset[int]]
    threshold: int
    quantizer: Quantizer
    shapes: dict[str, tuple[int, ...]]  # the model's arrays, in the order updates are flattened
    size: int  # values in a flattened update
    keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)  # c_pk, s_pk
    peers: dict[int, list[int]] = field(default_factory=dict)  # whom each client shares with
    mask_peers: dict[int, set[int]] = field(default_factory=dict)
    survivors: set[int] = field(default_factory=set)  # clients whose masked input arrived
    masked_total: np.ndarray[Any, Any] | None = None  # their sum, modulo 2**bits
    metrics: WeightedMetrics = field(default_factory=WeightedMetrics)


class SecAggServer(ServerBase):
    """The FL server of secure aggregation (SecAgg+) over a sum-based strategy.

    Parameters
    ----------
    strategy
        Applies the mean update (FedAvg, FedAvgM, FedOpt, ...); rules that need every update
        are refused. Updates are averaged with equal weights: a weight would be one more value
        each client reveals.
    initial_arrays, num_rounds, clients_per_round
        As for ``Server``.
    degree, threshold
        Each client's neighbours in the round's communication graph, and how many of them
        must answer to recover its secrets (defaults: ``graph.default_degree`` and
        ``graph.default_threshold``). Up to ``degree - threshold`` neighbours of a client may
        drop out between stages.
    clip_range, bits
        Each coordinate of an update is clipped to ``[-clip_range, clip_range]`` and quantised
        to integers modulo ``2**bits``.
    stage_timeout
        Seconds each stage waits for the clients still in the round (default: wait for all).
    settings
        What every server shares (``TrainingSettings``), or its fields as keywords, with
        ``evaluate_fn``, ``evaluate_every`` and ``on_round_end``: as for ``Server``.
    """

    start_sends = (p.SECAGG_TRAIN, FINISH)

    def __init__(
        self,
        strategy: Strategy,
        initial_arrays: ArrayRecord | Mapping[str, np.ndarray[Any, Any]],
        *,
        clients_per_round: int,
        degree: int | None = None,
        threshold: int | None = None,
        clip_range: float = 1.0,
        bits: int = 32,
        stage_timeout: float | None = None,
        settings: TrainingSettings | None = None,
        node_id: int = SERVER_NODE_ID,
        **shared: Unpack[SharedOptions],
    ) -> None:
        settings = settings_from_options(type(self).__name__, settings, shared)
        super().__init__(strategy, initial_arrays, settings, node_id=node_id)
        require = self.require
        require(
            clients_per_round >= 2,
            "clients_per_round",
            ">= 2 (a sum of one is no secret)",
            clients_per_round,
        )
        require(
            stage_timeout is None or stage_timeout > 0,
            "stage_timeout",
            "> 0 or None",
            stage_timeout,
        )
        if not strategy.aggregates_by_sum:
            raise InvalidArgumentError(
                f"SecAggServer: strategy {strategy.name!r} needs every client's update, which "
                "secure aggregation hides; use fedavg, fedavgm, fedadagrad, fedadam, fedyogi or "
                "fedprox"
            )
        if settings.min_clients is None:
            self.min_clients = clients_per_round
        self.clients_per_round = clients_per_round
        self.degree = default_degree(clients_per_round) if degree is None else degree
        require(
            1 <= self.degree <= clients_per_round - 1,
            "degree",
            f"in 1..clients_per_round - 1 = {clients_per_round - 1}",
            self.degree,
        )
        self.threshold = default_threshold(self.degree) if threshold is None else threshold
        require(1 <= self.threshold <= self.degree, "threshold", "in 1..degree", self.threshold)
        self.clip_range, self.bits = clip_range, bits
        Quantizer(clip_range, bits, clients_per_round)  # refuse bad settings now, not in round 1
        self.stage_timeout = stage_timeout
        #: Rounds that failed, and why: (round, reason).
        self.secagg_failures: list[tuple[int, str]] = []
        self._round: _Round | None = None
        # each stage's replies open the next stage; any stage may end the round (a failure),
        # which starts the next round or ends the run
        following = (*p.STAGES[1:], None)
        for kind, after in zip(p.STAGES, following, strict=True):
            sends = (p.SECAGG_TRAIN, FINISH) if after is None else (after, p.SECAGG_TRAIN, FINISH)
            self.register_request_types([kind], sends)

    def begin_training(self) -> None:
        """Start round ``first_round``."""
        self._start_round(self.first_round)

    # -- stages ---------------------------------------------------------------------------------
    def _start_round(self, server_round: int) -> None:
        if self.stopped_by_strategy(server_round):
            return
        self._record = RoundRecord(round=server_round)
        sampled = sorted(self.sample(self.clients_per_round))
        degree = min(self.degree, len(sampled) - 1)
        graph_seed = int(self._rng.integers(2**63))
        shapes = {name: array.shape for name, array in sorted(self.arrays.items())}
        state = _Round(
            number=server_round,
            sampled=sampled,
            graph=neighbour_graph(sampled, degree, graph_seed),
            threshold=min(self.threshold, degree),
            quantizer=Quantizer(self.clip_range, self.bits, len(sampled)),
            shapes=shapes,
            size=sum(math.prod(shape) for shape in shapes.values()),
        )
        self._round = state
        self._record.clients_sampled = len(sampled)
        # the strategy's own request (FedProx's pull, differential privacy's clipping norm),
        # with each client's neighbours and the round's quantisation added
        base = ConfigRecord({**self.train_config, "server_round": server_round})
        requests = self.strategy.configure_train(server_round, self.arrays, base, sampled)
        contents = {}
        for node in sampled:
            request = requests if isinstance(requests, RecordDict) else requests[node]
            given = request.get(CONFIG)
            config = ConfigRecord(
                {
                    **(given if isinstance(given, ConfigRecord) else base),
                    p.ROUND: server_round,
                    p.NEIGHBOURS: sorted(state.graph[node]),
                    p.THRESHOLD: state.threshold,
                    p.CLIP_RANGE: self.clip_range,
                    p.BITS: self.bits,
                    p.NUM_INPUTS: len(sampled),
                }
            )
            contents[node] = RecordDict({**request, CONFIG: config})
        self._open_stage(p.SECAGG_TRAIN, contents)

    def _open_stage(self, kind: str, contents: Mapping[int, RecordDict]) -> None:
        state = self._round
        assert state is not None
        stage = _Stage(kind)
        # a client that fails or stays silent has dropped out of the round: the group logs it
        group = RequestGroup(
            self,
            on_reply=partial(self._on_stage_reply, state, stage),
            on_close=partial(self._close_stage, state, stage),
            deadline=self.stage_timeout,
            name=f"round {state.number} {kind}",
            watchdog=self.watchdog,
        )
        messages = []
        for node, content in contents.items():
            messages.append(Message(content, node, kind, group_id=str(state.number)))
            self.note_participant(node)
        group.send_all(messages)

    def _on_stage_reply(self, state: _Round, stage: _Stage, node: int, message: Message) -> None:
        if stage.kind == p.SECAGG_MASK:
            self._add_masked(state, node, message.content)
        else:
            stage.replies[node] = message.content

    def _close_stage(self, state: _Round, stage: _Stage, group: RequestGroup) -> None:
        if self._round is not state:
            return  # the run stopped meanwhile
        try:
            {
                p.SECAGG_TRAIN: self._after_train,
                p.SECAGG_SHARE: self._after_share,
                p.SECAGG_MASK: self._after_mask,
                p.SECAGG_UNMASK: self._after_unmask,
            }[stage.kind](state, stage.replies)
        except _RoundFailedError as failure:
            self._fail_round(state, str(failure))

    def _after_train(self, state: _Round, replies: dict[int, RecordDict]) -> None:
        for node, content in replies.items():
            keys, metrics = content.get("keys"), content.get(METRICS)
            if not isinstance(keys, ConfigRecord) or not isinstance(metrics, MetricRecord):
                continue
            c_pk, s_pk = keys.get("c_pk"), keys.get("s_pk")
            if (
                isinstance(c_pk, bytes)
                and isinstance(s_pk, bytes)
                and len(c_pk) == len(s_pk) == _KEY_BYTES
            ):
                state.keys[node] = (c_pk, s_pk)
                weight = metrics.get("num_examples", 0)
                state.metrics.add(metrics, weight if isinstance(weight, int) else 0)
        advertised = set(state.keys)
        contents = {}
        for node in sorted(advertised):
            peers = sorted(state.graph[node] & advertised)
            if len(peers) < state.threshold:
                raise _RoundFailedError(
                    f"client {node} has {len(peers)} neighbours left after key advertisement, "
                    f"fewer than the threshold {state.threshold}"
                )
            state.peers[node] = peers
            record = ConfigRecord(
                {
                    "ids": peers,
                    "c_pks": [state.keys[v][0] for v in peers],
                    "s_pks": [state.keys[v][1] for v in peers],
                }
            )
            contents[node] = RecordDict({"peers": record})
        self._open_stage(p.SECAGG_SHARE, contents)

    def _after_share(self, state: _Round, replies: dict[int, RecordDict]) -> None:
        relayed: dict[int, dict[int, bytes]] = {}  # receiver -> sender -> ciphertext
        shared = set()
        for node, content in replies.items():
            record = content.get("shares")
            if not isinstance(record, ConfigRecord):
                continue
            to, ciphertexts = record.get("to"), record.get("ciphertexts")
            if (
                to != state.peers[node]
                or not isinstance(ciphertexts, list | PackedList)
                or len(ciphertexts) != len(to)
            ):
                continue  # shares for anyone but exactly its peers: dropped from the round
            shared.add(node)
            for receiver, ciphertext in zip(to, ciphertexts, strict=True):
                if isinstance(receiver, int) and isinstance(ciphertext, bytes):
                    relayed.setdefault(receiver, {})[node] = ciphertext
        contents = {}
        for node in sorted(shared):
            senders = sorted(v for v in relayed.get(node, {}) if v in shared)
            state.mask_peers[node] = set(senders)
            record = ConfigRecord(
                {"from": senders, "ciphertexts": [relayed[node][v] for v in senders]}
            )
            contents[node] = RecordDict({"shares": record})
        self._open_stage(p.SECAGG_MASK, contents)

    def _add_masked(self, state: _Round, node: int, content: RecordDict) -> None:
        """Fold one masked input into the running sum as it arrives: the server never holds
        more than one vector of the model's size per round."""
        record = content.get("masked")
        if not isinstance(record, ArrayRecord) or "y" not in record:
            return
        masked = record.to_numpy_dict()["y"]
        size = state.size
        if masked.dtype not in (np.uint32, np.uint64) or masked.shape != (size,):
            return
        if state.masked_total is None:
            state.masked_total = np.zeros(size, dtype=np.uint64)
        state.masked_total += masked.astype(np.uint64)  # wraps modulo 2**64, a multiple of 2**bits
        state.survivors.add(node)

    def _after_mask(self, state: _Round, replies: dict[int, RecordDict]) -> None:
        if not state.survivors:
            raise _RoundFailedError("no client sent a masked input")
        survivors = state.survivors
        contents = {}
        for node in sorted(survivors):
            peers = state.mask_peers[node]
            status = ConfigRecord(
                {
                    "survivors": sorted(peers & survivors),
                    "dropped": sorted(peers - survivors),
                }
            )
            contents[node] = RecordDict({"status": status})
        self._open_stage(p.SECAGG_UNMASK, contents)

    def _after_unmask(self, state: _Round, replies: dict[int, RecordDict]) -> None:
        seed_shares: dict[int, dict[int, bytes]] = {}  # owner -> holder -> share
        key_shares: dict[int, dict[int, bytes]] = {}
        for holder, content in replies.items():
            record = content.get("reveal")
            if not isinstance(record, ConfigRecord):
                continue
            for owners, shares, into in (
                ("b_from", "b_shares", seed_shares),
                ("s_from", "s_shares", key_shares),
            ):
                ids, values = record.get(owners, []), record.get(shares, [])
                if not (
                    isinstance(ids, list | PackedList) and isinstance(values, list | PackedList)
                ):
                    continue
                for owner, share in zip(ids, values, strict=False):
                    if isinstance(owner, int) and isinstance(share, bytes):
                        into.setdefault(owner, {})[holder] = share
        survivors = state.survivors
        dropped = {v for node in survivors for v in state.mask_peers[node] - survivors}
        bits = state.quantizer.bits
        assert state.masked_total is not None  # there are survivors
        total = state.masked_total
        size = total.size
        for node in sorted(survivors):
            seed = self._recover(seed_shares.get(node, {}), state.threshold, "mask seed", node)
            total -= mask(seed, size, bits)
        for gone in sorted(dropped):
            secret = self._recover(key_shares.get(gone, {}), state.threshold, "mask key", gone)
            key = KeyPair.from_private_bytes(secret)
            for node in sorted(state.graph[gone] & survivors):
                if gone not in state.mask_peers[node]:
                    continue
                pairwise = mask(agree(key, state.keys[node][1], info=p.MASK_INFO), size, bits)
                # node added sign(node, gone) * pairwise: take it back out
                total = total - pairwise if p.pair_sign(node, gone) > 0 else total + pairwise
        total &= np.uint64((1 << bits) - 1)
        update_sum = state.quantizer.dequantize_sum(total, len(survivors))
        self._apply(state, update_sum, sorted(survivors))

    @staticmethod
    def _recover(shares: Mapping[int, bytes], threshold: int, what: str, owner: int) -> bytes:
        if len(shares) < threshold:
            raise _RoundFailedError(
                f"only {len(shares)} shares of client {owner}'s {what} came back, fewer than "
                f"the threshold {threshold}"
            )
        return combine_shares(dict(list(shares.items())[:threshold]), threshold, _KEY_BYTES)

    # -- the round's end ------------------------------------------------------------------------
    def _apply(self, state: _Round, flat_sum: np.ndarray[Any, Any], survivors: list[int]) -> None:
        update_sum: dict[str, np.ndarray[Any, Any]] = {}
        offset = 0
        for name, shape in state.shapes.items():
            size = math.prod(shape)
            update_sum[name] = flat_sum[offset : offset + size].reshape(shape)
            offset += size
        self.arrays = self.strategy.aggregate_sum(
            state.number, self.arrays, update_sum, len(survivors)
        )
        record = self._record
        record.clients_replied = len(survivors)
        record.clients_failed = len(state.sampled) - len(survivors)
        self.record_aggregation(record, survivors, state.metrics.result())
        self._end(state)

    def _fail_round(self, state: _Round, reason: str) -> None:
        logger.warning("round %s: secure aggregation failed: %s", state.number, reason)
        self.secagg_failures.append((state.number, reason))
        record = self._record
        record.clients_failed = len(state.sampled)
        self._end(state)

    def _end(self, state: _Round) -> None:
        self._round = None
        if self.end_round(self._record):
            self._start_round(state.number + 1)


class _RoundFailedError(Exception):
    """A SecAgg+ round cannot be completed; the reason says why."""
