"""What a compression method is: a ``Codec`` for one array, and the registry of codecs by name.

A codec turns one float array into a few payload arrays (``Encoded.parts``) and two numbers
(``Encoded.offset``, ``Encoded.scale``), and back. It knows nothing of messages: ``wire`` puts
the payloads of a whole model into a message, with a header that says how to read them, and
``mods`` does that on the way out of a node and undoes it on the way in.

Decoding reads what another node sent, so a codec's ``decode`` trusts nothing but the ``dtype``
and ``shape`` it is given (``wire`` has bounded and checked them already): every payload's
dtype, length and values are checked, and anything that does not fit raises ``DecodeError``
before memory is spent on it.

A new method is one module that subclasses ``Codec`` and registers it::

    class Halve(Codec):
        name = "float16"
        lossy = True

        def encode(self, values, rng):
            return Encoded({"": values.astype(np.float16)})

        def decode(self, encoded, dtype, shape):
            half = payload(encoded, "", np.float16, math.prod(shape))
            return half.astype(dtype).reshape(shape)

    register_codec("float16", lambda options: Halve())
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedbus.errors import DecodeError, PluginError
from fedbus.plugins import Registry

__all__ = [
    "CODECS",
    "Codec",
    "CodecOptions",
    "Encoded",
    "MethodNames",
    "build_codec",
    "codec_names",
    "decoder",
    "payload",
    "register_codec",
]

AnyArray = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class Encoded:
    """One array compressed: payload arrays by part name, and two numbers for the header.

    ``offset`` and ``scale`` mean what the codec says (the quantisers: the smallest value and
    the step between levels); codecs that need neither leave them 0.
    """

    parts: dict[str, AnyArray]
    offset: float = 0.0
    scale: float = 0.0


@dataclass(frozen=True, slots=True)
class CodecOptions:
    """The settings of ``[compression]`` a codec may read when it is built."""

    topk_ratio: float = 0.01
    zstd_level: int = 3


class Codec(ABC):
    """Compresses one float array and restores it.

    Attributes
    ----------
    name
        The method's name, as the header and ``compression.method`` spell it.
    parts
        Names of the payload arrays ``encode`` returns (``""`` when there is one).
    lossy
        True when ``decode(encode(x))`` only approximates ``x``: such a codec compresses a
        client's update (trained minus received), never raw weights it could not restore.
    error_feedback
        Keep what was not sent on each client and add it to the next update (top-k).
    downstream
        May compress the model the server sends (top-k of a model would zero most weights).
    """

    name: ClassVar[str]
    parts: ClassVar[tuple[str, ...]] = ("",)
    lossy: ClassVar[bool]
    error_feedback: ClassVar[bool] = False
    downstream: ClassVar[bool] = True

    @abstractmethod
    def encode(self, values: AnyArray, rng: np.random.Generator) -> Encoded:
        """Compress ``values`` (a float array; finite for a lossy codec)."""

    @abstractmethod
    def decode(self, encoded: Encoded, dtype: np.dtype[Any], shape: tuple[int, ...]) -> AnyArray:
        """The array of ``dtype`` and ``shape`` that ``encoded`` holds.

        ``encoded`` came from another node: raise ``DecodeError`` for anything that does not fit.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: ``build(options) -> Codec`` for each method a configuration may name; plugin packages add
#: theirs through the ``fedbus.codecs`` entry point group, as they add strategies.
CODECS: Registry[Callable[[CodecOptions], Codec]] = Registry(
    "compression method", group="fedbus.codecs", builtins=("fedbus.fl.compression",)
)
_DECODERS: dict[str, Codec] = {}


def register_codec(name: str, build: Callable[[CodecOptions], Codec]) -> None:
    """Make the codec ``build`` makes available as ``compression.method = name``.

    Raises
    ------
    PluginError
        ``name`` is taken (by another module, or by ``none`` and ``raw``).
    """
    if name in ("none", "raw"):
        raise PluginError(f"register_codec: {name!r} is a reserved name")
    CODECS.register(name, build, module=build.__module__)


def codec_names() -> tuple[str, ...]:
    """Every registered method (plugins' included), sorted."""
    return CODECS.names()


def build_codec(name: str, options: CodecOptions | None = None) -> Codec:
    """The codec ``name`` with ``options``.

    Raises
    ------
    PluginError
        ``name`` is not known (the message lists the known methods).
    """
    return CODECS.get(name)(CodecOptions() if options is None else options)


def decoder(name: str) -> Codec:
    """The codec that reads ``name``'s payloads (settings only matter when encoding).

    Raises ``DecodeError``: the name came from another node.
    """
    codec = _DECODERS.get(name)
    if codec is None:
        if name not in CODECS:
            raise DecodeError(
                f"unknown compression method {name[:40]!r}; this node reads "
                f"{', '.join(CODECS.names())}"
            )
        codec = _DECODERS[name] = build_codec(name)
    return codec


class MethodNames:
    """The names ``compression.method`` accepts: ``none`` and every codec (a ``NameSource``)."""

    kind = "compression method"

    def names(self) -> tuple[str, ...]:
        """``none`` and every registered method, plugins' included."""
        return ("none", *CODECS.names())

    def builtin_names(self) -> tuple[str, ...]:
        """``none`` and fedbus's own methods."""
        return ("none", *CODECS.builtin_names())

    def unknown(self, name: str) -> str:
        """The message for a method nobody registered."""
        return f"compression method {name!r} is not known; known: {', '.join(self.names())}"


def payload(encoded: Encoded, part: str, dtype: Any, length: int) -> AnyArray:
    """The payload array ``part`` of ``encoded``, checked: 1-d, of ``dtype``, ``length`` long."""
    values = encoded.parts[part]
    want = np.dtype(dtype)
    if values.dtype != want or values.ndim != 1 or values.shape[0] != length:
        raise DecodeError(
            f"payload {part or 'values'!r}: expected {length} values of {want.name}, got "
            f"{values.dtype.name} of shape {values.shape}"
        )
    return values


def check_count(what: str, count: int, limit: int) -> int:
    """``count`` if ``0 <= count <= limit``, else ``DecodeError``."""
    if not 0 <= count <= limit:
        raise DecodeError(f"{what}: {count} is out of range 0..{limit}")
    return count


def size_of(shape: tuple[int, ...]) -> int:
    """Elements of an array of ``shape``."""
    return math.prod(shape)
