"""RecordDict, ArrayRecord, MetricRecord and ConfigRecord: typing, zero-copy, copies, equality."""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError, InvalidTypeError
from fedbus.message import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)


# --- MetricRecord --------------------------------------------------------------------------------


def test_metric_record_holds_ints_floats_and_homogeneous_lists() -> None:
    record = MetricRecord({"loss": 0.25, "n": 64, "losses": [0.5, 0.25], "counts": [1, 2, 3]})
    assert dict(record) == {"loss": 0.25, "n": 64, "losses": [0.5, 0.25], "counts": [1, 2, 3]}
    assert MetricRecord({"empty": []})["empty"] == []


@pytest.mark.parametrize(
    ("value", "given"),
    [
        ("0.9", "str"),
        (True, "bool"),
        (b"x", "bytes"),
        (None, "NoneType"),
        ({"a": 1}, "dict"),
        (1 + 2j, "complex"),
        (np.array([1.0]), "ndarray"),
        (np.bool_(True), "bool"),
    ],
)
def test_metric_record_refuses_other_types_naming_key_expected_and_given(
    value: object, given: str
) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        MetricRecord({"acc": value})
    assert isinstance(caught.value, TypeError)
    assert str(caught.value) == (
        f"MetricRecord key 'acc': expected int | float or a list of one of them, got {given}"
    )


def test_metric_record_refuses_a_list_holding_another_type() -> None:
    with pytest.raises(InvalidTypeError) as caught:
        MetricRecord({"acc": [0.5, "0.7"]})
    assert str(caught.value) == (
        "MetricRecord key 'acc': expected int | float or a list of one of them, "
        "got a list holding str"
    )
    with pytest.raises(InvalidTypeError, match="got a list holding bool"):
        MetricRecord({"flags": [True, False]})
    with pytest.raises(InvalidTypeError, match="got a list holding list"):
        MetricRecord({"nested": [[1.0]]})


def test_metric_record_refuses_a_mixed_int_and_float_list() -> None:
    with pytest.raises(InvalidTypeError) as caught:
        MetricRecord({"xs": [1, 2.5]})
    assert str(caught.value) == (
        "MetricRecord key 'xs': a list must hold values of one type, got a mix of float, int"
    )


def test_setting_a_value_is_checked_like_the_constructor() -> None:
    record = MetricRecord()
    record["loss"] = 0.5
    with pytest.raises(InvalidTypeError, match="MetricRecord key 'acc'"):
        record["acc"] = "high"
    with pytest.raises(InvalidTypeError, match="MetricRecord key 'x'"):
        record.update({"x": None})
    with pytest.raises(InvalidTypeError, match="MetricRecord key 'y'"):
        record.setdefault("y", "no")
    assert dict(record) == {"loss": 0.5}


# --- ConfigRecord --------------------------------------------------------------------------------


def test_config_record_holds_scalars_and_homogeneous_lists() -> None:
    values = {
        "lr": 0.1,
        "epochs": 2,
        "optimizer": "sgd",
        "seed_bytes": b"\x00\x01",
        "shuffle": True,
        "layers": [64, 32],
        "names": ["a", "b"],
        "masks": [b"\x01", b"\x02"],
        "flags": [True, False],
        "rates": [0.1, 0.01],
    }
    assert dict(ConfigRecord(values)) == values
    assert type(ConfigRecord({"shuffle": True})["shuffle"]) is bool


@pytest.mark.parametrize(
    ("value", "given"),
    [({"a": 1}, "dict"), (None, "NoneType"), (bytearray(b"x"), "bytearray"), ({1}, "set")],
)
def test_config_record_refuses_other_types_naming_key_expected_and_given(
    value: object, given: str
) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        ConfigRecord({"opt": value})
    assert str(caught.value) == (
        "ConfigRecord key 'opt': expected bool | int | float | str | bytes or a list of one of "
        f"them, got {given}"
    )


