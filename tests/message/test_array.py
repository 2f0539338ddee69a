"""Array: dtypes, shapes, zero-copy views, layout normalisation, from_buffer, copies."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from fedbus.errors import InvalidArgumentError, InvalidTypeError
from fedbus.message import DTYPE_NAMES, MAX_RANK, Array

NUMPY_DTYPES = [
    ("bool", np.bool_),
    ("int8", np.int8),
    ("int16", np.int16),
    ("int32", np.int32),
    ("int64", np.int64),
    ("uint8", np.uint8),
    ("uint16", np.uint16),
    ("uint32", np.uint32),
    ("uint64", np.uint64),
    ("float16", np.float16),
    ("float32", np.float32),
    ("float64", np.float64),
]


def test_supported_dtype_names() -> None:
    assert list(DTYPE_NAMES) == [name for name, _ in NUMPY_DTYPES] + ["bfloat16"]


@pytest.mark.parametrize(("name", "dtype"), NUMPY_DTYPES)
def test_numpy_dtypes_are_held_without_copying(name: str, dtype: type[np.generic]) -> None:
    values = np.arange(6).astype(dtype).reshape(2, 3)
    array = Array(values)
    assert array.dtype == name
    assert array.shape == (2, 3)
    assert array.nbytes == 6 * np.dtype(dtype).itemsize
    assert array.numpy() is values
    assert np.shares_memory(array.numpy(), values)


@pytest.mark.parametrize(
    "values",
    [
        np.zeros(2, np.complex64),
        np.array(["a"]),
        np.array([b"a"]),
        np.array([object()]),
        np.zeros(2, "datetime64[s]"),
        np.zeros(2, [("a", np.int8)]),
    ],
    ids=lambda values: str(values.dtype),
)
def test_unsupported_numpy_dtypes_are_refused(values: np.ndarray) -> None:
    with pytest.raises(InvalidTypeError, match=re.escape(f"dtype {values.dtype} is not supported")):
        Array(values)


@pytest.mark.parametrize("values", [[1.0, 2.0], 3.0, "x", None])
def test_only_arrays_are_accepted(values: object) -> None:
    with pytest.raises(InvalidTypeError, match=r"expected numpy\.ndarray or torch\.Tensor, got"):
        Array(values)


def test_rank_above_the_limit_is_refused() -> None:
    assert Array(np.zeros((1,) * MAX_RANK)).shape == (1,) * 32
    with pytest.raises(InvalidArgumentError, match="rank 33 exceeds the limit 32"):
        Array(np.zeros((1,) * (MAX_RANK + 1)))


# --- 0-d, scalars, empty ------------------------------------------------------------------------


def test_zero_dimensional_array_keeps_its_shape_and_memory() -> None:
    values = np.array(2.5, dtype=np.float32)
    array = Array(values)
    assert array.shape == ()
    assert array.numpy().shape == ()
    assert np.shares_memory(array.numpy(), values)
    assert bytes(array.data) == np.float32(2.5).tobytes()
    assert array.nbytes == 4


def test_numpy_scalar_becomes_a_zero_dimensional_array() -> None:
    array = Array(np.int16(-3))
    assert (array.dtype, array.shape) == ("int16", ())
    assert array.numpy().item() == -3
    assert bytes(array.data) == b"\xfd\xff"


def test_empty_arrays_have_shape_and_no_bytes() -> None:
    array = Array(np.zeros((0, 3), np.float32))
    assert array.shape == (0, 3)
    assert array.nbytes == 0
    assert bytes(array.data) == b""
    assert array.numpy().shape == (0, 3)


def test_data_is_a_read_only_little_endian_byte_view() -> None:
    values = np.array([[1, 2], [3, 256]], dtype=np.int16)
    data = Array(values).data
    assert data.readonly
    assert data.format == "B"
    assert data.nbytes == 8
    assert bytes(data) == b"\x01\x00\x02\x00\x03\x00\x00\x01"
    values[0, 0] = 9
    assert data[0] == 9  # a view, not a copy


# --- Layout normalisation -------------------------------------------------------------------------


def test_non_contiguous_input_is_copied_once_into_c_order() -> None:
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    strided = base[:, ::2]
    array = Array(strided)
    held = array.numpy()
    assert held.flags.c_contiguous
    assert not np.shares_memory(held, base)
    assert held.tolist() == [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]


def test_fortran_order_input_is_copied_into_c_order() -> None:
    values = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    held = Array(values).numpy()
    assert held.flags.c_contiguous
    assert held.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert bytes(Array(values).data) == np.arange(6, dtype="<i4").tobytes()


def test_big_endian_input_is_copied_into_little_endian() -> None:
    values = np.arange(4, dtype=">i4")
    array = Array(values)
    held = array.numpy()
    assert array.dtype == "int32"
    assert held.dtype == np.dtype("<i4")
    assert held.tolist() == [0, 1, 2, 3]
    assert not np.shares_memory(held, values)
    assert bytes(array.data) == b"\x00\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00"


def test_big_endian_non_contiguous_input_is_normalised() -> None:
    values = np.arange(8, dtype=">f8")[::2]
    held = Array(values).numpy()
    assert held.flags.c_contiguous
    assert held.dtype == np.dtype("<f8")
    assert held.tolist() == [0.0, 2.0, 4.0, 6.0]


def test_read_only_input_stays_shared_and_read_only() -> None:
    values = np.arange(3, dtype=np.float32)
    values.flags.writeable = False
    held = Array(values).numpy()
    assert np.shares_memory(held, values)
    assert not held.flags.writeable


# --- torch ----------------------------------------------------------------------------------------


def test_torch_tensor_is_held_without_copying() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    array = Array(tensor)
    assert (array.dtype, array.shape) == ("float32", (2, 3))
    assert np.shares_memory(array.numpy(), tensor.numpy())
    assert array.torch().data_ptr() == tensor.data_ptr()


def test_torch_tensor_that_requires_grad_is_accepted_and_shared() -> None:
    torch = pytest.importorskip("torch")
    weight = torch.nn.Parameter(torch.ones(2, 2))
    array = Array(weight)
    assert array.numpy().tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert array.torch().data_ptr() == weight.data_ptr()
    assert not array.torch().requires_grad


def test_non_contiguous_torch_tensor_is_copied_into_c_order() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.arange(6, dtype=torch.int64).reshape(2, 3).T
    held = Array(tensor).numpy()
    assert held.flags.c_contiguous
    assert held.tolist() == [[0, 3], [1, 4], [2, 5]]


def test_zero_dimensional_torch_tensor_keeps_its_shape() -> None:
    torch = pytest.importorskip("torch")
    array = Array(torch.tensor(3.5))
    assert array.shape == ()
    assert array.numpy().item() == 3.5
    assert array.torch().shape == torch.Size([])


def test_lazily_negated_torch_tensor_is_resolved() -> None:
    torch = pytest.importorskip("torch")
    negated = torch.ones(3)._neg_view()
    assert Array(negated).numpy().tolist() == [-1.0, -1.0, -1.0]


@pytest.mark.parametrize(
    ("name", "dtype_name"),
    [
        ("bool", "bool"),
        ("int8", "int8"),
        ("int16", "int16"),
        ("int32", "int32"),
        ("int64", "int64"),
        ("uint8", "uint8"),
        ("float16", "float16"),
        ("float32", "float32"),
        ("float64", "float64"),
        ("bfloat16", "bfloat16"),
    ],
)
def test_torch_dtypes_map_to_wire_names(name: str, dtype_name: str) -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.zeros(3, dtype=getattr(torch, dtype_name))
    array = Array(tensor)
    assert array.dtype == name
    assert array.torch().dtype == tensor.dtype
    assert torch.equal(array.torch(), tensor)


def test_bfloat16_is_held_as_bit_patterns() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16)
    array = Array(tensor)
    assert (array.dtype, array.shape, array.nbytes) == ("bfloat16", (3,), 6)
    assert bytes(array.data) == b"\x80\x3f\x00\xc0\x00\x3f"
    with pytest.raises(InvalidTypeError, match="bfloat16 has no NumPy dtype"):
        array.numpy()
    back = array.torch()
    assert back.dtype == torch.bfloat16
    assert back.tolist() == [1.0, -2.0, 0.5]
    assert back.data_ptr() == tensor.data_ptr()


def test_bfloat16_from_buffer_becomes_a_torch_tensor() -> None:
    torch = pytest.importorskip("torch")
    array = Array.from_buffer("bfloat16", (2,), b"\x80\x3f\x00\xc0")
    tensor = array.torch()
    assert tensor.dtype == torch.bfloat16
    assert tensor.tolist() == [1.0, -2.0]


@pytest.mark.parametrize("dtype_name", ["complex64", "float8_e4m3fn"])
def test_unsupported_torch_dtypes_are_refused(dtype_name: str) -> None:
    torch = pytest.importorskip("torch")
    dtype = getattr(torch, dtype_name)
    with pytest.raises(InvalidTypeError, match=f"dtype {dtype} is not supported"):
        Array(torch.zeros(2, dtype=dtype))


def test_sparse_torch_tensor_is_refused() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(InvalidTypeError, match=r"dense torch.Tensor.*to_dense\(\)"):
        Array(torch.ones(2).to_sparse())


def test_meta_torch_tensor_is_refused() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(InvalidArgumentError, match="meta device"):
        Array(torch.ones(2, device="meta"))


def test_torch_view_of_a_read_only_array_is_a_writable_copy() -> None:
    pytest.importorskip("torch")
    array = Array.from_buffer("float32", (2,), bytes(np.array([1.0, 2.0], np.float32).data))
    tensor = array.torch()  # no warning about non-writable arrays (warnings are errors here)
    tensor[0] = 5.0
    assert array.numpy().tolist() == [1.0, 2.0]


# --- from_buffer ----------------------------------------------------------------------------------


def test_from_buffer_views_the_buffer_without_copying() -> None:
    buffer = bytearray(np.array([1, 2, 3], "<i4").tobytes())
    array = Array.from_buffer("int32", (3,), buffer)
    assert array.numpy().tolist() == [1, 2, 3]
    buffer[0] = 7
    assert array.numpy()[0] == 7


def test_from_buffer_of_bytes_is_read_only() -> None:
    array = Array.from_buffer("uint8", (2, 2), b"\x01\x02\x03\x04")
    assert array.numpy().tolist() == [[1, 2], [3, 4]]
    assert not array.numpy().flags.writeable


def test_from_buffer_with_a_zero_dimensional_shape() -> None:
    array = Array.from_buffer("float32", (), np.float32(1.5).tobytes())
    assert array.shape == ()
    assert array.numpy().item() == 1.5
    assert bytes(array.data) == np.float32(1.5).tobytes()


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0, 2)])
def test_from_buffer_with_a_zero_size_shape(shape: tuple[int, ...]) -> None:
    array = Array.from_buffer("float64", shape, b"")
    assert array.shape == shape
    assert array.nbytes == 0
    assert bytes(array.data) == b""


def test_from_buffer_of_a_memoryview_slice() -> None:
    frame = memoryview(b"header" + np.arange(3, dtype="<u2").tobytes())
    array = Array.from_buffer("uint16", (3,), frame[6:])
    assert array.numpy().tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("dtype", "shape", "buffer", "text"),
    [
        ("float32", (2,), b"\x00" * 7, r"shape \(2,\) of float32 needs 8 bytes, buffer has 7"),
        ("float32", (), b"", r"shape \(\) of float32 needs 4 bytes, buffer has 0"),
        ("int8", (2**32, 2**32), b"", "needs 18446744073709551616 bytes, buffer has 0"),
        ("int8", (2**62, 4), b"", "needs 18446744073709551616 bytes"),
        ("float128", (1,), b"\x00" * 16, "unknown dtype name 'float128'"),
        ("int8", (-1,), b"", "invalid shape"),
        ("int8", (True,), b"\x00", "invalid shape"),
        ("int8", (1.0,), b"\x00", "invalid shape"),
        ("int8", (1,) * 33, b"\x00", "rank 33 exceeds the limit 32"),
    ],
)
def test_from_buffer_refuses_inconsistent_input(
    dtype: str, shape: tuple[int, ...], buffer: bytes, text: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=text) as caught:
        Array.from_buffer(dtype, shape, buffer)
    assert isinstance(caught.value, ValueError)


def test_from_buffer_refuses_what_is_not_a_buffer() -> None:
    with pytest.raises(InvalidTypeError, match="expected a C-contiguous bytes-like buffer"):
        Array.from_buffer("int8", (2,), [1, 2])
    strided = memoryview(np.arange(4, dtype=np.int8))[::2]
    with pytest.raises(InvalidTypeError, match="got memoryview"):
        Array.from_buffer("int8", (2,), strided)


# --- Equality, copies, repr -----------------------------------------------------------------------


def test_arrays_compare_by_dtype_shape_and_bytes() -> None:
    values = np.arange(4, dtype=np.float32)
    assert Array(values) == Array(values.copy())
    assert Array(values) == Array.from_buffer("float32", (4,), values.tobytes())
    assert Array(values) != Array(values.reshape(2, 2))
    assert Array(values) != Array(values.view(np.int32))
    assert Array(values) != Array(values + 1)
    assert Array(np.array([np.nan])) == Array(np.array([np.nan]))
    assert Array(values).__eq__(values) is NotImplemented
    assert Array(values) != "float32"


def test_arrays_are_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(Array(np.zeros(1)))


def test_array_from_an_array_shares_it() -> None:
    values = np.ones(3)
    assert np.shares_memory(Array(Array(values)).numpy(), values)


def test_copy_shares_the_buffer_and_deepcopy_does_not() -> None:
    values = np.arange(5, dtype=np.int64)
    array = Array(values)
    shallow, deep = copy.copy(array), copy.deepcopy(array)
    assert shallow == array
    assert deep == array
    assert np.shares_memory(shallow.numpy(), values)
    assert not np.shares_memory(deep.numpy(), values)


def test_deepcopy_of_a_read_only_array_is_writable() -> None:
    array = Array.from_buffer("int8", (2,), b"\x01\x02")
    clone = copy.deepcopy(array)
    clone.numpy()[0] = 5
    assert array.numpy().tolist() == [1, 2]


def test_repr_shows_dtype_and_shape_not_data() -> None:
    array = Array(np.full(1000, 0.123, np.float32))
    assert repr(array) == "Array(float32, (1000,))"
    assert repr(Array(np.float64(1.0))) == "Array(float64, ())"
