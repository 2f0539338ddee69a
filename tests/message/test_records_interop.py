"""Records next to plain Python and Flower habits: dict equality, NumPy lists, torch state_dicts,
``count_bytes`` and the docstring examples."""

from __future__ import annotations

import doctest
import sys
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

import fedbus.message.array
import fedbus.message.message
import fedbus.message.records
from fedbus.errors import InvalidTypeError, MissingDependencyError
from fedbus.message import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MetricRecord,
    PackedNumbers,
    PackedStrings,
    RecordDict,
    decode_message,
    encode_message,
    use_clock,
)

# --- Equality with plain dicts -------------------------------------------------------------------


def test_metric_and_config_records_equal_a_dict_with_the_same_items() -> None:
    assert MetricRecord({"a": 1}) == {"a": 1}
    assert {"a": 1} == MetricRecord({"a": 1})  # noqa: SIM300  # the dict defers to the record
    assert MetricRecord({"a": 1, "b": [0.5]}) == {"b": [0.5], "a": 1}  # any order, as dicts
    assert ConfigRecord({"lr": 0.1, "opt": "sgd", "raw": b"\x00", "on": True}) == {
        "on": True,
        "raw": b"\x00",
        "opt": "sgd",
        "lr": 0.1,
    }
    assert MetricRecord() == {}
    assert ConfigRecord() == OrderedDict()  # a dict subclass is a dict


def test_records_differ_from_a_dict_with_other_items() -> None:
    assert MetricRecord({"a": 1}) != {"a": 2}
    assert MetricRecord({"a": 1}) != {"b": 1}
    assert MetricRecord({"a": 1}) != {"a": 1, "b": 2}
    assert ConfigRecord({"opt": "sgd"}) != {"opt": b"sgd"}
    assert {"a": 2} != MetricRecord({"a": 1})  # noqa: SIM300  # the reflected comparison


def test_dict_equality_compares_values_as_the_record_stores_them() -> None:
    stored = MetricRecord({"xs": (1, 2), "loss": np.float32(0.5)})
    assert stored == {"xs": [1, 2], "loss": 0.5}  # a tuple is held as a list
    assert stored != {"xs": (1, 2), "loss": 0.5}


def test_dict_values_that_are_numpy_compare_as_the_record_would_hold_them() -> None:
    assert MetricRecord({"loss": 0.5}) == {"loss": np.float64(0.5)}
    assert MetricRecord({"n": 3}) == {"n": np.int64(3)}
    assert MetricRecord({"xs": [1.0]}) != {"xs": np.float64(1.0)}  # not broadcast
    # an array is no record value: unequal, where a dict of lists would raise ValueError
    assert MetricRecord({"xs": [1.0, 2.0]}) != {"xs": np.array([1.0, 2.0])}
    assert ConfigRecord({"flags": [True]}) != {"flags": np.array([True])}
    assert RecordDict({"m": ArrayRecord([np.zeros(2)])}) != {"m": np.zeros(2)}


def test_a_decoded_record_with_packed_lists_equals_a_dict_of_lists() -> None:
    losses = [float(i) for i in range(100)]
    names = [f"n{i}" for i in range(100)]
    content = RecordDict(
        {"m": MetricRecord({"losses": losses}), "c": ConfigRecord({"names": names})}
    )
    with use_clock(lambda: 0.0):
        decoded = decode_message(encode_message(Message(content, 1, "t"))).content
    assert isinstance(decoded["m"]["losses"], PackedNumbers)
    assert isinstance(decoded["c"]["names"], PackedStrings)
    assert decoded["m"] == {"losses": losses}
    assert decoded["c"] == {"names": names}


def test_record_dict_equals_a_dict_of_records_or_of_dicts() -> None:
    weights = np.arange(3, dtype=np.float32)
    content = RecordDict(
        {"model": ArrayRecord({"w": weights}), "metrics": MetricRecord({"loss": 0.5})}
    )
    assert content == {"model": ArrayRecord({"w": weights}), "metrics": MetricRecord({"loss": 0.5})}
    assert content == {"metrics": {"loss": 0.5}, "model": {"w": weights.copy()}}
    assert {"metrics": {"loss": 0.5}, "model": {"w": weights}} == content
    assert content != {"metrics": {"loss": 0.25}, "model": {"w": weights}}
    assert content != {"metrics": {"loss": 0.5}}
    assert RecordDict() == {}