@pytest.mark.parametrize(
    ("values", "mix"),
    [
        ([True, 1], "bool, int"),
        ([1, True], "bool, int"),
        (["a", b"a"], "bytes, str"),
        ([1, 1.0], "float, int"),
        ([False, 0.0], "bool, float"),
    ],
)
def test_config_record_lists_hold_one_type_and_bool_is_not_int(
    values: list[object], mix: str
) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        ConfigRecord({"flags": values})
    assert str(caught.value) == (
        f"ConfigRecord key 'flags': a list must hold values of one type, got a mix of {mix}"
    )


def test_tuples_are_stored_as_lists() -> None:
    assert ConfigRecord({"t": (1, 2)})["t"] == [1, 2]
    assert type(MetricRecord({"t": (0.5,)})["t"]) is list


def test_stored_lists_are_not_the_callers_list() -> None:
    values = [1, 2]
    record = ConfigRecord({"v": values})
    values.append(3)
    assert record["v"] == [1, 2]


# --- Integers beyond 64 bits and NumPy scalars ---------------------------------------------------


@pytest.mark.parametrize("record_type", [MetricRecord, ConfigRecord])
def test_ints_at_the_64_bit_limits_are_accepted(record_type: type[MetricRecord]) -> None:
    record = record_type({"max": INT64_MAX, "min": INT64_MIN, "list": [INT64_MIN, INT64_MAX]})
    assert (record["max"], record["min"]) == (INT64_MAX, INT64_MIN)


@pytest.mark.parametrize("record_type", [MetricRecord, ConfigRecord])
@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1, 10**30, [1, 2**64]])
def test_ints_beyond_64_bits_are_refused(record_type: type[MetricRecord], value: object) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        record_type({"big": value})
    assert isinstance(caught.value, ValueError)
    assert f"{record_type.__name__} key 'big': int" in str(caught.value)
    assert "does not fit in 64 bits" in str(caught.value)


def test_numpy_scalars_are_stored_as_python_values() -> None:
    metrics = MetricRecord(
        {"loss": np.float32(0.5), "n": np.int64(7), "u": np.uint8(3), "xs": [np.float64(1.5)]}
    )
    assert dict(metrics) == {"loss": 0.5, "n": 7, "u": 3, "xs": [1.5]}
    assert [type(metrics[key]) for key in ("loss", "n", "u")] == [float, int, int]
    assert type(metrics["xs"][0]) is float
    config = ConfigRecord(
        {"flag": np.bool_(True), "name": np.str_("sgd"), "raw": np.bytes_(b"\x01")}
    )
    assert [type(config[key]) for key in ("flag", "name", "raw")] == [bool, str, bytes]
    assert dict(config) == {"flag": True, "name": "sgd", "raw": b"\x01"}


def test_numpy_uint64_beyond_int64_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="does not fit in 64 bits"):
        MetricRecord({"u": np.uint64(2**64 - 1)})


def test_numpy_bool_list_in_config_stays_bool() -> None:
    assert ConfigRecord({"m": list(np.array([True, False]))})["m"] == [True, False]
    with pytest.raises(InvalidTypeError, match="a mix of bool, int"):
        ConfigRecord({"m": [np.bool_(True), np.int8(1)]})


# --- Keys and construction -----------------------------------------------------------------------


@pytest.mark.parametrize("record_type", [MetricRecord, ConfigRecord, ArrayRecord, RecordDict])
def test_keys_must_be_non_empty_str(record_type: type[MetricRecord]) -> None:
    with pytest.raises(InvalidTypeError, match=r"keys must be str, got int 1"):
        record_type({1: 0.5})
    with pytest.raises(InvalidArgumentError, match="keys must be non-empty str"):
        record_type({"": 0.5})


def test_records_take_pairs_like_dict() -> None:
    assert MetricRecord([("a", 1), ("b", 2.0)]) == MetricRecord({"a": 1, "b": 2.0})
    assert ConfigRecord(iter([("x", "y")])) == ConfigRecord({"x": "y"})


