"""Every error fedbus raises, under one root.

Errors *between nodes* are data (an ``Error`` inside a ``Message``); the exceptions here are
raised to the Python code that called fedbus with something it cannot use.

The tree::

    FedbusError                      root: ``except fedbus.FedbusError`` catches all of fedbus
    ├── InvalidArgumentError         also ValueError: a value fedbus cannot use
    │   ├── ConfigError              a configuration key, type or value is wrong
    │   └── DecodeError              bytes are not a valid encoded message
    ├── InvalidTypeError             also TypeError: an argument or record value of the wrong type
    ├── MessageFieldError            also AttributeError: reading the absent content or error
    ├── SendError                    a runtime refused to send a message (expired, wrong sender)
    ├── FlowError                    the message-flow check found types nobody handles
    ├── RunError                     a federation could not go on (too few replies, ...)
    ├── PluginError                  a plugin name is unknown, registered twice, or fails to load
    └── MissingDependencyError       also ImportError: an optional extra is not installed

Errors from other libraries (OS, gRPC, torch) are translated at fedbus's boundary with
``raise ... from exc`` so the original stays visible in the traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "FedbusError",
    "FlowError",
    "InvalidArgumentError",
    "InvalidTypeError",
    "MessageFieldError",
    "MissingDependencyError",
    "PluginError",
    "RunError",
    "RunInterruptedError",
    "SendError",
]


class FedbusError(Exception):
    """Root of every exception fedbus raises."""


class InvalidArgumentError(FedbusError, ValueError):
    """A value passed to fedbus cannot be used; the message says what was expected."""


class ConfigError(InvalidArgumentError):
    """A configuration key is unknown, or its value has the wrong type or is impossible."""


class DecodeError(InvalidArgumentError):
    """The bytes given to ``decode_message`` are not a valid fedbus message.

    The codec raises this, and only this, for malformed, truncated, oversized or hostile input.
    """


class InvalidTypeError(FedbusError, TypeError):
    """An argument or a record value has a type fedbus does not accept."""


class MessageFieldError(FedbusError, AttributeError):
    """The content of an error message, or the error of a content message, was read."""


class SendError(FedbusError):
    """A runtime refused to send a message, for the reason given."""


class FlowError(FedbusError):
    """The message-flow check found message types that no worker handles."""


class RunError(FedbusError):
    """A federation cannot go on (for example, a round got fewer than ``min_replies``)."""


class RunInterruptedError(RunError):
    """A run was stopped (Ctrl-C) after writing what its completed rounds made; the message
    says where, and how to go on."""


class PluginError(FedbusError):
    """A strategy, dataset or model name is unknown or registered twice, or a plugin package's
    entry point fails to load; the message names the entry point and what to do."""


class MissingDependencyError(FedbusError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