def test_array_record_equals_a_dict_of_arrays_with_the_same_dtype_shape_and_bytes() -> None:
    record = ArrayRecord({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2)})
    assert record == {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2)}
    assert {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(2)} == record
    assert record == {"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3)), "b": np.zeros(2)}
    assert record != {"w": np.arange(6, dtype=np.float64).reshape(2, 3), "b": np.zeros(2)}
    assert record != {"w": np.arange(6, dtype=np.float32), "b": np.zeros(2)}  # shape
    assert record != {"w": np.arange(1, 7, dtype=np.float32).reshape(2, 3), "b": np.zeros(2)}
    assert record != {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}  # a key missing


def test_array_record_dict_equality_depends_on_order_like_record_equality() -> None:
    a, b = np.zeros(1), np.ones(1)
    assert ArrayRecord({"a": a, "b": b}) == {"a": a, "b": b}
    assert ArrayRecord({"a": a, "b": b}) != {"b": b, "a": a}


def test_array_record_dict_equality_is_by_bytes_not_by_value() -> None:
    nan = np.array([np.nan, 1.0])
    assert ArrayRecord({"x": nan}) == {"x": nan.copy()}  # the same NaN bits
    assert ArrayRecord({"x": np.array([0.0])}) != {"x": np.array([-0.0])}
    big_endian = np.arange(3, dtype=">f4")  # held little-endian: the same float32 values
    assert ArrayRecord({"x": np.arange(3, dtype=np.float32)}) == {"x": big_endian}


def test_array_record_differs_from_a_dict_whose_values_no_array_holds() -> None:
    record = ArrayRecord({"x": np.array([1.0, 2.0])})
    assert record != {"x": [1.0, 2.0]}
    assert record != {"x": np.array([1.0, 2.0], dtype=np.complex128)}
    assert record != {"x": 1.0}
    assert record != {"x": None}


@pytest.mark.parametrize(
    "items",
    [
        {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.int64)},
        {"flag": np.array(True), "empty": np.zeros((0, 3))},
        {},
    ],
)
def test_array_record_equals_the_dict_it_was_built_from(items: dict[str, Any]) -> None:
    assert ArrayRecord(items) == items


def test_array_record_equals_a_dict_of_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    state = torch.nn.Linear(3, 2).state_dict()
    record = ArrayRecord(state)
    assert record == state
    assert record == dict(state)
    changed = {name: tensor + 1 for name, tensor in state.items()}
    assert record != changed


@pytest.mark.parametrize(
    "record",
    [MetricRecord({"a": 1}), ConfigRecord({"a": 1}), ArrayRecord(), RecordDict()],
    ids=lambda record: type(record).__name__,
)
@pytest.mark.parametrize(
    "other",
    [5, "a", None, [("a", 1)], ("a", 1), {"a", "b"}, b"a"],
    ids=["int", "str", "None", "list", "tuple", "set", "bytes"],  # a set's repr varies by run
)
def test_equality_with_unrelated_types_is_not_implemented(record: Any, other: object) -> None:
    assert record.__eq__(other) is NotImplemented
    assert record != other


def test_a_mapping_that_is_not_a_dict_decides_equality_itself() -> None:
    """A record returns NotImplemented; a read-only proxy of a dict compares as its dict does."""
    record, proxy = MetricRecord({"a": 1}), MappingProxyType({"a": 1})
    assert record.__eq__(proxy) is NotImplemented
    assert record == proxy
    assert record != MappingProxyType({"a": 2})


def test_records_of_different_kinds_stay_unequal() -> None:
    assert MetricRecord({"a": 1}).__eq__(ConfigRecord({"a": 1})) is NotImplemented
    assert MetricRecord({"a": 1}) != ConfigRecord({"a": 1})
    assert ArrayRecord() != RecordDict()
    assert MetricRecord() != ConfigRecord()


@pytest.mark.parametrize(
    "record", [MetricRecord(), ConfigRecord(), ArrayRecord(), RecordDict()], ids=type
)
def test_records_equal_to_dicts_are_still_not_hashable(record: object) -> None:
    assert record == {}
    with pytest.raises(TypeError, match="unhashable"):
        hash(record)