@pytest.mark.parametrize("items", [5, "ab", [1, 2], [("a", 1, 2)]])
def test_records_refuse_what_is_not_a_dict_or_pairs(items: object) -> None:
    with pytest.raises(InvalidTypeError, match="MetricRecord: expected"):
        MetricRecord(items)


# --- ArrayRecord ---------------------------------------------------------------------------------


def test_array_record_from_a_list_has_keys_in_order() -> None:
    arrays = [np.zeros(2, np.float32), np.ones((2, 2), np.int64)]
    record = ArrayRecord(arrays)
    assert list(record) == ["0", "1"]
    assert [a.shape for a in record.to_numpy_ndarrays()] == [(2,), (2, 2)]


def test_array_record_from_a_generator() -> None:
    record = ArrayRecord(np.full(3, i, np.float32) for i in range(4))
    assert list(record) == ["0", "1", "2", "3"]
    assert [a[0] for a in record.to_numpy_ndarrays()] == [0.0, 1.0, 2.0, 3.0]
    assert ArrayRecord(iter([])) == ArrayRecord()


def test_array_record_from_name_array_pairs() -> None:
    weights = {"w": np.ones(2, np.float32), "b": np.zeros(1, np.float32)}
    record = ArrayRecord(weights.items())
    assert list(record) == ["w", "b"]
    assert np.shares_memory(record["w"].numpy(), weights["w"])
    assert ArrayRecord((name, value) for name, value in weights.items()) == record


def test_array_record_from_a_dict_keeps_its_order() -> None:
    record = ArrayRecord({"z": np.zeros(1), "a": np.ones(1)})
    assert list(record) == ["z", "a"]
    assert list(record.to_numpy_dict()) == ["z", "a"]


def test_array_record_refuses_a_single_array() -> None:
    with pytest.raises(InvalidTypeError, match=r"wrap it: ArrayRecord\(\[array\]\)"):
        ArrayRecord(np.zeros(3))
    with pytest.raises(InvalidTypeError, match="got a single array"):
        ArrayRecord(Array(np.zeros(3)))


@pytest.mark.parametrize(("value", "given"), [([1.0, 2.0], "list"), (3.0, "float"), ("w", "str")])
def test_array_record_refuses_non_arrays_naming_key_expected_and_given(
    value: object, given: str
) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        ArrayRecord({"w": value})
    assert isinstance(caught.value, TypeError)
    assert str(caught.value) == (
        f"ArrayRecord key 'w': expected numpy.ndarray, torch.Tensor or fedbus.Array, got {given}"
    )


def test_array_record_refuses_a_number_and_a_str() -> None:
    with pytest.raises(InvalidTypeError, match="ArrayRecord: expected a list or dict"):
        ArrayRecord(3)
    with pytest.raises(InvalidTypeError, match="ArrayRecord: expected a list or dict"):
        ArrayRecord("weights")


def test_array_record_shares_memory_with_numpy_input_both_ways() -> None:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4, dtype=np.int64)]
    record = ArrayRecord(weights)
    out = record.to_numpy_ndarrays()
    assert all(np.shares_memory(a, b) for a, b in zip(out, weights, strict=True))
    assert all(np.shares_memory(record.to_numpy_dict()[k], weights[int(k)]) for k in record)
    weights[0][0, 0] = 42.0
    assert record["0"].numpy()[0, 0] == 42.0


def test_array_record_count_bytes_counts_array_data_and_keys() -> None:
    record = ArrayRecord([np.zeros((2, 3), np.float32), np.zeros(4, np.int64), np.zeros(0)])
    assert record.count_bytes() == (24 + 1) + (32 + 1) + (0 + 1)
    assert ArrayRecord({"weight": np.zeros(3, np.float16)}).count_bytes() == 6 + 6
    assert ArrayRecord().count_bytes() == 0


def test_array_record_takes_array_values_as_they_are() -> None:
    array = Array(np.ones(3))
    record = ArrayRecord({"w": array})
    assert record["w"] is array


