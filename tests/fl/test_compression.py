"""Compression of models: each method restores what it compressed (exactly, or unbiased and
within one step), top-k's error feedback keeps what was not sent in the client's state store,
malformed compressed replies fail for their sender only, and configured runs on digits learn
as the uncompressed run does while sending fewer bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import zstandard

from fedbus.errors import ConfigError, DecodeError, InvalidArgumentError
from fedbus.fl import Client, ClientStateStore, FedAvg, Server
from fedbus.fl.compression import (
    COMPRESSED,
    COMPRESSION,
    RESIDUAL,
    CompressionMod,
    TopK,
    build_codec,
    compress,
    decompress,
    decompress_content,
)
from fedbus.fl.compression.quantize import pack_nibbles, unpack_nibbles
from fedbus.fl.protocol import ARRAYS, CONFIG, METRICS
from fedbus.message import (
    ArrayRecord,
    ConfigRecord,
    ErrorCode,
    Message,
    MetricRecord,
    RecordDict,
    mark_sent,
)
from fedbus.run.config import load_config
from fedbus.run.federation import build_federation, mod_names
from fedbus.runtime.simulation import simulate
from fedbus.runtime.simulation.offload import RecordingComm
from fedbus.train import NumpyTrainer, SoftmaxRegression
from fedbus.worker import Worker
from fedbus.worker.mods import CallNext, MessageContext, Mod

from ..conftest import RunFederation

Arrays = dict[str, np.ndarray[Any, Any]]
METHODS = ("int8", "int4", "topk", "zstd")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def model(dtype: Any = np.float32, seed: int = 1) -> Arrays:
    generator = rng(seed)
    return {
        "weight": generator.normal(size=(6, 5)).astype(dtype),
        "bias": generator.normal(size=5).astype(dtype),
        "scalar": np.array(2.5, dtype=dtype),
        "empty": np.zeros((2, 0, 3), dtype=dtype),
        "odd": generator.normal(size=7).astype(dtype),
        "steps": np.array([3, 4], dtype=np.int64),
        "mask": np.array([True, False]),
    }


def step_of(values: np.ndarray[Any, Any], method: str) -> float:
    """The largest error a method may make on ``values``: one quantisation step."""
    if values.size == 0 or method in ("zstd", "topk"):
        return 0.0
    levels = 255 if method == "int8" else 15
    span = float(values.max()) - float(values.min())
    return span / levels * 1.0001 + float(np.finfo(values.dtype).eps) * float(np.abs(values).max())


# -- round trips ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_each_method_restores_every_array_dtype_and_shape(method: str, dtype: Any) -> None:
    codec = TopK(1.0) if method == "topk" else build_codec(method)  # top-k of all is exact
    arrays = model(dtype)
    packed = compress(ArrayRecord(arrays), codec, rng())
    restored = decompress(packed.arrays, packed.header).to_numpy_dict()
    assert list(restored) == list(arrays)
    for name, values in arrays.items():
        got = restored[name]
        assert (got.dtype, got.shape) == (values.dtype, values.shape), name
        if values.dtype.kind != "f":
            assert np.array_equal(got, values), name  # integers and booleans travel raw
        else:
            error = np.abs(got.astype(np.float64) - values.astype(np.float64))
            assert error.max(initial=0.0) <= step_of(values, method), name
    assert list(packed.header["encodings"]) == [method] * 5 + ["raw", "raw"]


@pytest.mark.parametrize("method", METHODS)
def test_an_update_is_sent_relative_to_the_received_model_and_rebuilt_on_it(method: str) -> None:
    received = model(np.float32)
    trained = {name: np.asarray(value * np.float32(1.01)) for name, value in received.items()}
    trained["steps"] = received["steps"] + 1
    packed = compress(ArrayRecord(trained), build_codec(method), rng(), base=ArrayRecord(received))
    assert list(packed.header["relative"]) == [True] * 5 + [False, False]
    restored = decompress(packed.arrays, packed.header, base=ArrayRecord(received))
    for name, values in restored.to_numpy_dict().items():
        if method == "zstd" or values.dtype.kind != "f":
            assert np.array_equal(values, trained[name]), name  # bit for bit
        else:
            update = trained[name] - received[name]
            tolerance = np.abs(update).max(initial=0.0) * (1.0001 if method == "topk" else 0.2)
            assert np.abs(values - trained[name]).max(initial=0.0) <= tolerance + 1e-6, name


def test_lossless_compression_of_an_update_is_much_smaller_than_of_the_weights() -> None:
    received = {"w": rng().normal(size=20_000).astype(np.float32)}
    trained = {"w": received["w"] + rng(1).normal(scale=1e-4, size=20_000).astype(np.float32)}
    codec = build_codec("zstd")
    plain = compress(ArrayRecord(trained), codec, rng()).arrays.count_bytes()
    update = compress(ArrayRecord(trained), codec, rng(), base=ArrayRecord(received))
    assert update.arrays.count_bytes() < 0.8 * plain < 0.8 * 80_000


def test_lossy_methods_refuse_non_finite_values_and_zstd_keeps_them_exactly() -> None:
    arrays = ArrayRecord({"w": np.array([1.0, np.nan, np.inf], dtype=np.float32)})
    for method in ("int8", "int4", "topk"):
        with pytest.raises(InvalidArgumentError, match=f"'w' with {method}: it has non-finite"):
            compress(arrays, build_codec(method), rng())
    packed = compress(arrays, build_codec("zstd"), rng())
    restored = decompress(packed.arrays, packed.header)["w"].numpy()
    # the bits arrive unchanged; the server's check refuses a non-finite update after that
    assert restored.tobytes() == arrays["w"].numpy().tobytes()


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_stochastic_quantisation_is_unbiased(method: str) -> None:
    codec = build_codec(method)
    values = np.concatenate([[0.0, 1.0], rng(3).random(48)]).astype(np.float32)
    draws = 4000
    generator = rng(4)
    total = np.zeros(values.size)
    for _ in range(draws):
        encoded = codec.encode(values, generator)
        total += codec.decode(encoded, np.dtype(np.float32), values.shape)
    step = 1 / (255 if method == "int8" else 15)
    # each draw errs by less than a step, with standard deviation at most step / 2
    assert np.abs(total / draws - values).max() < 5 * (step / 2) / np.sqrt(draws)
    nearest = np.round(values / step) * step  # what rounding to the nearest level would give
    assert np.abs(nearest - values).max() > 5 * (step / 2) / np.sqrt(draws)


def test_int4_packs_two_values_per_byte_and_odd_lengths_pad_with_zero() -> None:
    codes = np.array([1, 15, 0, 7, 9], dtype=np.uint8)
    packed = pack_nibbles(codes)
    assert packed.tolist() == [1 | 15 << 4, 0 | 7 << 4, 9]
    assert np.array_equal(unpack_nibbles(packed, 5), codes)
    with pytest.raises(DecodeError, match="padding"):
        unpack_nibbles(np.array([1 | 15 << 4, 0 | 7 << 4, 9 | 1 << 4], dtype=np.uint8), 5)
    encoded = build_codec("int4").encode(np.linspace(0, 1, 7, dtype=np.float32), rng())
    assert encoded.parts[""].nbytes == 4


def test_topk_keeps_exactly_the_k_largest_magnitudes() -> None:
    values = rng(5).normal(size=(20, 10))
    encoded = TopK(0.05).encode(values, rng())
    indices = encoded.parts["indices"]
    assert indices.dtype == np.uint32
    assert indices.size == 10
    largest = np.argsort(-np.abs(values).reshape(-1))[:10]
    assert sorted(indices.tolist()) == sorted(largest.tolist())
    assert np.array_equal(encoded.parts["values"], values.reshape(-1)[indices])
    assert TopK(0.001).count(10) == 1
    assert TopK(1.0).count(0) == 0


# -- error feedback -------------------------------------------------------------------------------
class Steps:
    """A trainer whose training adds a given step to the model."""

    def __init__(self, steps: list[Arrays]) -> None:
        self.steps = steps

    def fit(
        self, arrays: Arrays, config: dict[str, object]
    ) -> tuple[Arrays, int, dict[str, float]]:
        step = self.steps.pop(0)
        return {name: np.asarray(arrays[name] + step[name]) for name in arrays}, 10, {}

    def evaluate(
        self, arrays: Arrays, config: dict[str, object]
    ) -> tuple[float, int, dict[str, float]]:
        return 0.0, 10, {}


def train_request(arrays: Arrays, group_id: str = "1") -> Message:
    content = RecordDict({ARRAYS: ArrayRecord(arrays), CONFIG: ConfigRecord({"seed": 5})})
    request = Message(content, 1, "train", group_id=group_id)
    mark_sent(request, run_id=1, message_id=f"train-{group_id}", src_node_id=0)
    return request


def reply_of(client: Client, request: Message) -> Message:
    comm = RecordingComm(start=0.0, speed=1e6)
    client.attach(comm, 1)  # type: ignore[arg-type]
    client.deliver(request)
    (reply,) = [message for kind, message in comm.actions if kind == "send"]
    assert isinstance(reply, Message)
    return reply


def test_topk_error_feedback_keeps_the_residual_in_the_state_store_and_adds_it_next_round() -> None:
    received = {"w": np.zeros(10, np.float32)}
    first = {"w": np.arange(10, dtype=np.float32) / 10}  # top-2 sends 0.9 and 0.8
    second = {"w": np.full(10, 0.05, np.float32)}
    client = Client(Steps([first, second]), 1).use(CompressionMod("topk", topk_ratio=0.2, seed=1))
    reply = reply_of(client, train_request(received))
    assert ARRAYS not in reply.content
    assert COMPRESSION in reply.content
    sent = decompress_content(reply.content, base=ArrayRecord(received))[ARRAYS]["w"].numpy()  # type: ignore[index]
    expected_sent = np.where(first["w"] >= 0.8, first["w"], 0)
    assert np.array_equal(sent, expected_sent)
    residual = client.state.get(1, RESIDUAL)
    assert residual is not None
    assert np.array_equal(residual["w"], first["w"] - expected_sent)  # update - sent

    # the client is rebuilt from its saved state, as a worker process does
    saved = client.save_state()
    fresh = Client(Steps([second]), 1, state=ClientStateStore())
    fresh.use(CompressionMod("topk", topk_ratio=0.2, seed=1))
    fresh.load_state(saved)
    reply = reply_of(fresh, train_request(received, group_id="2"))
    sent = decompress_content(reply.content, base=ArrayRecord(received))[ARRAYS]["w"].numpy()  # type: ignore[index]
    corrected = second["w"] + (first["w"] - expected_sent)  # 0.05 plus the residual
    top = np.argsort(-corrected)[:2]
    assert sorted(np.flatnonzero(sent).tolist()) == sorted(top.tolist())  # 0.75 and 0.65
    np.testing.assert_allclose(sent[top], corrected[top])
    after = fresh.state.get(1, RESIDUAL)
    assert after is not None
    np.testing.assert_allclose(after["w"], corrected - sent)


def test_topk_needs_a_client_for_its_residual() -> None:
    worker = Worker(1).use(CompressionMod("topk"))
    assert isinstance(worker, Worker)
    context = MessageContext(1)
    mod = worker.mods[0]
    assert isinstance(mod, CompressionMod)
    request = train_request({"w": np.zeros(3, np.float32)})
    with pytest.raises(
        InvalidArgumentError, match=r"install CompressionMod on a fedbus\.fl\.Client"
    ):
        mod(request, context, lambda message, context: message.create_reply(message.content))


def test_stochastic_rounding_repeats_for_a_seed_and_request() -> None:
    received = {"w": np.zeros(50, np.float32)}

    def sent(seed: int, group_id: str) -> bytes:
        step = {"w": np.linspace(-1, 1, 50, dtype=np.float32)}
        client = Client(Steps([step]), 1).use(CompressionMod("int4", seed=seed))
        request = train_request(received, group_id)
        request.content[CONFIG] = ConfigRecord({})  # the seed comes from the group id
        payloads = reply_of(client, request).content[COMPRESSED]
        assert isinstance(payloads, ArrayRecord)
        return payloads["0"].numpy().tobytes()

    assert sent(3, "1") == sent(3, "1")
    assert sent(3, "1") != sent(3, "2")
    assert sent(3, "1") != sent(4, "1")


# -- the server's side ----------------------------------------------------------------------------
class Keep:
    """A runtime stand-in: stamps and keeps what the server sends."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        mark_sent(message, run_id=1, message_id=f"m{len(self.sent)}", src_node_id=0)
        self.sent.append(message)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Any:
        raise AssertionError("no timers here")

    def report_work(self, num_samples: int) -> None: ...

    def stop(self) -> None: ...


