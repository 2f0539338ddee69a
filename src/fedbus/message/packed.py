"""Read-only packed lists: long list values held as one buffer instead of one object per item.

A Python list of a million bools holds a million 8-byte pointers (8 MB for 1 MB on the wire),
and one of short strings a str object per item (~50 bytes for 6 on the wire). So
``decode_message`` returns long lists (64 items or more) as packed lists that keep the frame's
bytes:

- ``PackedNumbers``: int, float or bool items as a read-only NumPy view (int64, float64 or
  bool) into the frame. Nothing is copied.
- ``PackedStrings``: str or bytes items as the frame's bytes (each item's length, then the
  item), plus where each item starts (4 bytes per item). An item becomes a ``str`` or
  ``bytes`` only when it is read.

Both are read-only ``Sequence`` s that stand in for the list they replace: ``len``, indexing
(negative too), slices (which are plain lists), iteration, ``in``, ``==`` with a list or
another packed list (either way round), a list's ``repr``, and ``tolist()``. They are not
``list`` s: test for a list value with ``isinstance(value, list | PackedList)``.

Examples
--------
>>> import numpy as np
>>> flags = PackedNumbers(np.array([True, False, True]))
>>> flags
[True, False, True]
>>> flags[-1], flags[:2], flags == [True, False, True], [True, False, True] == flags
(True, [True, False], True, True)
>>> names = PackedStrings(["ab", "x123"])
>>> names[1], list(names), names.item_type
('x123', ['ab', 'x123'], <class 'str'>)
"""

from __future__ import annotations

import itertools
import operator
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, SupportsIndex, TypeVar, overload

import numpy as np

from fedbus.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["PackedList", "PackedNumbers", "PackedStrings"]

_T = TypeVar("_T")
# Comparison and iteration build Python lists of this many items at a time, never of all.
_CHUNK: Final = 4096
_INT64_MAX: Final = 2**63 - 1
_ITEM_TYPES: dict[str, type] = {"b": bool, "i": int, "f": float}
# The item layouts of the wire format (docs/wire-format.md): i64, f64, and u8 0 or 1.
_STORED_DTYPES: dict[type, np.dtype[Any]] = {
    bool: np.dtype(np.bool_),
    int: np.dtype("<i8"),
    float: np.dtype("<f8"),
}


class PackedList(Sequence[_T]):
    """A read-only list of one item type (int, float, bool, str or bytes), held packed.

    The common base of ``PackedNumbers`` and ``PackedStrings``: use it to recognise a list
    value, ``isinstance(value, list | PackedList)``. It compares equal to a ``list`` holding
    equal items, and its ``repr`` is that list's.
    """

    __slots__ = ()

    @property
    @abstractmethod
    def item_type(self) -> type:
        """The type of every item: ``int``, ``float``, ``bool``, ``str`` or ``bytes``."""

    @property
    @abstractmethod
    def data(self) -> memoryview:
        """The items' bytes as they travel in a frame: a flat, read-only view (no copy)."""

    @overload
    def __getitem__(self, index: SupportsIndex) -> _T: ...
    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...
    @abstractmethod
    def __getitem__(self, index: SupportsIndex | slice) -> _T | list[_T]:
        """An item (negative indices count from the end), or a slice's items as a list."""

    @abstractmethod
    def __len__(self) -> int:
        """The number of items."""

    def tolist(self) -> list[_T]:
        """The items as a new ``list`` of Python objects."""
        return self[:]

    def __iter__(self) -> Iterator[_T]:
        for start in range(0, len(self), _CHUNK):
            yield from self[start : start + _CHUNK]

    def _same_items(self, other: PackedList[Any]) -> bool | None:
        """Whether ``other`` (as long as this) holds equal items, if a fast test can tell."""
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, list | PackedList):
            return NotImplemented
        if other is self:
            return True  # as for a list, whose items equal themselves (NaN included)
        if len(self) != len(other):
            return False
        same = self._same_items(other) if isinstance(other, PackedList) else None
        if same is not None:
            return same
        # A list's comparison, a chunk at a time: int equals float, bool equals int.
        return all(
            self[start : start + _CHUNK] == other[start : start + _CHUNK]
            for start in range(0, len(self), _CHUNK)
        )

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are not hashable

    def __repr__(self) -> str:
        return repr(self.tolist())

    def __copy__(self) -> PackedList[_T]:
        return self  # read-only: a copy could never differ


