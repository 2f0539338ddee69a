"""Compression of the models nodes send: stochastic quantisation, top-k, Zstandard.

- ``int8``, ``int4`` (``quantize``): unbiased stochastic rounding to 256 or 16 levels per array.
- ``topk`` (``topk``): the largest values of each array of an update, with error feedback.
- ``zstd`` (``lossless``): Zstandard on the bits, exact.

``CompressionMod`` (``mods``) applies one of them on the server and the clients; the
``[compression]`` section of a configuration installs it (docs/compression.md). ``wire`` is the
format in a message; ``base`` the ``Codec`` interface a new method implements in one module.
"""

from fedbus.fl.compression.base import (
    CODECS,
    Codec,
    CodecOptions,
    Encoded,
    MethodNames,
    build_codec,
    codec_names,
    register_codec,
)
from fedbus.fl.compression.lossless import Zstd
from fedbus.fl.compression.mods import DIRECTIONS, RESIDUAL, CompressionMod
from fedbus.fl.compression.quantize import Int4, Int8, StochasticQuantizer
from fedbus.fl.compression.topk import TopK
from fedbus.fl.compression.wire import (
    COMPRESSED,
    COMPRESSION,
    Compressed,
    compress,
    compress_content,
    decompress,
    decompress_content,
    is_compressed,
)

__all__ = [
    "CODECS",
    "COMPRESSED",
    "COMPRESSION",
    "DIRECTIONS",
    "RESIDUAL",
    "Codec",
    "CodecOptions",
    "Compressed",
    "CompressionMod",
    "Encoded",
    "Int4",
    "Int8",
    "MethodNames",
    "StochasticQuantizer",
    "TopK",
    "Zstd",
    "build_codec",
    "codec_names",
    "compress",
    "compress_content",
    "decompress",
    "decompress_content",
    "is_compressed",
    "register_codec",
]