def server_with(mod: CompressionMod) -> tuple[Worker, Keep, list[Message]]:
    server = Worker(0).use(mod)
    comm = Keep()
    server.attach(comm, 0)  # type: ignore[arg-type]
    return server, comm, []


def test_a_broadcast_is_compressed_once_and_replies_are_rebuilt_on_what_clients_decoded() -> None:
    mod = CompressionMod("int8", direction="both", seed=2)
    server, comm, replies = server_with(mod)
    arrays = ArrayRecord(model(np.float32))
    content = RecordDict({ARRAYS: arrays, CONFIG: ConfigRecord({"seed": 1})})
    for node_id in (1, 2, 3):
        server.request(Message(content, node_id, "train"), replies.append)
    payloads = {id(message.content[COMPRESSED]) for message in comm.sent}
    assert len(payloads) == 1  # encoded once for the three
    client = Client(Steps([{name: np.zeros_like(v) for name, v in model().items()}]), 1)
    client.use(CompressionMod("int8", direction="both", seed=9))
    answer = reply_of(client, comm.sent[0])  # no change: the client sends back what it decoded
    server.deliver(answer)
    (rebuilt,) = replies
    decoded = decompress_content(comm.sent[0].content)[ARRAYS]
    assert rebuilt.content[ARRAYS] == decoded  # bit for bit what the client decoded
    assert len(mod._in_flight) == 2
    server.forget(comm.sent[1].metadata.message_id)
    server.nodes_departed([3])
    assert mod._in_flight == {}
    assert len(mod._sent) == 1  # the latest model only, kept for the next requests