# --- ArrayRecord.from_numpy_ndarrays / to_numpy_ndarrays -----------------------------------------


def test_from_numpy_ndarrays_keys_the_arrays_by_position() -> None:
    arrays = [np.zeros((2, 3), np.float32), np.arange(4), np.array(7.5)]
    record = ArrayRecord.from_numpy_ndarrays(arrays)
    assert type(record) is ArrayRecord
    assert list(record) == ["0", "1", "2"]
    assert [(a.dtype, a.shape) for a in record.values()] == [
        ("float32", (2, 3)),
        ("int64", (4,)),
        ("float64", ()),
    ]
    assert record == ArrayRecord(arrays)
    assert record == {"0": arrays[0], "1": arrays[1], "2": arrays[2]}


def test_from_numpy_ndarrays_and_back_share_memory_in_order() -> None:
    arrays = [np.arange(3, dtype=np.float32), np.ones((2, 2))]
    back = ArrayRecord.from_numpy_ndarrays(arrays).to_numpy_ndarrays()
    assert len(back) == 2
    assert all(np.shares_memory(a, b) for a, b in zip(arrays, back, strict=True))


def test_from_numpy_ndarrays_takes_any_iterable_and_nothing() -> None:
    assert list(ArrayRecord.from_numpy_ndarrays(np.ones(1) * i for i in range(3))) == [
        "0",
        "1",
        "2",
    ]
    assert list(ArrayRecord.from_numpy_ndarrays((np.ones(1), np.zeros(1)))) == ["0", "1"]
    assert ArrayRecord.from_numpy_ndarrays([]) == ArrayRecord()


def test_from_numpy_ndarrays_copies_a_non_contiguous_array_once() -> None:
    strided = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]
    record = ArrayRecord.from_numpy_ndarrays([strided])
    assert record.to_numpy_ndarrays()[0].tolist() == strided.tolist()
    assert not np.shares_memory(record["0"].numpy(), strided)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [np.ones(1), [1.0, 2.0]],
            "ArrayRecord.from_numpy_ndarrays: item 1: expected numpy.ndarray, got list",
        ),
        (
            [None],
            "ArrayRecord.from_numpy_ndarrays: item 0: expected numpy.ndarray, got NoneType",
        ),
        (
            [np.ones(1), np.ones(1), Array(np.ones(1))],
            "ArrayRecord.from_numpy_ndarrays: item 2: expected numpy.ndarray, got Array",
        ),
        (
            [np.ones(1), np.ones(1, dtype=np.complex64)],
            "ArrayRecord.from_numpy_ndarrays: item 1: dtype complex64 is not supported by fedbus "
            "records",
        ),
        (
            np.ones(3),
            "ArrayRecord.from_numpy_ndarrays: expected a list of numpy.ndarray, got a single "
            "array; wrap it: [array]",
        ),
        (
            {"w": np.ones(1)},
            "ArrayRecord.from_numpy_ndarrays: expected a list of numpy.ndarray, got dict; for "
            "named arrays use ArrayRecord(dict)",
        ),
        (5, "ArrayRecord.from_numpy_ndarrays: expected a list of numpy.ndarray, got int"),
        ("ab", "ArrayRecord.from_numpy_ndarrays: expected a list of numpy.ndarray, got str"),
    ],
    ids=["list", "none", "array-object", "dtype", "single", "dict", "int", "str"],
)
def test_from_numpy_ndarrays_refuses_bad_input_naming_the_item(items: Any, message: str) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        ArrayRecord.from_numpy_ndarrays(items)
    assert isinstance(caught.value, TypeError)
    assert str(caught.value).startswith(message)


def test_from_numpy_ndarrays_refuses_a_torch_tensor_naming_its_index() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(InvalidTypeError, match=r"item 0: expected numpy\.ndarray, got Tensor"):
        ArrayRecord.from_numpy_ndarrays([torch.ones(2)])


def test_to_numpy_ndarrays_follows_key_order() -> None:
    record = ArrayRecord({"z": np.zeros(1), "a": np.ones(2)})
    assert [a.tolist() for a in record.to_numpy_ndarrays()] == [[0.0], [1.0, 1.0]]


# --- ArrayRecord.from_torch_state_dict / to_torch_state_dict -------------------------------------