class PackedNumbers(PackedList[_T]):
    """int, float or bool items held as a read-only 1-D NumPy array (int64, float64 or bool).

    ``decode_message`` returns long int, float and bool lists as views into the frame.
    Reading an item gives a Python ``int``, ``float`` or ``bool``; ``numpy()`` (or
    ``numpy.asarray``) gives the array itself, without a copy.

    Parameters
    ----------
    values
        A 1-D NumPy array of bool, integer (each within int64) or floating dtype. It is copied
        once, as int64, float64 or bool, and the copy made read-only.

    Examples
    --------
    >>> import numpy as np
    >>> losses = PackedNumbers(np.array([0.5, 0.25], np.float32))
    >>> losses, losses.item_type, losses.numpy().dtype
    ([0.5, 0.25], <class 'float'>, dtype('float64'))
    """

    __slots__ = ("_values",)
    _values: np.ndarray[Any, Any]

    def __init__(self, values: np.ndarray[Any, Any]) -> None:
        if not isinstance(values, np.ndarray) or values.ndim != 1:
            shape = f"shape {values.shape}" if isinstance(values, np.ndarray) else "no array"
            raise InvalidTypeError(
                f"PackedNumbers: expected a 1-D numpy.ndarray, got {type(values).__name__} "
                f"({shape})"
            )
        kind = values.dtype.kind
        item_type = _ITEM_TYPES.get("i" if kind == "u" else kind)
        if item_type is None:
            raise InvalidTypeError(
                f"PackedNumbers: expected bool, integer or floating items, got {values.dtype}"
            )
        if kind == "u" and values.size and int(values.max()) > _INT64_MAX:
            raise InvalidArgumentError(
                f"PackedNumbers: {values.max()} does not fit in int64; store floats instead"
            )
        stored = values.astype(_STORED_DTYPES[item_type])  # a copy: the caller keeps theirs
        stored.flags.writeable = False
        self._values = stored

    @classmethod
    def from_checked(cls, values: np.ndarray[Any, Any]) -> PackedNumbers[Any]:
        """Hold ``values`` itself: no check, no copy.

        For a decoder that made ``values`` a read-only 1-D array of dtype ``<i8``, ``<f8`` or
        ``bool`` (bytes checked to be 0 or 1); everyone else uses the constructor.
        """
        packed: PackedNumbers[Any] = object.__new__(cls)
        packed._values = values
        return packed

    @property
    def item_type(self) -> type:
        """``int``, ``float`` or ``bool``."""
        return _ITEM_TYPES[self._values.dtype.kind]

    @property
    def data(self) -> memoryview:
        """The items' bytes as they travel: i64, f64 or u8 each, little-endian (no copy)."""
        return self._values.view(np.uint8).data.toreadonly()

    def numpy(self) -> np.ndarray[Any, Any]:
        """The items as a read-only NumPy array sharing this list's memory."""
        return self._values

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        if copy:
            return np.array(self._values, dtype=dtype)
        return np.asarray(self._values, dtype=dtype)

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: SupportsIndex) -> _T: ...
    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> _T | list[_T]:
        if isinstance(index, slice):
            return self._values[index].tolist()  # type: ignore[no-any-return]
        return self._values[operator.index(index)].item()  # type: ignore[no-any-return]

    def tolist(self) -> list[_T]:
        """The items as a new ``list`` of Python ``int``, ``float`` or ``bool``."""
        return self._values.tolist()  # type: ignore[no-any-return]

    def _same_items(self, other: PackedList[Any]) -> bool | None:
        if isinstance(other, PackedNumbers) and other._values.dtype == self._values.dtype:
            # NaN differs from NaN, as two lists of decoded floats compare.
            return bool(np.array_equal(self._values, other._values))
        return None

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedNumbers[_T]:
        """A copy holding its own bytes: it no longer keeps the frame it was decoded from."""
        values = self._values.copy()
        values.flags.writeable = False
        clone: PackedNumbers[_T] = PackedNumbers.from_checked(values)
        memo[id(self)] = clone
        return clone

    def __reduce__(self) -> tuple[Any, ...]:
        return PackedNumbers, (self._values,)


