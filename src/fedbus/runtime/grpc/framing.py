"""Transport frames: how one encoded message travels as a sequence of gRPC stream messages.

Every gRPC message on a fedbus stream is one *transport frame*: a fixed 24-byte header, then
a payload. Little-endian, like the codec::

    offset  size  field
    0       1     kind: 1 DATA, 2 HEARTBEAT, 3 GOODBYE
    1       1     flags: bit 0 set on the last chunk of a message; other bits 0
    2       2     reserved, 0
    4       4     sequence number of the message on this stream (DATA), else 0
    8       8     total length of the encoded message in bytes (DATA), else 0
    16      8     offset of this chunk's payload in the encoded message (DATA), else 0
    24      ...   payload: bytes [offset, offset + len) of the encoded message (DATA only)

A message of N bytes (``fedbus.message.codec``'s frame) is cut into chunks of at most
``chunk_size`` bytes, sent in order; a HEARTBEAT or GOODBYE carries no payload. The sender
holds the frame as parts (``encode_message_parts``): its arrays are read where they are, so
sending a model costs one copy per chunk as it is written, and nothing per recipient before.
The receiver allocates the whole message once, when its first chunk arrives, and copies each
chunk into place: reassembly is linear in N, never quadratic. A message the receiver directs
to a spill file (``Reassembler.into``) is written there chunk by chunk instead, and decoded
from the mapped file: its size is bounded by the disk, not by memory.

Every field is checked before it is trusted: an unknown kind or flag, a chunk out of order, a
payload larger than ``max_chunk_bytes`` or past the announced length, or a message longer than
``max_message_bytes`` raises ``DecodeError``, and the connection of that peer is closed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from fedbus.errors import DecodeError, InvalidArgumentError
from fedbus.message import Message
from fedbus.message.codec import encode_message_parts
from fedbus.message.spill import SpillFile

__all__ = [
    "DATA",
    "GOODBYE",
    "HEADER_SIZE",
    "HEARTBEAT",
    "Reassembler",
    "TransportLimits",
    "announced_size",
    "EncodedParts",
    "control_frame",
    "encode_for_stream",
    "encoded_length",
    "message_frames",
]

DATA: Final = 1
HEARTBEAT: Final = 2
GOODBYE: Final = 3
_KINDS = frozenset({DATA, HEARTBEAT, GOODBYE})
_LAST: Final = 0x01

_HEADER = struct.Struct("<BBHIQQ")
#: Bytes of the header that starts every transport frame.
HEADER_SIZE: Final = _HEADER.size

_MIB = 1 << 20

#: An encoded message as buffers whose concatenation is its frame.
EncodedParts = Sequence[memoryview]


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Sizes of what travels on a stream.

    Parameters
    ----------
    chunk_size
        Payload bytes per transport frame, 1 to 4 MiB. Default 1 MiB: larger chunks bring
        nothing on loopback and cost more memory per connection.
    max_message_bytes
        Largest encoded message accepted or sent. Default 64 GiB (a server holds what does
        not fit its memory budget in spill files).

    Examples
    --------
    >>> TransportLimits(chunk_size=2 << 20).max_frame_bytes
    2097176
    """

    chunk_size: int = _MIB
    max_message_bytes: int = 64 << 30

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_size, int) or not _MIB <= self.chunk_size <= 4 * _MIB:
            raise InvalidArgumentError(
                f"TransportLimits.chunk_size must be an int from 1 MiB to 4 MiB "
                f"({_MIB} to {4 * _MIB}), got {self.chunk_size!r}"
            )
        if not isinstance(self.max_message_bytes, int) or self.max_message_bytes < 1:
            raise InvalidArgumentError(
                f"TransportLimits.max_message_bytes must be an int >= 1, "
                f"got {self.max_message_bytes!r}"
            )

    @property
    def max_frame_bytes(self) -> int:
        """The largest gRPC message a stream carries: one header and one full chunk."""
        return HEADER_SIZE + self.chunk_size


