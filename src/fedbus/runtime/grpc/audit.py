"""The server's audit log: who joined, who was refused, who left; one JSON object per line.

Each line is ``{"time": ISO 8601 UTC, "event": EVENT, ...fields}``, written and flushed at
once, so that a crash loses nothing already recorded. The server's events are ``EVENTS``;
fields are things like ``node_id``, ``name``, ``peer``, ``reason`` and ``fingerprint``.

What a log must never hold, it refuses to hold:

- secrets: a field whose name mentions a token, signature, challenge, secret, password or
  private key, and any bytes value, raise ``InvalidArgumentError`` with ``strict=True`` (tests,
  development) and are dropped otherwise, with a warning in the process log;
- floods: peers control some strings (a node name, a reason), so every string value is cut to
  ``MAX_FIELD_CHARS`` characters, and ``json`` escapes every control and non-ASCII character,
  so a value can never start a line of its own.

Examples
--------
>>> with AuditLog("audit.jsonl") as audit:  # doctest: +SKIP
...     audit.record("join", node_id=3, name="alice", peer="ipv4:10.0.0.7:50122")
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

from fedbus.errors import InvalidArgumentError, InvalidTypeError, RunError

__all__ = ["EVENTS", "MAX_FIELD_CHARS", "AuditLog", "read_audit"]

logger = logging.getLogger(__name__)

#: The events the gRPC server records.
EVENTS: Final = ("join", "refused", "revoked", "reconnect", "leave")
#: Longest string value written; longer ones end with "…" in the log.
MAX_FIELD_CHARS: Final = 256

_SECRET_WORDS = ("token", "signature", "challenge", "secret", "password", "private")
_RESERVED = frozenset({"time", "event"})
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_DROP: Final = object()  # what _checked returns for a field left out


class AuditLog:
    """Appends audit events to ``path`` as JSON lines; ``AuditLog(None)`` records nothing.

    Parameters
    ----------
    path
        The log file, created with mode 0600 when missing and appended to otherwise; None for
        in-process runs that keep no log.
    strict
        Raise on a secret field instead of dropping it: for tests and development.

    Thread-safe: every ``record`` writes one whole line.
    """

    def __init__(self, path: str | Path | None, *, strict: bool = False) -> None:
        self._path = None if path is None else Path(path)
        self._strict = strict
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if self._path is not None:
            try:
                descriptor = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                raise InvalidArgumentError(
                    f"cannot open the audit log {str(self._path)!r}: {exc.strerror}"
                ) from exc
            self._file = os.fdopen(descriptor, "a", encoding="utf-8", buffering=1)

    @property
    def path(self) -> Path | None:
        """The log file, or None."""
        return self._path

    def record(self, event: str, **fields: object) -> None:
        """Append one event with its fields.

        The fields are checked even without a file, so that in-process runs catch a secret
        field too; without a file, or once closed, nothing is written.
        """
        if not isinstance(event, str):
            raise InvalidTypeError(f"an audit event is a str, got {type(event).__name__}")
        if _NAME.fullmatch(event) is None:
            raise InvalidArgumentError(f"an audit event is a lower-case word, got {event[:64]!r}")
        line: dict[str, object] = {"time": _now(), "event": event}
        for name, value in fields.items():
            if value is None:  # a field that does not apply to this event is left out
                continue
            kept = self._checked(name, value)
            if kept is not _DROP:
                line[name] = kept
        if self._path is None:
            return
        text = json.dumps(line, ensure_ascii=True, allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                logger.warning("audit log %s is closed: %s event not recorded", self._path, event)
                return
            try:
                self._file.write(text)
                self._file.flush()
            except OSError as exc:
                raise RunError(
                    f"cannot write the audit log {str(self._path)!r}: {exc.strerror}"
                ) from exc

    def _checked(self, name: str, value: object) -> object:
        lowered = name.lower()
        secret = any(word in lowered for word in _SECRET_WORDS)
        if secret or isinstance(value, bytes | bytearray | memoryview):
            return self._refuse(f"audit field {name!r} may hold a secret: never logged")
        if lowered in _RESERVED or _NAME.fullmatch(name) is None:
            return self._refuse(f"invalid audit field name {name[:64]!r}")
        return _plain(value)

    def _refuse(self, problem: str) -> object:
        if self._strict:
            raise InvalidArgumentError(problem)
        logger.warning("%s (dropped)", problem)
        return _DROP

    def close(self) -> None:
        """Close the file; later events are not recorded. Closing twice is harmless."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _plain(value: object) -> object:
    """``value`` as a JSON scalar: numbers and booleans as they are, anything else as text."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_FIELD_CHARS:
        return text[: MAX_FIELD_CHARS - 1] + "…"
    return text


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_audit(path: str | Path) -> list[dict[str, Any]]:
    """Every event of an audit log, in order (for tests and tools)."""
    where = f"the audit log {str(path)!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise InvalidArgumentError(f"cannot read {where}: {reason}") from exc
    events: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise InvalidArgumentError(f"{where}, line {number}: not JSON ({exc})") from exc
        if not isinstance(event, dict) or "event" not in event or "time" not in event:
            raise InvalidArgumentError(f"{where}, line {number}: not an audit event")
        events.append(event)
    return events