def test_from_torch_state_dict_keeps_names_order_and_values() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    state = model.state_dict()
    record = ArrayRecord.from_torch_state_dict(state)
    assert type(record) is ArrayRecord
    assert list(record) == list(state)
    assert record["1.num_batches_tracked"].dtype == "int64"
    assert record == state
    assert record["0.weight"].numpy().tolist() == state["0.weight"].tolist()


def test_from_torch_state_dict_shares_cpu_tensors_and_detaches_them() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 1)
    params = OrderedDict(model.named_parameters())  # these require grad
    assert params["weight"].requires_grad
    record = ArrayRecord.from_torch_state_dict(params)
    assert np.shares_memory(record["weight"].numpy(), model.weight.detach().numpy())
    back = record.to_torch_state_dict()
    assert not back["weight"].requires_grad
    assert back["weight"].device.type == "cpu"


def test_from_torch_state_dict_moves_accelerator_tensors_to_the_cpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = torch.nn.Linear(3, 2).cuda()
    record = ArrayRecord.from_torch_state_dict(dict(model.named_parameters()))
    assert record["weight"].numpy().tolist() == model.weight.detach().cpu().tolist()
    back = record.to_torch_state_dict()
    assert back["weight"].device.type == "cpu"
    assert not back["weight"].requires_grad


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"w": np.ones(2)},
            "ArrayRecord.from_torch_state_dict: key 'w': expected torch.Tensor, got ndarray",
        ),
        (
            {"w": [1.0]},
            "ArrayRecord.from_torch_state_dict: key 'w': expected torch.Tensor, got list",
        ),
        (
            [("w", np.ones(2))],
            "ArrayRecord.from_torch_state_dict: expected a state_dict (a mapping of names to "
            "torch.Tensor), got list",
        ),
        ({3: np.ones(2)}, "ArrayRecord.from_torch_state_dict: keys must be str, got int 3"),
    ],
    ids=["ndarray", "list", "not-a-mapping", "key"],
)
def test_from_torch_state_dict_refuses_bad_input_naming_the_key(state: Any, message: str) -> None:
    pytest.importorskip("torch")
    with pytest.raises(InvalidTypeError) as caught:
        ArrayRecord.from_torch_state_dict(state)
    assert str(caught.value) == message


def test_from_torch_state_dict_names_the_key_of_an_unsupported_dtype() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(InvalidTypeError) as caught:
        ArrayRecord.from_torch_state_dict({"z": torch.ones(2, dtype=torch.complex64)})
    assert str(caught.value).startswith(
        "ArrayRecord.from_torch_state_dict: key 'z': dtype torch.complex64 is not supported"
    )


def test_to_torch_state_dict_gives_views_of_writable_arrays() -> None:
    torch = pytest.importorskip("torch")
    weights = np.arange(4, dtype=np.float32)
    state = ArrayRecord({"w": weights}).to_torch_state_dict()
    assert type(state) is OrderedDict
    assert isinstance(state["w"], torch.Tensor)
    state["w"][0] = 42.0
    assert weights[0] == 42.0


def test_to_torch_state_dict_copies_read_only_decoded_arrays() -> None:
    torch = pytest.importorskip("torch")
    content = RecordDict({"m": ArrayRecord({"w": np.arange(4, dtype=np.float32)})})
    with use_clock(lambda: 0.0):
        decoded = decode_message(encode_message(Message(content, 1, "t"))).content["m"]
    assert not decoded["w"].numpy().flags.writeable
    state = decoded.to_torch_state_dict()  # no warning about a read-only array
    state["w"][0] = 42.0
    assert decoded["w"].numpy()[0] == 0.0
    assert torch.equal(state["w"], torch.tensor([42.0, 1.0, 2.0, 3.0]))


def test_torch_state_dict_round_trips_into_a_model() -> None:
    torch = pytest.importorskip("torch")
    source = torch.nn.Linear(3, 2)
    target = torch.nn.Linear(3, 2)
    target.load_state_dict(
        ArrayRecord.from_torch_state_dict(source.state_dict()).to_torch_state_dict()
    )
    assert all(
        torch.equal(a, b) for a, b in zip(source.parameters(), target.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: ArrayRecord.from_torch_state_dict({}), "ArrayRecord.from_torch_state_dict"),
        (lambda: ArrayRecord().to_torch_state_dict(), "ArrayRecord.to_torch_state_dict"),
    ],
    ids=["from", "to"],
)
def test_torch_methods_without_torch_say_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, call: Any, name: str
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(MissingDependencyError) as caught:
        call()
    assert isinstance(caught.value, ImportError)
    assert str(caught.value).startswith(f"{name} needs PyTorch: pip install 'fedbus[torch]'")