def announced_size(frame: bytes) -> int:
    """The message length a frame announces if it is the first chunk of a message, else 0.

    Read before the frame is fed to a ``Reassembler`` (which checks everything), so that the
    receiver can reserve the memory first; a malformed header reads as 0.
    """
    if len(frame) < HEADER_SIZE:
        return 0
    kind, _, _, _, total, offset = _HEADER.unpack_from(frame)
    return int(total) if kind == DATA and offset == 0 else 0


def control_frame(kind: int) -> bytes:
    """A frame without payload: ``HEARTBEAT`` or ``GOODBYE``."""
    return _HEADER.pack(kind, 0, 0, 0, 0, 0)


def encode_for_stream(message: Message) -> EncodedParts:
    """Encode ``message`` for ``message_frames`` without copying its large arrays.

    The parts view the arrays themselves (see ``encode_message_parts``): a model broadcast to
    a thousand nodes is never copied a thousand times, only chunk by chunk as each stream is
    written. The rest of the frame lives in unzeroed memory (the encoder writes every byte it
    keeps; NumPy's ``empty`` maps pages only as they are written).
    """
    return encode_message_parts(message)


def encoded_length(encoded: EncodedParts) -> int:
    """Bytes of the frame the parts make up."""
    return sum(part.nbytes for part in encoded)


def message_frames(
    encoded: EncodedParts | bytes | bytearray | memoryview, sequence: int, chunk_size: int
) -> Iterator[bytes]:
    """Cut one encoded message (one buffer, or its parts in order) into DATA frames of at most
    ``chunk_size`` payload bytes.

    Each frame is one ``bytes`` object (gRPC sends bytes), built with a single copy of its
    chunk, which may span parts; frames are made lazily, so a message is never copied whole.
    """
    given = [encoded] if isinstance(encoded, bytes | bytearray | memoryview) else encoded
    parts = [view for view in (memoryview(part).cast("B") for part in given) if view.nbytes]
    total = sum(part.nbytes for part in parts)
    sequence &= 0xFFFFFFFF
    offset = index = within = 0  # the message's next byte: parts[index][within]
    while True:
        end = min(offset + chunk_size, total)
        flags = _LAST if end == total else 0
        pieces: list[bytes | memoryview] = [_HEADER.pack(DATA, flags, 0, sequence, total, offset)]
        needed = end - offset
        while needed:
            part = parts[index]
            taken = min(needed, part.nbytes - within)
            pieces.append(part[within : within + taken])
            needed -= taken
            within += taken
            if within == part.nbytes:
                index, within = index + 1, 0
        yield b"".join(pieces)
        if end == total:
            return
        offset = end