def test_a_reply_without_compression_passes_untouched() -> None:
    server, comm, replies = server_with(CompressionMod("int8"))
    content = RecordDict({ARRAYS: ArrayRecord(model()), CONFIG: ConfigRecord({})})
    server.request(Message(content, 1, "train"), replies.append)
    assert comm.sent[0].content is content  # direction up: the request travels as it is
    plain = comm.sent[0].create_reply(RecordDict({ARRAYS: ArrayRecord(model(seed=2))}))
    mark_sent(plain, run_id=1, message_id="r", src_node_id=1)
    server.deliver(plain)
    assert replies == [plain]


def honest_reply(received: Arrays, method: str = "int8") -> RecordDict:
    """A compressed reply's content as an honest client makes it."""
    trained = {name: value + np.float32(0.1) for name, value in received.items()}
    codec = build_codec(method)
    packed = compress(ArrayRecord(trained), codec, rng(), base=ArrayRecord(received))
    return RecordDict(
        {
            COMPRESSED: packed.arrays,
            COMPRESSION: packed.header,
            METRICS: MetricRecord({"num_examples": 5}),
        }
    )


def tampered(
    content: RecordDict,
    *,
    header: dict[str, Any] | None = None,
    payloads: dict[str, Any] | None = None,
) -> RecordDict:
    head = dict(content[COMPRESSION])  # type: ignore[arg-type]
    head.update(header or {})
    arrays = dict(content[COMPRESSED].items())  # type: ignore[union-attr]
    for key, value in (payloads or {}).items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    return RecordDict(
        {
            COMPRESSED: ArrayRecord(arrays),
            COMPRESSION: ConfigRecord(head),
            METRICS: content[METRICS],
        }
    )


