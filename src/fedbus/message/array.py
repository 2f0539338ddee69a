"""``Array``: one named tensor's dtype, shape and bytes, held without copying.

An ``Array`` wraps a C-contiguous, little-endian NumPy array. Built from a NumPy array or a CPU
torch tensor that already has that layout it shares the caller's memory; built by the codec it is
a read-only view into the received buffer. Nothing here copies data unless the input's layout
forces it (non-contiguous or big-endian input, or a tensor on an accelerator).

Supported dtypes (the names used on the wire)::

    bool  int8 int16 int32 int64  uint8 uint16 uint32 uint64  float16 float32 float64  bfloat16

``bfloat16`` has no NumPy dtype: such an array is held as its raw 16-bit patterns, ``numpy()``
refuses it, and ``torch()`` (with torch installed) returns the bfloat16 tensor.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from fedbus.errors import InvalidArgumentError, InvalidTypeError, MissingDependencyError

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPE_NAMES", "MAX_RANK", "Array", "is_torch_tensor"]

#: Wire names of the supported dtypes, mapped to the NumPy dtype that holds their bytes.
DTYPE_NAMES: dict[str, np.dtype[Any]] = {
    "bool": np.dtype("bool"),
    "int8": np.dtype("<i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "uint64": np.dtype("<u8"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    # bfloat16 bit patterns travel as 16-bit words.
    "bfloat16": np.dtype("<u2"),
}

#: Highest number of dimensions an Array may have (the codec enforces it on decode too).
MAX_RANK = 32

# NumPy kind letter and item size -> wire name; byte order is normalised separately.
_NAME_OF_NUMPY_KIND = {
    f"{dtype.kind}{dtype.itemsize}": name
    for name, dtype in DTYPE_NAMES.items()
    if name != "bfloat16"
}


def _dtype_name(values: np.ndarray[Any, Any]) -> str:
    name = _NAME_OF_NUMPY_KIND.get(f"{values.dtype.kind}{values.dtype.itemsize}")
    if name is None:
        supported = ", ".join(DTYPE_NAMES)
        raise InvalidTypeError(
            f"dtype {values.dtype} is not supported by fedbus records; supported: {supported}"
        )
    return name


# torch dtype name (``str(torch.float32)`` is ``"torch.float32"``) -> wire name.
_NAME_OF_TORCH_DTYPE = {f"torch.{name}": name for name in DTYPE_NAMES}


def _torch_module(needed_by: str = "this") -> Any:
    """Import torch, or say how to install it; ``needed_by`` names what needs it."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            f"{needed_by} needs PyTorch: pip install 'fedbus[torch]' "
            "(first pip install 'torch==2.13.0' for the CPU build)"
        ) from exc
    return torch