class PackedStrings(PackedList[_T]):
    """str or bytes items held as their bytes on the wire plus where each item starts.

    ``data`` is, for each item, its byte length (u32, little-endian) and then its bytes (UTF-8
    for str): the layout of list items in a frame, which ``decode_message`` keeps without a
    copy, having checked every length (and, for str, that every item is valid UTF-8). An item
    becomes a ``str`` or ``bytes`` when it is read. Where items start is 4 bytes per item (8
    when ``data`` exceeds 4 GiB).

    Parameters
    ----------
    items
        The strings or byte strings to hold, in order.
    item_type
        ``str`` (the default) or ``bytes``: the type of every item, which no items cannot tell.

    Examples
    --------
    >>> blobs = PackedStrings([b"\\x00", b""], item_type=bytes)
    >>> blobs, len(blobs), bytes(blobs.data)
    ([b'\\x00', b''], 2, b'\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00')
    """

    __slots__ = ("_bounds", "_data", "_item_type")
    _bounds: np.ndarray[Any, Any]
    _data: memoryview
    _item_type: type

    def __init__(self, items: Iterable[_T], item_type: type[str] | type[bytes] = str) -> None:
        if item_type is not str and item_type is not bytes:
            raise InvalidTypeError(
                f"PackedStrings: item_type must be str or bytes, got {item_type!r}"
            )
        blobs: list[bytes] = []
        item: Any
        for item in items:
            if type(item) is not item_type:
                raise InvalidTypeError(
                    f"PackedStrings: expected {item_type.__name__} items, got {type(item).__name__}"
                )
            try:
                blobs.append(item.encode() if isinstance(item, str) else item)
            except UnicodeEncodeError as exc:
                raise InvalidArgumentError(
                    f"PackedStrings: {item!r} is not valid UTF-8 ({exc.reason})"
                ) from exc
        if any(len(blob) >= 2**32 for blob in blobs):
            raise InvalidArgumentError("PackedStrings: an item has 4 GiB or more")
        data = b"".join(
            itertools.chain.from_iterable((len(blob).to_bytes(4, "little"), blob) for blob in blobs)
        )
        bounds = np.cumsum([0] + [4 + len(blob) for blob in blobs], dtype=np.int64)
        self._data = memoryview(data)
        self._bounds = bounds.astype(np.uint32) if len(data) < 2**32 else bounds
        self._bounds.flags.writeable = False
        self._item_type = item_type

    @classmethod
    def from_checked(
        cls, data: memoryview, bounds: np.ndarray[Any, Any], item_type: type
    ) -> PackedStrings[Any]:
        """Hold ``data`` and ``bounds`` themselves: no check, no copy.

        For a decoder: ``data`` is a read-only byte view in the layout ``data`` describes,
        ``bounds`` the offset in it of each item's length and then ``len(data)`` (so one more
        than the items), and every length and UTF-8 item (for ``str``) already checked.
        """
        packed: PackedStrings[Any] = object.__new__(cls)
        packed._data, packed._bounds, packed._item_type = data, bounds, item_type
        return packed

    @property
    def item_type(self) -> type:
        """``str`` or ``bytes``."""
        return self._item_type

    @property
    def data(self) -> memoryview:
        """Each item's length (u32, little-endian) then its bytes: a read-only view (no copy)."""
        return self._data

    def __len__(self) -> int:
        return len(self._bounds) - 1

    @overload
    def __getitem__(self, index: SupportsIndex) -> _T: ...
    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> _T | list[_T]:
        count = len(self._bounds) - 1
        if isinstance(index, slice):
            start, stop, step = index.indices(count)
            if step != 1:
                return [self[position] for position in range(start, stop, step)]
            return self._items(start, stop)
        position = operator.index(index)
        if position < 0:
            position += count
        if not 0 <= position < count:
            raise IndexError(f"PackedStrings index {index} out of range for {count} items")
        found: _T = self._items(position, position + 1)[0]
        return found

    def _items(self, start: int, stop: int) -> list[Any]:
        if stop <= start:
            return []
        bounds = self._bounds[start : stop + 1].tolist()
        data = self._data
        if self._item_type is str:
            return [
                str(data[begin + 4 : end], "utf-8") for begin, end in itertools.pairwise(bounds)
            ]
        return [bytes(data[begin + 4 : end]) for begin, end in itertools.pairwise(bounds)]

    def _same_items(self, other: PackedList[Any]) -> bool | None:
        if isinstance(other, PackedStrings):
            # One UTF-8 form per str: equal items are equal bytes.
            return other._item_type is self._item_type and bool(
                np.array_equal(
                    np.frombuffer(self._data, np.uint8), np.frombuffer(other._data, np.uint8)
                )
            )
        return None

    def __deepcopy__(self, memo: dict[int, Any]) -> PackedStrings[_T]:
        """A copy holding its own bytes: it no longer keeps the frame it was decoded from."""
        clone: PackedStrings[_T] = PackedStrings.from_checked(
            memoryview(bytes(self._data)), self._bounds, self._item_type
        )
        memo[id(self)] = clone
        return clone

    def __reduce__(self) -> tuple[Any, ...]:
        return PackedStrings, (self.tolist(), self._item_type)