RECEIVED = {
    "w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "b": np.ones(5, np.float32),
}


def zstd_bomb() -> RecordDict:
    """A frame of 64 MiB of zeros where the header announces 12 float32 values."""
    frame = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    return tampered(
        honest_reply(RECEIVED, "zstd"), payloads={"0": np.frombuffer(frame, dtype=np.uint8)}
    )


def zstd_bomb_without_size() -> RecordDict:
    compressor = zstandard.ZstdCompressor(level=1, write_content_size=False)
    frame = compressor.compress(bytes(64 << 20))
    return tampered(
        honest_reply(RECEIVED, "zstd"), payloads={"0": np.frombuffer(frame, dtype=np.uint8)}
    )


def zstd_trailing_frame() -> RecordDict:
    honest = honest_reply(RECEIVED, "zstd")
    frame = honest[COMPRESSED]["0"].numpy()  # type: ignore[index]
    extra = zstandard.ZstdCompressor().compress(bytes(1 << 20))
    joined = np.concatenate([frame, np.frombuffer(extra, dtype=np.uint8)])
    return tampered(honest, payloads={"0": joined})


def topk_reply(indices: list[int], values: list[float]) -> RecordDict:
    honest = honest_reply(RECEIVED, "topk")
    return tampered(
        honest,
        payloads={
            "0.indices": np.array(indices, dtype=np.uint32),
            "0.values": np.array(values, dtype=np.float32),
        },
    )


