"""Messages and their content: the lowest layer of fedbus, importing nothing else of it.

``message`` holds ``Message``, ``Metadata`` and ``Error``; ``records`` and ``array`` the typed
content, and ``packed`` the read-only lists that long list values decode to; ``clock`` the
replaceable clock that stamps ``created_at``; ``codec`` the binary format that carries a whole
message between processes.
"""

from fedbus.message.array import DTYPE_NAMES, MAX_RANK, Array
from fedbus.message.clock import now, use_clock
from fedbus.message.codec import DecodeLimits, decode_message, encode_message, encoded_size
from fedbus.message.message import (
    DEFAULT_TTL,
    UNSET_NODE_ID,
    Error,
    ErrorCode,
    Message,
    Metadata,
    check_message_type,
    mark_sent,
)
from fedbus.message.packed import PackedList, PackedNumbers, PackedStrings
from fedbus.message.records import ArrayRecord, ConfigRecord, MetricRecord, Record, RecordDict

__all__ = [
    "DEFAULT_TTL",
    "DTYPE_NAMES",
    "MAX_RANK",
    "UNSET_NODE_ID",
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "DecodeLimits",
    "Error",
    "ErrorCode",
    "Message",
    "Metadata",
    "MetricRecord",
    "PackedList",
    "PackedNumbers",
    "PackedStrings",
    "Record",
    "RecordDict",
    "check_message_type",
    "decode_message",
    "encode_message",
    "encoded_size",
    "mark_sent",
    "now",
    "use_clock",
]