def test_bfloat16_has_no_numpy_form() -> None:
    torch = pytest.importorskip("torch")
    record = ArrayRecord({"w": torch.ones(2, dtype=torch.bfloat16)})
    with pytest.raises(InvalidTypeError, match="bfloat16 has no NumPy dtype"):
        record.to_numpy_ndarrays()


# --- torch ---------------------------------------------------------------------------------------


def test_array_record_from_a_state_dict_shares_memory_both_ways() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2)
    state = model.state_dict()
    record = ArrayRecord(state)
    assert list(record) == ["weight", "bias"]
    assert np.shares_memory(record["weight"].numpy(), state["weight"].numpy())
    back = record.to_torch_state_dict()
    assert isinstance(back, OrderedDict)
    assert list(back) == ["weight", "bias"]
    assert back["weight"].data_ptr() == state["weight"].data_ptr()
    assert back["bias"].data_ptr() == model.bias.data_ptr()
    with torch.no_grad():
        model.weight.fill_(0.25)
    assert record.to_numpy_dict()["weight"].tolist() == [[0.25] * 3] * 2


def test_array_record_from_parameters_that_require_grad() -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(2, 1)
    record = ArrayRecord(dict(model.named_parameters()))
    assert np.shares_memory(record["weight"].numpy(), model.weight.detach().numpy())
    fresh = torch.nn.Linear(2, 1)
    fresh.load_state_dict(record.to_torch_state_dict())
    assert torch.equal(fresh.weight, model.weight)


def test_to_torch_state_dict_loads_into_a_model() -> None:
    torch = pytest.importorskip("torch")
    record = ArrayRecord(
        {"weight": np.full((2, 3), 0.5, np.float32), "bias": np.array([1.0, -1.0], np.float32)}
    )
    model = torch.nn.Linear(3, 2)
    model.load_state_dict(record.to_torch_state_dict())
    assert model(torch.ones(1, 3)).tolist() == [[2.5, 0.5]]


def test_bfloat16_state_dict_round_trips_through_torch() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.tensor([1.5, -2.0, 0.0078125], dtype=torch.bfloat16)
    record = ArrayRecord({"w": tensor})
    assert record["w"].dtype == "bfloat16"
    assert record.count_bytes() == 6 + 1
    back = record.to_torch_state_dict()["w"]
    assert back.dtype == torch.bfloat16
    assert torch.equal(back, tensor)
    assert back.data_ptr() == tensor.data_ptr()


# --- Typed views ---------------------------------------------------------------------------------


@pytest.fixture
def mixed() -> RecordDict:
    return RecordDict(
        {
            "model": ArrayRecord([np.zeros(2)]),
            "metrics": MetricRecord({"loss": 1.0}),
            "config": ConfigRecord({"lr": 0.1}),
            "extra": ArrayRecord(),
        }
    )


def test_typed_views_show_records_of_one_kind_in_order(mixed: RecordDict) -> None:
    assert list(mixed.array_records) == ["model", "extra"]
    assert list(mixed.metric_records) == ["metrics"]
    assert list(mixed.config_records) == ["config"]
    assert len(mixed.array_records) == 2
    assert "metrics" not in mixed.array_records
    assert "model" in mixed.array_records
    assert mixed.array_records.get("metrics") is None


def test_typed_views_are_live(mixed: RecordDict) -> None:
    arrays = mixed.array_records
    mixed["more"] = ArrayRecord([np.ones(1)])
    assert list(arrays) == ["model", "extra", "more"]
    arrays["added"] = ArrayRecord()
    assert list(mixed) == ["model", "metrics", "config", "extra", "more", "added"]
    del arrays["model"]
    assert "model" not in mixed
    mixed.metric_records["m2"] = MetricRecord({"acc": 0.5})
    assert mixed["m2"] == MetricRecord({"acc": 0.5})


