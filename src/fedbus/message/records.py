"""Typed records: what a message's content is made of.

A ``RecordDict`` maps names to records of three kinds:

- ``ArrayRecord``: ordered names -> ``Array`` (model weights, gradients, control variates).
- ``MetricRecord``: names -> int | float, or a homogeneous list of them (losses, accuracies).
- ``ConfigRecord``: names -> int | float | str | bytes | bool, or a homogeneous list of one of
  them (learning rates, round numbers, flags).

Every value is checked when it is set; a wrong type raises ``InvalidTypeError`` (a ``TypeError``)
naming the key, what was expected and what was given. Integers must fit in 64 bits, the width
they have on the wire. A list value is either a ``list`` or a read-only ``PackedList`` (what
``decode_message`` makes of lists of 64 items or more); test for one with
``isinstance(value, list | PackedList)``.

A record equals another record of the same kind with equal items, and also a plain ``dict``
with equal items: ``MetricRecord({"loss": 0.5}) == {"loss": 0.5}``. An ``ArrayRecord`` compares
its arrays by dtype, shape and bytes, in order (see ``ArrayRecord``). Records are not hashable.
``count_bytes()`` on any record is the size of its keys and values (see each record type).

Examples
--------
>>> import numpy as np
>>> content = RecordDict({
...     "model": ArrayRecord([np.ones(3, dtype=np.float32)]),
...     "train": ConfigRecord({"lr": 0.1, "epochs": 1}),
... })
>>> content["model"].to_numpy_ndarrays()[0].tolist()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import ItemsView, Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Generic, Self, TypeAlias, TypeVar, overload

import numpy as np

from fedbus.errors import InvalidArgumentError, InvalidTypeError
from fedbus.message.array import Array, _torch_module, is_torch_tensor
from fedbus.message.packed import PackedList

if TYPE_CHECKING:
    import torch

__all__ = [
    "ArrayRecord",
    "ConfigRecord",
    "ConfigValue",
    "MetricRecord",
    "MetricValue",
    "Record",
    "RecordDict",
]

MetricScalar: TypeAlias = int | float
MetricValue: TypeAlias = int | float | list[int] | list[float] | PackedList[int] | PackedList[float]
ConfigScalar: TypeAlias = int | float | str | bytes | bool
ConfigValue: TypeAlias = (
    int
    | float
    | str
    | bytes
    | bool
    | list[int]
    | list[float]
    | list[str]
    | list[bytes]
    | list[bool]
    | PackedList[int]
    | PackedList[float]
    | PackedList[str]
    | PackedList[bytes]
    | PackedList[bool]
)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# repr shows this many entries of a record and items of a list, then a count of the rest.
_REPR_ITEMS = 16
# ... and this many characters of a str or bytes value.
_REPR_CHARS = 40
_V = TypeVar("_V")


def _check_key(owner: str, key: object) -> str:
    if not isinstance(key, str):
        raise InvalidTypeError(f"{owner}: keys must be str, got {type(key).__name__} {key!r}")
    if not key:
        raise InvalidArgumentError(f"{owner}: keys must be non-empty str, got ''")
    return key


def _pairs(owner: str, items: object) -> Iterator[tuple[Any, Any]]:
    """The (key, value) pairs of a mapping or of an iterable of pairs, as ``dict()`` takes them."""
    if isinstance(items, Mapping):
        yield from items.items()
        return
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise InvalidTypeError(
            f"{owner}: expected a dict or an iterable of (key, value) pairs, "
            f"got {type(items).__name__}"
        )
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise InvalidTypeError(
                f"{owner}: expected (key, value) pairs, got an item of type {type(item).__name__}"
            )
        yield item[0], item[1]


def _short_repr(value: object) -> str:
    """``repr(value)`` with long lists, str and bytes cut short: a repr shows types, not data."""
    if isinstance(value, list | PackedList):
        shown = ", ".join(_short_repr(item) for item in value[:_REPR_ITEMS])
        rest = len(value) - _REPR_ITEMS
        return f"[{shown}, ... {rest} more]" if rest > 0 else f"[{shown}]"
    text = repr(value)
    if isinstance(value, str | bytes) and len(value) > _REPR_CHARS:
        unit = "chars" if isinstance(value, str) else "bytes"
        return f"{value[:_REPR_CHARS]!r}... ({len(value)} {unit})"
    return text


class _Record(MutableMapping[str, _V], Generic[_V]):
    """A dict whose values are validated on the way in; subclasses define ``_convert``."""

    __slots__ = ("_data",)
    _kind = "record"

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None) -> None:
        self._data: dict[str, _V] = {}
        if items is not None:
            for key, value in _pairs(type(self).__name__, items):
                self[key] = value

    def _convert(self, key: str, value: Any) -> _V:
        raise NotImplementedError

    def __setitem__(self, key: str, value: Any) -> None:
        key = _check_key(type(self).__name__, key)  # the key first: errors name a valid key
        self._data[key] = self._convert(key, value)

    def __getitem__(self, key: str) -> _V:
        return self._data[key]

    def __delitem__(self, key: str) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def items(self) -> ItemsView[str, _V]:
        """The (key, value) pairs, in insertion order: a view of the record's own dict."""
        # The dict's view, not MutableMapping's: ~0.5 us less per call, which the codec pays
        # for every record it encodes.
        return self._data.items()

    @classmethod
    def from_checked(cls, data: dict[str, _V]) -> Self:
        """A record holding ``data`` itself (not a copy), with no check of its keys or values.

        For code that checked every key and value already (the codec's decoder); everyone
        else builds records with the constructor, which checks.
        """
        record = object.__new__(cls)
        record._data = data
        return record

    def __eq__(self, other: object) -> bool:
        """Equal to a record of the same kind, or a ``dict``, holding equal items (any order).

        Values compare as they are stored: a tuple given to the constructor is held as a list
        (so equals the list, not the tuple), a NumPy scalar as the Python value it holds. A
        NumPy array or torch tensor in the dict equals no value (an ``ArrayRecord`` compares
        its arrays itself).
        """
        if type(other) is type(self):
            assert isinstance(other, _Record)
            return self._data == other._data
        if isinstance(other, dict):
            return self._data.keys() == other.keys() and all(
                _same_value(value, other[key]) for key, value in self._data.items()
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable container: not hashable

    def copy(self) -> Self:
        """A shallow copy: a new record holding the same values (arrays share their buffers)."""
        clone = object.__new__(type(self))
        clone._data = dict(self._data)
        return clone

    def __copy__(self) -> Self:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        clone = object.__new__(type(self))
        memo[id(self)] = clone
        clone._data = copy.deepcopy(self._data, memo)
        return clone

    def __repr__(self) -> str:
        entries = [f"{key!r}: {_short_repr(value)}" for key, value in self._data.items()]
        if len(entries) > _REPR_ITEMS:
            entries[_REPR_ITEMS:] = [f"... {len(entries) - _REPR_ITEMS} more"]
        return f"{type(self).__name__}({{{', '.join(entries)}}})"


def _same_value(mine: object, theirs: object) -> bool:
    """Whether a record's value equals a plain dict's value, always as a bool."""
    theirs = _normalise_scalar(theirs)  # a NumPy scalar compares as the value a record holds
    if isinstance(theirs, np.ndarray) or is_torch_tensor(theirs):
        return False  # its == is elementwise: never a record's value
    return bool(mine == theirs)


def _utf8_length(text: str) -> int:
    if text.isascii():
        return len(text)  # no encoding needed: the common case for keys
    # surrogatepass: a lone surrogate counts its 3 bytes instead of raising
    return len(text.encode("utf-8", "surrogatepass"))


def _value_bytes(value: Any) -> int:
    """Bytes of a MetricRecord or ConfigRecord value's data, as it travels on the wire."""
    if isinstance(value, PackedList):
        if value.item_type is str or value.item_type is bytes:
            # ``data`` holds a 4-byte length before each item: not the items' own bytes.
            return value.data.nbytes - 4 * len(value)
        return value.data.nbytes  # 8 bytes per int or float, 1 per bool
    if isinstance(value, list):
        return sum(_value_bytes(item) for item in value)
    if type(value) is bool:
        return 1
    if type(value) is str:
        return _utf8_length(value)
    if type(value) is bytes:
        return len(value)
    return 8  # int and float travel as 64 bits


def _scalar_record_bytes(data: dict[str, Any]) -> int:
    return sum(_utf8_length(key) + _value_bytes(value) for key, value in data.items())


def _scalar_kind(value: object, allowed: tuple[type, ...]) -> type | None:
    """The accepted scalar type of ``value`` (bool before int: bool is a subclass of int)."""
    for kind in allowed:
        if type(value) is kind:
            return kind
    return None


# Built once: a union written inside the function is a new object on every call, and every
# value stored in a record passes here.
_PLAIN_SCALARS = frozenset({int, float, str, bool, bytes})
_NUMPY_SCALARS = (np.bool_, np.integer, np.floating, np.str_, np.bytes_)


def _normalise_scalar(value: Any) -> Any:
    """NumPy scalars (e.g. a loss computed as np.float32) become the Python value they hold."""
    if type(value) in _PLAIN_SCALARS:
        return value
    if isinstance(value, _NUMPY_SCALARS):
        return value.item()
    return value


def _check_scalar(
    owner: str, key: str, value: Any, allowed: tuple[type, ...], in_list: bool = False
) -> Any:
    value = _normalise_scalar(value)
    kind = _scalar_kind(value, allowed)
    if kind is None:
        names = " | ".join(t.__name__ for t in allowed)
        given = f"a list holding {type(value).__name__}" if in_list else type(value).__name__
        raise InvalidTypeError(
            f"{owner} key {key!r}: expected {names} or a list of one of them, got {given}"
        )
    if kind is int and not _INT64_MIN <= value <= _INT64_MAX:
        raise InvalidArgumentError(
            f"{owner} key {key!r}: int {value} does not fit in 64 bits "
            f"(expected {_INT64_MIN} to {_INT64_MAX}); store it as a float or a str"
        )
    return value


def _check_value(owner: str, key: str, value: Any, allowed: tuple[type, ...]) -> Any:
    if type(value) is float and float in allowed:
        return value  # the common case (losses, rates), settled without further checks
    if type(value) in _PLAIN_SCALARS:
        return _check_scalar(owner, key, value, allowed)
    if isinstance(value, list | tuple):
        items = [_check_scalar(owner, key, item, allowed, in_list=True) for item in value]
        kinds = {type(item) for item in items}
        if len(kinds) > 1:
            found = ", ".join(sorted(k.__name__ for k in kinds))
            raise InvalidTypeError(
                f"{owner} key {key!r}: a list must hold values of one type, got a mix of {found}"
            )
        return items
    # Tested after lists: isinstance with an ABC costs ~0.1 us.
    if isinstance(value, PackedList):
        # Read-only and homogeneous by construction: its item type is the whole check.
        if value.item_type not in allowed:
            names = " | ".join(t.__name__ for t in allowed)
            raise InvalidTypeError(
                f"{owner} key {key!r}: expected {names} or a list of one of them, "
                f"got a {type(value).__name__} of {value.item_type.__name__}"
            )
        return value
    return _check_scalar(owner, key, value, allowed)  # a NumPy scalar, or refused


class MetricRecord(_Record[MetricValue]):
    """Named metrics: int | float values, or homogeneous lists of them (bool is refused).

    A list value may also be a ``PackedList`` of int or float, held as it is. Records decoded
    by ``decode_message`` hold lists of 64 items or more as read-only ``PackedNumbers``
    (views into the frame), shorter ones as ``list``: index, slice, iterate and compare them
    as lists, call ``tolist()`` for a list to change, and test for a list value with
    ``isinstance(value, list | PackedList)``.

    >>> MetricRecord({"loss": 0.25, "num_examples": 64})
    MetricRecord({'loss': 0.25, 'num_examples': 64})
    >>> MetricRecord({"loss": 0.25}) == {"loss": 0.25}
    True
    """

    __slots__ = ()

    def _convert(self, key: str, value: Any) -> MetricValue:
        return _check_value("MetricRecord", key, value, (int, float))  # type: ignore[no-any-return]

    def count_bytes(self) -> int:
        """The bytes of this record's keys and values: what its data takes, not its framing.

        A key counts its UTF-8 length; an int or a float 8 bytes (they travel as 64-bit
        numbers), and a list 8 bytes per item.

        >>> MetricRecord({"loss": 0.5, "steps": [1, 2, 3]}).count_bytes()  # 4+8 + 5+24
        41
        """
        return _scalar_record_bytes(self._data)


class ConfigRecord(_Record[ConfigValue]):
    """Named settings: int | float | str | bytes | bool, or homogeneous lists of one of them.

    A list value may also be a ``PackedList``, held as it is. Records decoded by
    ``decode_message`` hold lists of 64 items or more as read-only packed lists
    (``PackedNumbers`` of int, float or bool; ``PackedStrings`` of str or bytes, which make
    an item a ``str`` or ``bytes`` when it is read), shorter ones as ``list``: index, slice,
    iterate and compare them as lists, call ``tolist()`` for a list to change, and test for a
    list value with ``isinstance(value, list | PackedList)``.

    >>> ConfigRecord({"lr": 0.1, "local_epochs": 2, "optimizer": "sgd"})["optimizer"]
    'sgd'
    >>> ConfigRecord({"optimizer": "sgd"}) == {"optimizer": "sgd"}
    True
    """

    __slots__ = ()

    def _convert(self, key: str, value: Any) -> ConfigValue:
        return _check_value(  # type: ignore[no-any-return]
            "ConfigRecord", key, value, (bool, int, float, str, bytes)
        )

    def count_bytes(self) -> int:
        """The bytes of this record's keys and values: what its data takes, not its framing.

        A key counts its UTF-8 length; an int or a float 8 bytes (they travel as 64-bit
        numbers), a bool 1, a str its UTF-8 length, bytes their length, and a list the sum of
        its items.

        >>> ConfigRecord({"lr": 0.1, "opt": "sgd", "tags": ["a", "bc"]}).count_bytes()
        23
        """
        return _scalar_record_bytes(self._data)


class ArrayRecord(_Record[Array]):
    """Ordered named arrays, held without copying where the input allows it.

    Build it from a list (or any iterable) of arrays (keys ``"0"``, ``"1"``, ...), from a dict
    of arrays, from (name, array) pairs such as ``state_dict.items()``, or from a torch
    ``state_dict``; values may be NumPy arrays, torch tensors or ``Array``.
    ``from_numpy_ndarrays`` and ``from_torch_state_dict`` say which of these is meant, and
    ``to_numpy_ndarrays`` and ``to_torch_state_dict`` give the arrays back.

    Equality compares names, order and bytes: two records are equal when they hold the same
    names in the same order, and arrays of the same dtype, shape and bytes under each name
    (so a NaN equals the same NaN, and ``-0.0`` differs from ``0.0``). A ``dict`` of NumPy
    arrays, torch tensors or ``Array`` compares the same way, as the record built from it
    would: ``ArrayRecord(d) == d`` holds for every dict ``d`` the constructor accepts, and a
    dict with the same arrays in another order is not equal. A value that no ``Array`` can
    hold (a list, a complex array) equals nothing in the record.

    >>> import numpy as np
    >>> record = ArrayRecord({"w": np.zeros((2, 2), dtype=np.float32)})
    >>> record
    ArrayRecord({'w': Array(float32, (2, 2))})
    >>> record == {"w": np.zeros((2, 2), dtype=np.float32)}
    True
    >>> record == {"w": np.zeros((2, 2), dtype=np.float64)}  # another dtype
    False
    >>> record.count_bytes()  # 16 bytes of float32 data and the 1-byte key
    17
    """

    __slots__ = ()

    @overload
    def __init__(self, arrays: None = None) -> None: ...
    @overload
    def __init__(self, arrays: Mapping[str, Any]) -> None: ...
    @overload
    def __init__(self, arrays: Iterable[Any]) -> None: ...

    def __init__(self, arrays: Mapping[str, Any] | Iterable[Any] | None = None) -> None:
        if arrays is None or isinstance(arrays, Mapping):
            super().__init__(arrays)
            return
        if isinstance(arrays, np.ndarray | Array) or is_torch_tensor(arrays):
            raise InvalidTypeError(
                "ArrayRecord: expected a list or dict of arrays, got a single array; "
                "wrap it: ArrayRecord([array])"
            )
        if isinstance(arrays, str | bytes) or not isinstance(arrays, Iterable):
            raise InvalidTypeError(
                "ArrayRecord: expected a list or dict of arrays, or (name, array) pairs, "
                f"got {type(arrays).__name__}"
            )
        items = list(arrays)  # an iterator can be read only once
        if items and all(_is_named_pair(item) for item in items):
            super().__init__(items)
        else:
            super().__init__((str(index), value) for index, value in enumerate(items))

    @classmethod
    def from_numpy_ndarrays(cls, ndarrays: Iterable[np.ndarray[Any, Any]]) -> Self:
        """A record of ``ndarrays`` under the keys ``"0"``, ``"1"``, ... in their order.

        The arrays are held without copying when they are C-contiguous and little-endian (the
        usual case); other layouts are copied once. ``to_numpy_ndarrays`` gives them back.

        Raises ``InvalidTypeError`` naming the index and type of an item that is not a
        ``numpy.ndarray``, or of one whose dtype records cannot hold.

        >>> import numpy as np
        >>> record = ArrayRecord.from_numpy_ndarrays([np.ones(2), np.zeros((1, 3))])
        >>> record
        ArrayRecord({'0': Array(float64, (2,)), '1': Array(float64, (1, 3))})
        >>> [array.shape for array in record.to_numpy_ndarrays()]
        [(2,), (1, 3)]
        """
        where = "ArrayRecord.from_numpy_ndarrays"
        if isinstance(ndarrays, np.ndarray):
            raise InvalidTypeError(
                f"{where}: expected a list of numpy.ndarray, got a single array; wrap it: [array]"
            )
        if isinstance(ndarrays, Mapping | str | bytes) or not isinstance(ndarrays, Iterable):
            hint = (
                "; for named arrays use ArrayRecord(dict)" if isinstance(ndarrays, Mapping) else ""
            )
            raise InvalidTypeError(
                f"{where}: expected a list of numpy.ndarray, got {type(ndarrays).__name__}{hint}"
            )
        data: dict[str, Array] = {}
        for index, value in enumerate(ndarrays):
            if not isinstance(value, np.ndarray):
                raise InvalidTypeError(
                    f"{where}: item {index}: expected numpy.ndarray, got {type(value).__name__}"
                )
            data[str(index)] = _wrap(f"{where}: item {index}", value)
        return cls.from_checked(data)

    @classmethod
    def from_torch_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> Self:
        """A record of a torch ``state_dict``: the same names, in the same order.

        Every tensor is detached and held as a CPU array. A dense CPU tensor is shared, not
        copied: changing the model in place afterwards changes the record too (use
        ``copy.deepcopy(record)`` for a snapshot). A tensor on an accelerator is copied to the
        CPU. Needs PyTorch (``pip install 'fedbus[torch]'``), imported only when called.

        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> ArrayRecord.from_torch_state_dict(model.state_dict())
        ArrayRecord({'weight': Array(float32, (2, 3)), 'bias': Array(float32, (2,))})
        """
        where = "ArrayRecord.from_torch_state_dict"
        torch = _torch_module(where)
        if not isinstance(state_dict, Mapping):
            raise InvalidTypeError(
                f"{where}: expected a state_dict (a mapping of names to torch.Tensor), "
                f"got {type(state_dict).__name__}"
            )
        data: dict[str, Array] = {}
        for key, value in state_dict.items():
            key = _check_key(where, key)
            if not isinstance(value, torch.Tensor):
                raise InvalidTypeError(
                    f"{where}: key {key!r}: expected torch.Tensor, got {type(value).__name__}"
                )
            data[key] = _wrap(f"{where}: key {key!r}", value)
        return cls.from_checked(data)

    def _convert(self, key: str, value: Any) -> Array:
        if isinstance(value, Array):
            return value
        if isinstance(value, np.ndarray) or is_torch_tensor(value):
            return Array(value)
        raise InvalidTypeError(
            f"ArrayRecord key {key!r}: expected numpy.ndarray, torch.Tensor or fedbus.Array, "
            f"got {type(value).__name__}"
        )

    def __eq__(self, other: object) -> bool:
        """Equal to an ArrayRecord or a ``dict`` with the same names, in the same order, and
        arrays of the same dtype, shape and bytes under each name."""
        if type(other) is type(self):
            assert isinstance(other, ArrayRecord)
            # Order matters: it is the order of to_numpy_ndarrays().
            return list(self._data.items()) == list(other._data.items())
        if isinstance(other, dict):
            return list(self._data) == list(other) and all(
                _same_array(array, value)
                for array, value in zip(self._data.values(), other.values(), strict=True)
            )
        return NotImplemented

    def to_numpy_ndarrays(self) -> list[np.ndarray[Any, Any]]:
        """The arrays in key order, as NumPy arrays sharing this record's memory.

        Arrays decoded from a message are read-only views; copy one before changing it.
        """
        return [array.numpy() for array in self._data.values()]

    def to_numpy_dict(self) -> dict[str, np.ndarray[Any, Any]]:
        """The arrays by name, as NumPy arrays sharing this record's memory."""
        return {key: array.numpy() for key, array in self._data.items()}

    def to_torch_state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """The arrays as a torch ``state_dict``: an ``OrderedDict`` of CPU tensors, in order.

        A tensor is a view of the record's array when that array is writable (a record built
        from your own arrays or tensors): no copy is made, and changing one changes the other.
        Arrays decoded from a message are read-only, and a tensor must be writable, so those
        are copied: independent tensors. ``model.load_state_dict`` copies the values into the
        model either way; call ``.clone()`` on a tensor to keep an independent one. Needs
        PyTorch (``pip install 'fedbus[torch]'``), imported only when called.
        """
        _torch_module("ArrayRecord.to_torch_state_dict")
        return OrderedDict((key, array.torch()) for key, array in self._data.items())

    def count_bytes(self) -> int:
        """The bytes of this record's keys and arrays: what its data takes, not its framing.

        Each array counts its data (``Array.nbytes``: no header), each key its UTF-8 length.
        """
        return sum(_utf8_length(key) + array.nbytes for key, array in self._data.items())


def _wrap(where: str, value: np.ndarray[Any, Any] | torch.Tensor) -> Array:
    """``Array(value)``, with ``where`` (the item) named in the error if it is refused."""
    try:
        return Array(value)
    except (InvalidTypeError, InvalidArgumentError) as exc:
        raise type(exc)(f"{where}: {exc}") from exc


def _same_array(array: Array, value: object) -> bool:
    """Whether ``value`` holds the same dtype, shape and bytes as ``array``."""
    if isinstance(value, Array):
        return array == value
    if isinstance(value, np.ndarray) or is_torch_tensor(value):
        try:
            return array == Array(value)
        except (InvalidTypeError, InvalidArgumentError):
            return False  # a dtype or rank no Array holds: equal to none
    return False


def _is_named_pair(item: object) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


Record: TypeAlias = ArrayRecord | MetricRecord | ConfigRecord
_RECORD_TYPES = (ArrayRecord, MetricRecord, ConfigRecord)
_R = TypeVar("_R", ArrayRecord, MetricRecord, ConfigRecord)


class _TypedView(MutableMapping[str, _R]):
    """A live view of the records of one kind inside a RecordDict."""

    __slots__ = ("_kind", "_owner")

    def __init__(self, owner: RecordDict, kind: type[_R]) -> None:
        self._owner: RecordDict = owner
        self._kind: type[_R] = kind

    def __getitem__(self, key: str) -> _R:
        value = self._owner._data.get(key)
        if not isinstance(value, self._kind):
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: _R) -> None:
        if not isinstance(value, self._kind):
            raise InvalidTypeError(
                f"RecordDict key {key!r}: this view holds {self._kind.__name__}, "
                f"got {type(value).__name__}"
            )
        present = self._owner._data.get(key)
        if present is not None and not isinstance(present, self._kind):
            # Replacing it here would silently remove it from another view.
            raise InvalidArgumentError(
                f"RecordDict key {key!r} holds a {type(present).__name__}, not a "
                f"{self._kind.__name__}; delete it from the RecordDict first"
            )
        self._owner[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:  # a key of another kind is not in this view
            raise KeyError(key)
        del self._owner[key]

    def __iter__(self) -> Iterator[str]:
        return (key for key, value in self._owner.items() if isinstance(value, self._kind))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{dict(self.items())!r}"


class RecordDict(_Record[Record]):
    """A message's content: names -> ArrayRecord | MetricRecord | ConfigRecord.

    ``array_records``, ``metric_records`` and ``config_records`` are live views of one kind.

    >>> content = RecordDict({"metrics": MetricRecord({"accuracy": 0.9})})
    >>> list(content.metric_records), list(content.array_records)
    (['metrics'], [])

    It equals a ``dict`` of equal records, and since each record equals a ``dict`` of its
    items, a dict of dicts with those items too:

    >>> content == {"metrics": {"accuracy": 0.9}}
    True
    """

    __slots__ = ()

    def _convert(self, key: str, value: Any) -> Record:
        if isinstance(value, _RECORD_TYPES):
            return value
        raise InvalidTypeError(
            f"RecordDict key {key!r}: expected ArrayRecord, MetricRecord or ConfigRecord, "
            f"got {type(value).__name__}"
        )

    @property
    def array_records(self) -> MutableMapping[str, ArrayRecord]:
        """The ArrayRecords in this RecordDict (a live view)."""
        return _TypedView(self, ArrayRecord)

    @property
    def metric_records(self) -> MutableMapping[str, MetricRecord]:
        """The MetricRecords in this RecordDict (a live view)."""
        return _TypedView(self, MetricRecord)

    @property
    def config_records(self) -> MutableMapping[str, ConfigRecord]:
        """The ConfigRecords in this RecordDict (a live view)."""
        return _TypedView(self, ConfigRecord)

    def count_bytes(self) -> int:
        """The bytes of all its records (``count_bytes()`` of each) and of their names.

        >>> import numpy as np
        >>> content = RecordDict({
        ...     "model": ArrayRecord({"w": np.zeros(4, dtype=np.float32)}),  # 1 + 16
        ...     "metrics": MetricRecord({"loss": 0.5}),                       # 4 + 8
        ... })
        >>> content.count_bytes()  # and the names: "model" 5, "metrics" 7
        41
        """
        return sum(_utf8_length(key) + record.count_bytes() for key, record in self._data.items())

    def copy(self) -> Self:
        """A new RecordDict holding copies of the records; arrays share their buffers."""
        clone = object.__new__(type(self))
        clone._data = {key: record.copy() for key, record in self._data.items()}
        return clone