def is_torch_tensor(value: object) -> TypeGuard[torch.Tensor]:
    """Return True if ``value`` is a torch.Tensor, without importing torch when it is absent."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


class Array:
    """One tensor: a dtype name, a shape and its bytes.

    Parameters
    ----------
    values
        A NumPy array or a torch tensor. C-contiguous little-endian input (the usual case) is
        shared, not copied; other layouts are copied once into that layout.

    Examples
    --------
    >>> import numpy as np
    >>> weights = np.zeros((2, 3), dtype=np.float32)
    >>> array = Array(weights)
    >>> array.dtype, array.shape, array.nbytes
    ('float32', (2, 3), 24)
    >>> np.shares_memory(array.numpy(), weights)
    True
    """

    __slots__ = ("_dtype", "_values")
    _dtype: str
    _values: np.ndarray[Any, Any]

    def __init__(self, values: np.ndarray[Any, Any] | np.generic | torch.Tensor | Array) -> None:
        if isinstance(values, Array):
            self._values, self._dtype = values._values, values._dtype
            return
        if is_torch_tensor(values):
            self._values, self._dtype = _from_torch(values)
            return
        if not isinstance(values, np.ndarray | np.generic):
            raise InvalidTypeError(
                f"Array: expected numpy.ndarray or torch.Tensor, got {type(values).__name__}"
            )
        array = np.asarray(values)
        self._dtype = _dtype_name(array)
        _check_rank(array.ndim)
        # One copy at most, and only when the layout is not already the wire layout. Not
        # np.ascontiguousarray: it turns a 0-d array into shape (1,).
        self._values = np.asarray(array, dtype=DTYPE_NAMES[self._dtype], order="C")

    @classmethod
    def from_buffer(cls, dtype: str, shape: tuple[int, ...], buffer: Any) -> Array:
        """Build an Array that views ``buffer`` (little-endian bytes) without copying.

        Raises ``InvalidArgumentError`` if the dtype is unknown, the shape invalid or the
        buffer's length is not ``prod(shape) * itemsize``; ``InvalidTypeError`` if ``buffer``
        does not support the buffer protocol.
        """
        numpy_dtype = DTYPE_NAMES.get(dtype) if isinstance(dtype, str) else None
        if numpy_dtype is None:
            raise InvalidArgumentError(
                f"Array: unknown dtype name {dtype!r}; supported: {', '.join(DTYPE_NAMES)}"
            )
        shape = _check_shape(shape)
        try:
            view = memoryview(buffer).cast("B")
        except TypeError as exc:
            raise InvalidTypeError(
                f"Array: expected a C-contiguous bytes-like buffer, got {type(buffer).__name__}"
            ) from exc
        # Python ints: a NumPy product of large dims would wrap around silently.
        expected = math.prod(shape) * numpy_dtype.itemsize
        if view.nbytes != expected:
            raise InvalidArgumentError(
                f"Array: shape {shape} of {dtype} needs {expected} bytes, buffer has {view.nbytes}"
            )
        return cls.from_checked(dtype, np.frombuffer(view, dtype=numpy_dtype).reshape(shape))

    @classmethod
    def from_checked(cls, dtype: str, values: np.ndarray[Any, Any]) -> Array:
        """Wrap ``values`` as they are: no check, no copy.

        For code that checked everything ``Array(...)`` would (a decoder that has read the
        dtype, rank and length from a frame): ``dtype`` must be a name of ``DTYPE_NAMES`` and
        ``values`` a C-contiguous array of that name's NumPy dtype. Everyone else builds
        Arrays with ``Array(values)`` or ``Array.from_buffer``.
        """
        array = object.__new__(cls)
        array._dtype, array._values = dtype, values
        return array

    @property
    def dtype(self) -> str:
        """The dtype's wire name, e.g. ``"float32"``."""
        return self._dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self._values.shape)

    @property
    def nbytes(self) -> int:
        """Number of bytes of data."""
        return int(self._values.nbytes)

    @property
    def stored(self) -> np.ndarray[Any, Any]:
        """The NumPy array holding the values as they travel (bfloat16 as its 16-bit patterns).

        Shared, not copied: for reading its shape and bytes, never for changing them.
        """
        return self._values

    @property
    def data(self) -> memoryview:
        """The data as a flat, read-only byte view (no copy)."""
        return self._values.reshape(-1).view(np.uint8).data.toreadonly()

    def numpy(self) -> np.ndarray[Any, Any]:
        """Return the values as a NumPy array that shares this Array's memory.

        Arrays decoded from the wire are read-only views; copy before changing them in place.
        """
        if self._dtype == "bfloat16":
            raise InvalidTypeError(
                "Array: bfloat16 has no NumPy dtype; use Array.torch() (needs fedbus[torch])"
            )
        return self._values

    def torch(self) -> torch.Tensor:
        """Return the values as a CPU torch tensor sharing this Array's memory where possible."""
        torch_module = _torch_module()
        values = self._values
        if not values.flags.writeable:
            # torch.from_numpy warns on read-only arrays: tensors are writable by contract.
            values = values.copy()
        tensor: torch.Tensor = torch_module.from_numpy(values)
        if self._dtype == "bfloat16":
            tensor = tensor.view(torch_module.bfloat16)
        return tensor

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Array):
            return NotImplemented
        return (
            self._dtype == other._dtype
            and self._values.shape == other._values.shape
            and self.data == other.data
        )

    __hash__ = None  # type: ignore[assignment]  # mutable container: not hashable

    def __repr__(self) -> str:
        return f"Array({self._dtype}, {self.shape})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Array:
        clone = object.__new__(Array)
        clone._dtype = self._dtype
        clone._values = self._values.copy()
        memo[id(self)] = clone
        return clone

    def __copy__(self) -> Array:
        return Array(self)


def _check_rank(rank: int) -> None:
    if rank > MAX_RANK:
        raise InvalidArgumentError(f"Array: rank {rank} exceeds the limit {MAX_RANK}")


def _check_shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, tuple | list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidArgumentError(f"Array: invalid shape {shape!r}: expected a tuple of ints >= 0")
    _check_rank(len(shape))
    return tuple(shape)


def _from_torch(tensor: torch.Tensor) -> tuple[np.ndarray[Any, Any], str]:
    torch = _torch_module()
    name = _NAME_OF_TORCH_DTYPE.get(str(tensor.dtype))
    if name is None:
        supported = ", ".join(DTYPE_NAMES)
        raise InvalidTypeError(
            f"dtype {tensor.dtype} is not supported by fedbus records; supported: {supported}"
        )
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise InvalidTypeError(
            f"Array: expected a dense torch.Tensor, got layout {tensor.layout}"
            + (" (quantized)" if tensor.is_quantized else "")
            + "; convert it with .to_dense() or .dequantize() first"
        )
    if tensor.device.type == "meta":
        raise InvalidArgumentError("Array: a tensor on the meta device has no data to hold")
    _check_rank(tensor.dim())
    if name == "bfloat16":
        # NumPy has no bfloat16: hold the 16-bit patterns.
        tensor = tensor.detach().cpu().resolve_neg().contiguous()
        return tensor.view(torch.int16).numpy().view(np.uint16), name
    # force=True detaches (tensors that require grad), moves to the CPU and resolves lazy
    # negation; a plain CPU tensor is still shared, not copied.
    values = tensor.numpy(force=True)
    return np.asarray(values, dtype=DTYPE_NAMES[name], order="C"), name