def test_typed_view_refuses_records_of_another_kind(mixed: RecordDict) -> None:
    with pytest.raises(InvalidTypeError) as caught:
        mixed.array_records["x"] = MetricRecord({"a": 1})
    assert str(caught.value) == "RecordDict key 'x': this view holds ArrayRecord, got MetricRecord"
    with pytest.raises(InvalidTypeError, match="this view holds ConfigRecord, got dict"):
        mixed.config_records["y"] = {"lr": 0.1}
    assert "x" not in mixed
    assert "y" not in mixed


def test_typed_view_does_not_replace_a_record_of_another_kind(mixed: RecordDict) -> None:
    with pytest.raises(InvalidArgumentError, match="'config' holds a ConfigRecord, not a"):
        mixed.array_records["config"] = ArrayRecord()
    assert isinstance(mixed["config"], ConfigRecord)


def test_typed_view_cannot_delete_a_record_of_another_kind(mixed: RecordDict) -> None:
    with pytest.raises(KeyError):
        del mixed.array_records["metrics"]
    with pytest.raises(KeyError):
        del mixed.array_records["absent"]
    assert mixed.array_records.pop("config", None) is None
    assert list(mixed) == ["model", "metrics", "config", "extra"]


def test_typed_view_reading_another_kind_is_a_key_error(mixed: RecordDict) -> None:
    with pytest.raises(KeyError):
        mixed.metric_records["config"]


def test_typed_view_clear_removes_only_its_kind(mixed: RecordDict) -> None:
    mixed.array_records.clear()
    assert list(mixed) == ["metrics", "config"]


def test_record_dict_refuses_values_that_are_not_records() -> None:
    with pytest.raises(InvalidTypeError) as caught:
        RecordDict({"x": {"a": 1}})
    assert str(caught.value) == (
        "RecordDict key 'x': expected ArrayRecord, MetricRecord or ConfigRecord, got dict"
    )
    content = RecordDict()
    with pytest.raises(InvalidTypeError, match=r"RecordDict key 'w': expected .* got ndarray"):
        content["w"] = np.zeros(2)


# --- Copies --------------------------------------------------------------------------------------


def test_array_record_copy_shares_buffers_but_not_keys() -> None:
    weights = np.arange(4, dtype=np.float32)
    record = ArrayRecord({"w": weights})
    clone = record.copy()
    assert type(clone) is ArrayRecord
    assert clone == record
    assert np.shares_memory(clone["w"].numpy(), weights)
    clone["extra"] = np.zeros(1)
    del clone["w"]
    assert list(record) == ["w"]
    assert np.shares_memory(copy.copy(record)["w"].numpy(), weights)


def test_array_record_deepcopy_copies_data() -> None:
    weights = np.arange(4, dtype=np.float32)
    record = ArrayRecord({"w": weights})
    clone = copy.deepcopy(record)
    assert clone == record
    assert not np.shares_memory(clone["w"].numpy(), weights)
    weights[0] = 99.0
    assert clone["w"].numpy()[0] == 0.0


def test_record_dict_copy_has_new_records_sharing_buffers() -> None:
    weights = np.ones(3, np.float32)
    content = RecordDict({"m": ArrayRecord({"w": weights}), "c": ConfigRecord({"lr": 0.1})})
    clone = content.copy()
    assert type(clone) is RecordDict
    assert clone == content
    assert clone["m"] is not content["m"]
    assert clone["c"] is not content["c"]
    assert np.shares_memory(clone["m"]["w"].numpy(), weights)
    clone["c"]["lr"] = 0.5
    assert content["c"]["lr"] == 0.1


def test_record_dict_deepcopy_copies_everything() -> None:
    weights = np.ones(3, np.float32)
    content = RecordDict({"m": ArrayRecord({"w": weights}), "x": MetricRecord({"l": [1.0]})})
    clone = copy.deepcopy(content)
    assert clone == content
    assert not np.shares_memory(clone["m"]["w"].numpy(), weights)
    clone["x"]["l"].append(2.0)
    assert content["x"]["l"] == [1.0]


