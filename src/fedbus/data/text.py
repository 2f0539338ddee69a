"""Text for causal language models: a UTF-8 file cut into blocks of token ids.

A text dataset is an ``ArrayDataset`` like any other, held by a ``PartitionedDataset``, so the
clients' train/test splits and everything downstream apply unchanged: each row of ``x`` is one
block of ``block_size`` token ids (stored as ``float32``, exact for ids below 2**24), and its
label ``y`` is the token that follows the block. A causal language model reads the block and
predicts every next token, the last one being ``y``, so no token of the text is wasted between
blocks. ``split_text`` holds out random blocks for the central test set and divides the rest
(iid, or contiguous shards of the text); it does not stratify by label, as a block's label is
only its next token.

Two tokenizers:

- ``"bytes"``: the UTF-8 bytes of the text, 256 ids. It needs nothing installed and gives the
  same ids on every client whatever text it holds, which a vocabulary built from one file's
  characters would not.
- a Hugging Face tokenizer (``load_tokenizer``): the model's own, for a pretrained model.

Examples
--------
>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.txt"
>>> _ = path.write_text("abcdefghij", encoding="utf-8")
>>> data = load_text(path, block_size=3)
>>> data.x.astype(int).tolist(), data.y.tolist(), data.num_classes
([[97, 98, 99], [100, 101, 102], [103, 104, 105]], [100, 103, 106], 256)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from fedbus.data.base import FederatedDataset, check_fraction, check_seed
from fedbus.data.datasets import ArrayDataset
from fedbus.data.federated import PartitionedDataset
from fedbus.data.partition import iid, shards
from fedbus.data.registry import partition_options, register_dataset
from fedbus.errors import ConfigError, InvalidArgumentError, MissingDependencyError
from fedbus.plugins import Settings

__all__ = [
    "BYTE_TOKENIZER",
    "TOKENIZERS",
    "Tokenizer",
    "load_text",
    "load_tokenizer",
    "read_text",
    "split_text",
]

#: Values of ``data.tokenizer``: UTF-8 bytes, or the tokenizer of ``model.hf_model``.
TOKENIZERS = ("bytes", "model")

# Token ids travel as float32 features, which hold every integer below 2**24 exactly.
_LARGEST_VOCABULARY = 2**24


@dataclass(frozen=True, slots=True)
class Tokenizer:
    """Text to token ids.

    Attributes
    ----------
    name : str
        What it is, for messages.
    vocab_size : int
        Every id is below it.
    encode : callable
        ``encode(text) -> int ids`` (a sequence or an array).
    """

    name: str
    vocab_size: int
    encode: Callable[[str], ArrayLike]


def _utf8_bytes(text: str) -> NDArray[np.uint8]:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


#: The UTF-8 bytes of the text: 256 ids, the same on every client.
BYTE_TOKENIZER = Tokenizer("bytes", 256, _utf8_bytes)


def load_tokenizer(source: str, revision: str = "main") -> Tokenizer:
    """The Hugging Face tokenizer of a model: a local directory or a hub id (needs fedbus[llm]).

    No code from the model's repository runs (``trust_remote_code`` stays off).

    Raises
    ------
    MissingDependencyError
        ``transformers`` is not installed.
    ConfigError
        The tokenizer cannot be loaded; the message says from where.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise MissingDependencyError(
            "data.tokenizer = \"model\" needs Hugging Face transformers: pip install 'fedbus[llm]'"
        ) from exc
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(source, revision=revision)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(
            f'data.tokenizer = "model": cannot load the tokenizer of {source!r} (revision '
            f"{revision!r}): {exc}; give model.hf_model a directory with the tokenizer's files, "
            'or use data.tokenizer = "bytes"'
        ) from exc

    def encode(text: str) -> Sequence[int]:
        ids: Sequence[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    return Tokenizer(f"the tokenizer of {source}", len(tokenizer), encode)


def read_text(path: str | os.PathLike[str]) -> str:
    """The whole file as text, refusing what is not UTF-8.

    Raises
    ------
    InvalidArgumentError
        The file cannot be read, or is not UTF-8 (the message gives the first bad byte's
        offset).
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read text file {os.fspath(path)!r}: {exc.strerror}"
        ) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(
            f"{os.fspath(path)}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start} is not valid UTF-8); save the file as UTF-8"
        ) from exc


def load_text(
    path: str | os.PathLike[str], block_size: int, tokenizer: Tokenizer = BYTE_TOKENIZER
) -> ArrayDataset:
    """Read a UTF-8 file and cut its tokens into blocks of ``block_size``.

    Row ``i`` of ``x`` holds tokens ``i * block_size .. (i + 1) * block_size - 1``; ``y[i]`` is
    the token after them. ``num_classes`` is the tokenizer's vocabulary size.

    Raises
    ------
    InvalidArgumentError
        The file cannot be read or is not UTF-8, ``block_size`` is below 2, a token id is out of
        the tokenizer's range, or the text does not make one block.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise InvalidArgumentError(f"block_size: expected an int >= 2, got {block_size!r}")
    if not 2 <= tokenizer.vocab_size <= _LARGEST_VOCABULARY:
        raise InvalidArgumentError(
            f"{tokenizer.name}: {tokenizer.vocab_size} token ids; fedbus takes 2 to 2**24"
        )
    tokens = np.asarray(tokenizer.encode(read_text(path)), dtype=np.int64)
    if len(tokens) and not 0 <= tokens.min() <= tokens.max() < tokenizer.vocab_size:
        raise InvalidArgumentError(
            f"{tokenizer.name} gave token ids outside 0..{tokenizer.vocab_size - 1}"
        )
    num_blocks = (len(tokens) - 1) // block_size if len(tokens) else 0
    if num_blocks == 0:
        raise InvalidArgumentError(
            f"{os.fspath(path)}: {len(tokens)} tokens do not make one block of {block_size} "
            f"tokens and the one after it; use a longer text or a smaller block size"
        )
    x = tokens[: num_blocks * block_size].reshape(num_blocks, block_size)
    y = tokens[block_size : num_blocks * block_size + 1 : block_size]
    return ArrayDataset(x.astype(np.float32), y, tokenizer.vocab_size)


def split_text(
    blocks: ArrayDataset,
    num_clients: int,
    partition: str = "iid",
    *,
    shards_per_client: int = 2,
    central_test_fraction: float = 0.2,
    client_test_fraction: float = 0.2,
    seed: int = 0,
) -> PartitionedDataset:
    """Hold out random blocks for the central test set, and divide the rest among clients.

    ``partition`` is ``"iid"`` (random blocks) or ``"shards"`` (each client gets
    ``shards_per_client`` contiguous stretches of the text: different documents for different
    clients). Labels play no part: the label of a block is only its next token.

    Raises
    ------
    InvalidArgumentError
        Another partition, or too few blocks for one per client plus one for the test set (the
        message gives the numbers).
    """
    if partition not in ("iid", "shards"):
        raise InvalidArgumentError(
            f'partition {partition!r} skews labels, and text blocks have none: use "iid" '
            '(random blocks) or "shards" (contiguous stretches of the text)'
        )
    fraction = check_fraction("central_test_fraction", central_test_fraction)
    rng = np.random.default_rng([check_seed(seed), 0])
    num_blocks = len(blocks)
    num_test = max(1, round(num_blocks * fraction))
    if num_blocks - num_test < num_clients:
        raise InvalidArgumentError(
            f"{num_blocks} blocks are too few for {num_clients} clients and a central test set "
            f"of {num_test} (central test fraction {fraction}): at least "
            f"{num_clients + num_test} needed"
        )
    order = rng.permutation(num_blocks)
    test, rest = np.sort(order[:num_test]), np.sort(order[num_test:])
    if partition == "iid":
        parts = iid(len(rest), num_clients, rng)
    else:  # blocks in text order are their own labels: each shard is a contiguous stretch
        parts = shards(np.arange(len(rest)), num_clients, shards_per_client, rng)
    client_indices = [rest[part] for part in parts]
    return PartitionedDataset(
        blocks, client_indices, test, client_test_fraction=client_test_fraction, seed=seed
    )


_SPLIT = frozenset(
    ("partition", "shards_per_client", "central_test_fraction", "client_test_fraction", "seed")
)


def _text(settings: Settings) -> FederatedDataset:
    """``data.dataset = "text"``: ``data.path`` in blocks of ``data.block_size`` tokens."""
    if settings["data.tokenizer"] == "model":
        if not settings["model.hf_model"]:
            raise ConfigError(
                'data.tokenizer = "model" needs model.hf_model, whose tokenizer it is'
            )
        tokenizer = load_tokenizer(settings["model.hf_model"], settings["model.hf_revision"])
    else:
        tokenizer = BYTE_TOKENIZER
    path, block_size = settings["data.path"], settings["data.block_size"]
    # split_text takes only iid and shards: the options of the other partitions stay out, and
    # split_text's own check names the two it takes.
    options = {key: value for key, value in partition_options(settings).items() if key in _SPLIT}
    try:
        blocks = load_text(path, block_size, tokenizer)
        return split_text(blocks, settings["federation.num_clients"], **options)
    except InvalidArgumentError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f'data.dataset = "text" (data.path {path!r}, data.block_size = {block_size}, '
            f"data.partition = {settings['data.partition']!r}, federation.num_clients = "
            f"{settings['federation.num_clients']}): {exc}"
        ) from exc


register_dataset("text", _text, reads_file=True)