MALFORMED: dict[str, tuple[Callable[[], RecordDict], str]] = {
    "unknown method": (
        lambda: tampered(honest_reply(RECEIVED), header={"encodings": ["lzma", "int8"]}),
        "unknown compression method 'lzma'",
    ),
    "wrong version": (
        lambda: tampered(honest_reply(RECEIVED), header={"version": 9}),
        "version 9",
    ),
    "short codes": (
        lambda: tampered(honest_reply(RECEIVED), payloads={"0": np.zeros(5, np.uint8)}),
        "expected 12 values of uint8",
    ),
    "codes of another dtype": (
        lambda: tampered(honest_reply(RECEIVED), payloads={"0": np.zeros(12, np.int16)}),
        "expected 12 values of uint8",
    ),
    "missing payload": (
        lambda: tampered(honest_reply(RECEIVED), payloads={"1": None}),
        "do not match the header",
    ),
    "extra payload": (
        lambda: tampered(honest_reply(RECEIVED), payloads={"9": np.zeros(1, np.uint8)}),
        "do not match the header",
    ),
    "shape that lies": (
        lambda: tampered(honest_reply(RECEIVED), header={"dims": [4, 3, 5]}),
        "update to a model this node did not send",
    ),
    "name of no array sent": (
        lambda: tampered(honest_reply(RECEIVED), header={"names": ["w", "other"]}),
        "update to a model this node did not send",
    ),
    "lists of different lengths": (
        lambda: tampered(honest_reply(RECEIVED), header={"scales": [0.1]}),
        "'scales': 1 entries for 2",
    ),
    "absurd count": (
        lambda: tampered(
            honest_reply(RECEIVED), header={"names": [f"a{i}" for i in range(200_000)]}
        ),
        "200000 arrays",
    ),
    "absurd rank": (
        lambda: tampered(honest_reply(RECEIVED), header={"ranks": [40, 1], "dims": [1] * 41}),
        "ranks and dims",
    ),
    "dims of the wrong type": (
        lambda: tampered(honest_reply(RECEIVED), header={"dims": ["3", "4", "5"]}),
        "'dims': expected int items",
    ),
    "infinite scale": (
        lambda: tampered(honest_reply(RECEIVED), header={"scales": [float("inf"), 0.1]}),
        "not usable",
    ),
    "int8 on integers": (
        lambda: tampered(honest_reply(RECEIVED), header={"dtypes": ["int32", "float32"]}),
        "int8 compresses floats",
    ),
    "topk index out of range": (
        lambda: topk_reply([0, 12], [1.0, 1.0]),
        "positions must increase and stay below 12",
    ),
    "topk repeated index": (lambda: topk_reply([3, 3], [1.0, 1.0]), "positions must increase"),
    "topk more values than positions": (
        lambda: topk_reply([1, 2], [1.0, 1.0, 1.0]),
        "expected 2 values of float32",
    ),
    "topk more positions than values": (
        lambda: topk_reply(list(range(13)), [1.0] * 13),
        "13 positions for an array of 12",
    ),
    "topk non-finite value": (lambda: topk_reply([1, 2], [1.0, float("nan")]), "not all finite"),
    "zstd bomb": (zstd_bomb, "the frame announces 67108864 bytes; the array's header 48"),
    "zstd bomb without a size": (zstd_bomb_without_size, "announces -1 bytes"),
    "zstd with a trailing frame": (zstd_trailing_frame, "holds more bytes"),
    "zstd garbage": (
        lambda: tampered(
            honest_reply(RECEIVED, "zstd"), payloads={"0": np.arange(40, dtype=np.uint8)}
        ),
        "not a Zstandard frame",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_compressed_reply_fails_for_its_sender_only(case: str) -> None:
    make, reason = MALFORMED[case]
    server, comm, replies = server_with(CompressionMod("int8"))
    content = RecordDict({ARRAYS: ArrayRecord(RECEIVED), CONFIG: ConfigRecord({})})
    for node_id in (1, 2):
        server.request(Message(content, node_id, "train"), replies.append)
    bad = comm.sent[0].create_reply(make())
    mark_sent(bad, run_id=1, message_id="bad", src_node_id=1)
    good = comm.sent[1].create_reply(honest_reply(RECEIVED))
    mark_sent(good, run_id=1, message_id="good", src_node_id=2)
    server.deliver(bad)
    server.deliver(good)
    refused, accepted = replies
    assert refused.has_error()
    assert refused.sender == 1
    assert refused.error.code == ErrorCode.DECODE_ERROR
    assert reason in (refused.error.reason or ""), refused.error.reason
    rebuilt = accepted.content[ARRAYS].to_numpy_dict()  # type: ignore[union-attr]
    np.testing.assert_allclose(rebuilt["w"], RECEIVED["w"] + 0.1, atol=0.01)


def test_a_compressed_request_too_large_to_decode_is_refused_by_the_client() -> None:
    packed = compress(ArrayRecord({"w": np.zeros(1000, np.float32)}), build_codec("zstd"), rng())
    content = RecordDict({COMPRESSED: packed.arrays, COMPRESSION: packed.header})
    with pytest.raises(DecodeError, match="more than 999 values"):
        decompress_content(content, max_elements=999)
    assert decompress_content(content, max_elements=1000)[ARRAYS]["w"].shape == (1000,)  # type: ignore[index]


def small_federation(mods: Callable[[int], list[Mod]]) -> tuple[Server, list[Client]]:
    """Five clients learning a linear rule, each with ``mods(node_id)``, and a server with
    ``mods(0)``."""
    features = rng(0).normal(size=(300, 8)).astype(np.float32)
    labels = (features[:, 0] > 0).astype(np.int64)
    net = SoftmaxRegression(8, 2)
    clients = []
    for node_id in range(1, 6):
        part = slice(60 * (node_id - 1), 60 * node_id)
        trainer = NumpyTrainer(net, features[part], labels[part], lr=0.5, seed=node_id)
        clients.append(Client(trainer, node_id).use(*mods(node_id)))
    server = Server(FedAvg(), net.init(seed=0), num_rounds=3, clients_per_round=5, min_replies=4)
    return server.use(*mods(0)), clients


class Corrupt(Mod):
    """Outermost on an attacking client: replaces its compressed reply's codes with garbage."""

    def __call__(
        self, message: Message, context: MessageContext, call_next: CallNext
    ) -> Message | None:
        reply = call_next(message, context)
        assert isinstance(reply, Message)
        payloads = dict(reply.content[COMPRESSED].items())  # type: ignore[union-attr]
        payloads["0"] = np.zeros(3, np.uint8)
        content = RecordDict(dict(reply.content))
        content[COMPRESSED] = ArrayRecord(payloads)
        return Message.from_metadata(reply.metadata, content=content)


def test_a_federation_goes_on_when_one_client_sends_malformed_compressed_updates() -> None:
    def mods(node_id: int) -> list[Mod]:
        compression = CompressionMod("int8", seed=node_id)
        return [Corrupt(), compression] if node_id == 3 else [compression]

    server, clients = small_federation(mods)
    simulate(server, clients, check_serialization=True)
    assert server.finished, server.failure
    assert [record.clients_failed for record in server.history] == [1, 1, 1]
    assert [record.clients_replied for record in server.history] == [4, 4, 4]


def test_compression_works_on_every_runtime(federation: RunFederation) -> None:
    plain_server, plain_clients = small_federation(lambda node_id: [])
    simulate(plain_server, plain_clients)
    server, clients = small_federation(
        lambda node_id: [CompressionMod("zstd", direction="both", seed=node_id)]
    )
    federation(server, clients)
    assert server.finished, server.failure
    assert all(record.clients_failed == 0 for record in server.history)
    # lossless both ways: the same model as without compression
    assert server.arrays == plain_server.arrays


def test_lossy_compression_gives_the_simulated_model_on_every_runtime(
    federation: RunFederation,
) -> None:
    def int8_both_ways(node_id: int) -> list[object]:
        return [CompressionMod("int8", direction="both", seed=node_id)]

    simulated, simulated_clients = small_federation(int8_both_ways)
    simulate(simulated, simulated_clients)
    server, clients = small_federation(int8_both_ways)
    federation(server, clients)
    assert server.finished, server.failure
    assert all(record.clients_failed == 0 for record in server.history)
    # the same quantised updates (seeded rounding); summed in arrival order: float64 rounding
    expected = simulated.arrays.to_numpy_dict()
    for name, values in server.arrays.to_numpy_dict().items():
        np.testing.assert_allclose(values, expected[name], rtol=0, atol=1e-6)


# -- configured runs ------------------------------------------------------------------------------
DIGITS = [
    "data.dataset=digits",
    "federation.num_clients=20",
    "federation.clients_per_round=10",
    "federation.num_rounds=12",
    "federation.evaluate_every=0",
    "trainer.epochs=1",
]


def configured_run(*options: str) -> tuple[float, int, int]:
    """Final test accuracy, bytes up and bytes down of a configured run on digits."""
    federation = build_federation(load_config(None, [*DIGITS, *options]))
    result = federation.simulation.run()
    server = federation.server
    assert server.finished, server.failure
    assert all(record.clients_failed == 0 for record in server.history)
    accuracy = server.history[-1].test_accuracy
    assert accuracy is not None
    return accuracy, result.stats.bytes_up, result.stats.bytes_down


@pytest.fixture(scope="module")
def uncompressed() -> tuple[float, int, int]:
    return configured_run()


@pytest.mark.parametrize(
    ("options", "margin", "share"),
    [
        (["compression.method=int8"], 0.02, 0.5),  # observed: the same accuracy to 4 digits
        (["compression.method=int8", "compression.direction=both"], 0.02, 0.5),
        (["compression.method=zstd"], 0.0, 0.9),  # lossless: the same model, bit for bit
        (["compression.method=zstd", "compression.direction=both"], 0.0, 0.99),  # weights: -3%
        (["compression.method=int4"], 0.03, 0.4),  # observed: within 0.003
        (["compression.method=int4", "compression.direction=both"], 0.04, 0.4),  # 0.014
        # observed: 0.03 to 0.08 below in 12 rounds; the default 1% needs many more rounds
        (["compression.method=topk", "compression.topk_ratio=0.05"], 0.1, 0.4),
    ],
)
def test_each_method_learns_digits_close_to_the_uncompressed_run(
    uncompressed: tuple[float, int, int], options: list[str], margin: float, share: float
) -> None:
    accuracy, up, down = configured_run(*options)
    baseline, baseline_up, baseline_down = uncompressed
    assert abs(accuracy - baseline) <= margin, (accuracy, baseline)
    assert accuracy > 0.7
    # bytes counted as the runtime encodes the messages: the compressed payloads
    assert up < share * baseline_up, up / baseline_up
    if "compression.direction=both" in options:
        assert down < share * baseline_down, down / baseline_down
    else:
        assert down == baseline_down


def test_int8_sends_about_a_quarter_of_the_bytes_of_float32() -> None:
    hidden = ["model.name=mlp", "model.hidden=128", "federation.num_rounds=2"]
    _, baseline_up, baseline_down = configured_run(*hidden)
    _, up, down = configured_run(*hidden, "compression.method=int8", "compression.direction=both")
    # 9,610 parameters: 38 kB of float32 against 9.6 kB of codes, plus the same metadata
    assert 3.5 < baseline_up / up < 4.0
    assert 3.5 < baseline_down / down < 4.0


def test_a_configuration_installs_compression_outermost_on_every_node() -> None:
    config = load_config(
        None, ["compression.method=int8", "strategy.name=fedprox", "federation.server_mods=log"]
    )
    assert mod_names(config, "client") == ("compression", "fedprox")
    assert mod_names(config, "server") == ("compression", "log")
    assert mod_names(load_config(None, []), "server") == ()
    federation = build_federation(load_config(None, [*DIGITS, "compression.method=topk"]))
    client = federation.client_fn(1)
    (mod,) = client.mods
    assert isinstance(mod, CompressionMod)
    assert isinstance(mod.codec, TopK)
    assert mod.seed is not None
    assert mod.codec.ratio == 0.01


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["privacy.secure_aggregation=true"], "cannot compress the masked updates"),
        (["privacy.mode=client_clip"], 'which the server of privacy.mode = "client_clip"'),
        (["compression.direction=both", "compression.method=topk"], "compresses updates only"),
    ],
)
def test_combinations_compression_cannot_honour_are_refused_before_the_run(
    options: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_federation(load_config(None, [*DIGITS, "compression.method=int8", *options]))


def test_compression_with_local_differential_privacy_and_nan_attackers_runs() -> None:
    federation = build_federation(
        load_config(
            None,
            [
                *DIGITS,
                "federation.num_rounds=3",
                "compression.method=int4",
                "privacy.mode=local",
                "privacy.noise_multiplier=0.01",
                "attack.kind=nan",
                "attack.fraction=0.1",
            ],
        )
    )
    federation.simulation.run()
    server = federation.server
    assert server.finished, server.failure
    # the two attackers' NaN updates cannot be quantised: their requests fail, the rest count
    assert sum(record.clients_failed for record in server.history) > 0
    assert all(np.isfinite(v).all() for v in server.arrays.to_numpy_dict().values())


@pytest.mark.slow
def test_error_feedback_travels_with_clients_answered_in_worker_processes() -> None:
    options = [
        *DIGITS,
        "federation.num_rounds=4",
        "compression.method=topk",
        "compression.topk_ratio=0.05",
    ]
    models, offloaded = [], []
    for workers in (1, 2):
        federation = build_federation(
            load_config(None, [*options, f"simulation.workers={workers}"])
        )
        result = federation.simulation.run()
        models.append(federation.server.arrays.to_numpy_dict())
        offloaded.append(result.stats.offloaded)
    assert offloaded[0] == 0 < offloaded[1]
    # a residual lost between processes would change the model
    assert all(np.array_equal(models[0][name], models[1][name]) for name in models[0])