def test_deepcopy_keeps_shared_arrays_shared() -> None:
    array = Array(np.ones(2))
    record = ArrayRecord({"a": array, "b": array})
    clone = copy.deepcopy(record)
    assert clone["a"] is clone["b"]
    assert clone["a"] is not array


# --- Equality ------------------------------------------------------------------------------------


def test_records_compare_by_kind_and_value() -> None:
    assert MetricRecord({"a": 1}) == MetricRecord({"a": 1})
    assert MetricRecord({"a": 1}) != MetricRecord({"a": 2})
    assert MetricRecord({"a": 1}) != ConfigRecord({"a": 1})
    assert ConfigRecord({"a": 1, "b": 2}) == ConfigRecord({"b": 2, "a": 1})
    assert MetricRecord({"a": 1}) == {"a": 1}


def test_array_records_compare_by_bytes_not_by_identity() -> None:
    first = ArrayRecord({"w": np.arange(3, dtype=np.float32)})
    assert first == ArrayRecord({"w": np.arange(3, dtype=np.float32)})
    assert first != ArrayRecord({"w": np.arange(3, dtype=np.float64)})
    assert first != ArrayRecord({"w": np.arange(3, dtype=np.float32).reshape(1, 3)})
    assert first != ArrayRecord({"w": np.array([0, 1, 5], np.float32)})
    assert first != ArrayRecord({"v": np.arange(3, dtype=np.float32)})


def test_array_record_equality_depends_on_order() -> None:
    a, b = np.zeros(1), np.ones(1)
    assert ArrayRecord({"a": a, "b": b}) != ArrayRecord({"b": b, "a": a})
    assert ArrayRecord({"a": a, "b": b}) == ArrayRecord([("a", a), ("b", b)])


def test_record_dicts_compare_records() -> None:
    def build() -> RecordDict:
        return RecordDict({"m": ArrayRecord([np.ones(2)]), "c": ConfigRecord({"x": "y"})})

    assert build() == build()
    other = build()
    other["c"]["x"] = "z"
    assert build() != other


@pytest.mark.parametrize(
    "record", [MetricRecord(), ConfigRecord(), ArrayRecord(), RecordDict()], ids=type
)
def test_records_are_not_hashable(record: object) -> None:
    with pytest.raises(TypeError):
        hash(record)


# --- repr ----------------------------------------------------------------------------------------


def test_array_record_repr_shows_shapes_and_dtypes_not_data() -> None:
    record = ArrayRecord({"w": np.full(1000, 0.123, np.float32), "b": np.zeros((2, 3), np.int8)})
    text = repr(record)
    assert text == "ArrayRecord({'w': Array(float32, (1000,)), 'b': Array(int8, (2, 3))})"
    assert "0.123" not in text


def test_record_dict_repr_is_short() -> None:
    content = RecordDict(
        {"model": ArrayRecord([np.full(1000, 0.123)]), "m": MetricRecord({"loss": 0.5})}
    )
    text = repr(content)
    assert "0.123" not in text
    assert text == (
        "RecordDict({'model': ArrayRecord({'0': Array(float64, (1000,))}), "
        "'m': MetricRecord({'loss': 0.5})})"
    )


def test_long_lists_and_strings_are_cut_in_repr() -> None:
    record = MetricRecord({"losses": [float(i) for i in range(1000)]})
    text = repr(record)
    assert text.endswith("14.0, 15.0, ... 984 more]})")
    assert len(text) < 200
    config = repr(ConfigRecord({"blob": b"x" * 10_000, "text": "y" * 10_000}))
    assert "(10000 bytes)" in config
    assert "(10000 chars)" in config
    assert len(config) < 200


def test_records_with_many_keys_repr_the_first_ones() -> None:
    record = MetricRecord({f"k{i}": i for i in range(100)})
    text = repr(record)
    assert "'k15': 15" in text
    assert "'k16'" not in text
    assert text.endswith(", ... 84 more})")