class Reassembler:
    """Rebuilds messages from the DATA frames of one stream, in order.

    ``feed`` returns the frame's kind and, for the last chunk of a message, the whole encoded
    message as a read-only buffer (for ``decode_message``); it raises ``DecodeError`` for any
    frame that breaks the layout. ``into`` sends the next message to a spill file instead of
    memory, ``skip`` has it read and dropped (it was refused), ``abandon`` drops a message in
    progress (its peer went).
    """

    __slots__ = (
        "_buffer", "_file", "_limits", "_next_file", "_offset", "_sequence", "_skip", "_skipping",
        "_total",
    )  # fmt: skip

    def __init__(self, limits: TransportLimits) -> None:
        self._limits = limits
        self._buffer: memoryview | None = None
        self._file: SpillFile | None = None
        self._next_file: SpillFile | None = None
        self._skip = self._skipping = False
        self._sequence = self._total = self._offset = 0

    @property
    def in_progress(self) -> bool:
        """True while a message has started and not ended."""
        return self._buffer is not None or self._file is not None or self._skipping

    def skip(self) -> None:
        """Read the next message's chunks in order, checked, and keep none of them."""
        if self.in_progress:
            raise InvalidArgumentError("Reassembler.skip: a message is in progress")
        self._skip = True

    def into(self, file: SpillFile) -> None:
        """Reassemble the next message in ``file`` (opened for its announced size)."""
        if self.in_progress:
            raise InvalidArgumentError("Reassembler.into: a message is in progress")
        self._next_file = file

    def abandon(self) -> None:
        """Drop the message in progress, if any, and a spill file waiting for the next one."""
        for file in (self._file, self._next_file):
            if file is not None:
                file.discard()
        self._buffer = self._file = self._next_file = None
        self._skip = self._skipping = False

    def feed(self, frame: bytes) -> tuple[int, memoryview | None]:
        """Take one transport frame; return (kind, the completed message or None)."""
        if len(frame) < HEADER_SIZE:
            raise DecodeError(
                f"transport frame of {len(frame)} bytes: the header alone is {HEADER_SIZE}"
            )
        kind, flags, reserved, sequence, total, offset = _HEADER.unpack_from(frame)
        if kind not in _KINDS or reserved or flags & ~_LAST:
            raise DecodeError(
                f"transport frame: unknown kind {kind}, flags {flags:#x} or reserved {reserved}"
            )
        if kind != DATA:
            if len(frame) != HEADER_SIZE or self.in_progress:
                raise DecodeError("transport frame: a control frame inside a message or with data")
            return kind, None
        payload = len(frame) - HEADER_SIZE
        if payload > self._limits.chunk_size:
            raise DecodeError(
                f"transport frame: {payload} payload bytes, more than the chunk size "
                f"{self._limits.chunk_size}"
            )
        if not self.in_progress:
            self._start(sequence, total, offset)
        elif (sequence, total, offset) != (self._sequence, self._total, self._offset):
            raise DecodeError(
                f"transport frame out of order: got message {sequence} bytes {offset}.. of "
                f"{total}, expected message {self._sequence} bytes {self._offset}.. of "
                f"{self._total}"
            )
        return DATA, self._append(frame, payload, bool(flags & _LAST))

    def _start(self, sequence: int, total: int, offset: int) -> None:
        if offset != 0:
            raise DecodeError(f"transport frame: message {sequence} starts at byte {offset}")
        if not 0 < total <= self._limits.max_message_bytes:
            raise DecodeError(
                f"transport frame: message {sequence} announces {total} bytes; this peer "
                f"accepts 1 to {self._limits.max_message_bytes} (max_message_bytes)"
            )
        self._sequence, self._total, self._offset = sequence, total, 0
        if self._skip:
            self._skip, self._skipping = False, True
            return
        file, self._next_file = self._next_file, None
        if file is not None:
            if file.size != total:
                file.discard()
                raise DecodeError(
                    f"transport frame: message {sequence} announces {total} bytes, its spill "
                    f"file was opened for {file.size}"
                )
            self._file = file
            return
        # np.empty maps the pages lazily: a peer that announces 4 GiB and sends 1 KiB costs
        # 1 KiB of memory, not 4 GiB (a zero-filled bytearray would touch every page).
        self._buffer = np.empty(total, dtype=np.uint8).data.cast("B")

    def _append(self, frame: bytes, payload: int, last: bool) -> memoryview | None:
        end = self._offset + payload
        if end > self._total or last != (end == self._total):
            raise DecodeError(
                f"transport frame: message {self._sequence} chunk ends at byte {end} of "
                f"{self._total} with the last-chunk flag {'set' if last else 'clear'}"
            )
        if self._skipping:
            if last:
                self._skipping = False
            self._offset = end
            return None
        if self._file is not None:
            self._file.write(memoryview(frame)[HEADER_SIZE:])  # SpillError: a full disk
        else:
            assert self._buffer is not None
            self._buffer[self._offset : end] = memoryview(frame)[HEADER_SIZE:]
        self._offset = end
        if not last:
            return None
        if self._file is not None:
            file, self._file = self._file, None
            return file.finish()
        buffer, self._buffer = self._buffer, None
        assert buffer is not None
        return buffer.toreadonly()