# --- count_bytes ---------------------------------------------------------------------------------


def test_metric_record_count_bytes_is_8_per_number_plus_the_keys() -> None:
    assert MetricRecord({"loss": 0.5, "n": 64}).count_bytes() == (4 + 8) + (1 + 8)
    assert MetricRecord({"xs": [1.0, 2.0, 3.0], "e": []}).count_bytes() == (2 + 24) + (1 + 0)
    assert MetricRecord().count_bytes() == 0


def test_config_record_count_bytes_by_value_type() -> None:
    record = ConfigRecord(
        {
            "lr": 0.1,  # 2 + 8
            "epochs": 3,  # 6 + 8
            "on": True,  # 2 + 1
            "opt": "adam",  # 3 + 4
            "raw": b"\x00\x01\x02",  # 3 + 3
            "flags": [True, False],  # 5 + 2
            "names": ["a", "bcd"],  # 5 + 4
            "blobs": [b"", b"xy"],  # 5 + 2
            "rates": [0.1, 0.2],  # 5 + 16
        }
    )
    assert record.count_bytes() == 10 + 14 + 3 + 7 + 6 + 7 + 9 + 7 + 21


def test_count_bytes_counts_utf8_bytes_of_keys_and_strings() -> None:
    assert ConfigRecord({"é": "日本"}).count_bytes() == 2 + 6
    assert MetricRecord({"λ": 1.0}).count_bytes() == 2 + 8
    assert ArrayRecord({"ü": np.zeros(1, np.uint8)}).count_bytes() == 2 + 1


def test_count_bytes_of_packed_lists_equals_that_of_lists() -> None:
    numbers = np.arange(70)
    packed = ConfigRecord(
        {
            "ints": PackedNumbers(numbers),
            "bools": PackedNumbers(numbers % 2 == 0),
            "names": PackedStrings(["é", "ab", ""]),
            "blobs": PackedStrings([b"\x00", b"xyz"], item_type=bytes),
        }
    )
    plain = ConfigRecord(
        {
            "ints": numbers.tolist(),
            "bools": (numbers % 2 == 0).tolist(),
            "names": ["é", "ab", ""],
            "blobs": [b"\x00", b"xyz"],
        }
    )
    expected = (4 + 8 * 70) + (5 + 70) + (5 + 4) + (5 + 4)
    assert plain.count_bytes() == expected
    assert packed.count_bytes() == expected


def test_record_dict_count_bytes_sums_its_records_and_their_names() -> None:
    arrays = ArrayRecord([np.zeros((2, 3), np.float32)])  # 1 + 24
    metrics = MetricRecord({"x": 1.0})  # 1 + 8
    config = ConfigRecord({"opt": "sgd"})  # 3 + 3
    content = RecordDict({"a": arrays, "m": metrics, "cfg": config, "empty": ArrayRecord()})
    assert content.count_bytes() == (1 + 25) + (1 + 9) + (3 + 6) + (5 + 0)
    assert RecordDict().count_bytes() == 0


def test_count_bytes_is_the_same_after_a_trip_through_the_codec() -> None:
    content = RecordDict(
        {
            "model": ArrayRecord({"w": np.ones((8, 8), np.float32)}),
            "metrics": MetricRecord({"losses": [0.5] * 100, "n": 3}),
            "config": ConfigRecord({"names": [f"c{i}" for i in range(100)], "on": False}),
        }
    )
    with use_clock(lambda: 0.0):
        decoded = decode_message(encode_message(Message(content, 1, "t"))).content
    assert decoded.count_bytes() == content.count_bytes()
    assert [r.count_bytes() for r in decoded.values()] == [
        r.count_bytes() for r in content.values()
    ]


# --- Docstring examples --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [fedbus.message.records, fedbus.message.message, fedbus.message.array],
    ids=lambda module: module.__name__,
)
def test_docstring_examples_run(module: Any) -> None:
    pytest.importorskip("torch")  # ArrayRecord.from_torch_state_dict's example builds a model
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
