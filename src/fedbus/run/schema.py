"""Declaring configuration keys once: type, default, meaning and accepted values.

A configuration section is a frozen dataclass that subclasses ``ConfigSection``; each key is a
field declared with ``setting``, which stores a ``KeySpec`` in the field's metadata. From that one
declaration come the checks (run whenever a section is built), the error messages and the
reference tables of ``docs/config.md``.

Examples
--------
>>> from dataclasses import dataclass
>>> from typing import ClassVar
>>> @dataclass(frozen=True, slots=True)
... class TrainerSection(ConfigSection):
...     '''[trainer]: local training.'''
...     section: ClassVar[str] = "trainer"
...     epochs: int = setting(1, "local epochs per round", bounds="x >= 1")
>>> TrainerSection(epochs=0)
Traceback (most recent call last):
...
fedbus.errors.ConfigError: trainer.epochs: expected an integer >= 1, got 0
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeAlias, TypeVar

from fedbus.errors import ConfigError

__all__ = [
    "ConfigSection",
    "KeySpec",
    "NameSource",
    "format_problems",
    "key_spec",
    "section_fields",
    "section_problems",
    "setting",
    "show",
]

_METADATA_KEY = "fedbus"
KINDS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}
_NOUNS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number"}
_NOUNS[str] = "a string"
_NUMBER = r"-?\d+(?:\.\d+)?"
_TWO_SIDED = re.compile(rf"({_NUMBER}) (<=?) x (<=?) ({_NUMBER}|[a-z_]+)")
_ONE_SIDED = re.compile(rf"x (>=?) ({_NUMBER})")
_T = TypeVar("_T")


#: Values that make a key required: fixed, or computed when asked (from a registry).
Triggers: TypeAlias = tuple[str, ...] | Callable[[], tuple[str, ...]]


class NameSource(Protocol):
    """The names a key accepts, read when a value is checked: a ``fedbus.plugins.Registry``."""

    kind: str

    def names(self) -> tuple[str, ...]:
        """Every accepted name, plugins' included."""

    def builtin_names(self) -> tuple[str, ...]:
        """The names fedbus itself provides (what the docs list)."""

    def unknown(self, name: str) -> str:
        """Why ``name`` is refused, with close names and the known ones."""


def _resolve(triggers: Triggers) -> tuple[str, ...]:
    return triggers() if callable(triggers) else triggers


class _InvalidValueError(Exception):
    """One problem with one key; problems are collected and raised as one ``ConfigError``."""


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a configuration key means and which values it accepts.

    Attributes
    ----------
    meaning : str
        One line for users: what the key controls.
    bounds : str
        Numeric range as written for users: ``"x >= 1"``, ``"x > 0"``, ``"0 <= x < 1"``, or
        ``"1 <= x <= other_key"`` for a key that may not exceed another key of its section.
    choices : tuple of str
        The only accepted values, when not empty; a close one is suggested for any other.
    pattern, pattern_text : str
        A regular expression the whole value must match, and how to say it to a user.
    is_path : bool
        A non-empty value must name an existing file or directory.
    required_when : tuple of (str, values), optional
        ``(key, values)``: the value may not be empty while that key of the same section has one
        of those values; ``values`` is a tuple of str, or a function returning one.
    registry : NameSource, optional
        The value must be a name this registry knows (a strategy, dataset or model); the names
        are read when a value is checked, so plugins installed later count.

    A value of ``choices`` or ``registry`` written in other letter case is taken as the name it
    spells ("FedAvg" is "fedavg"), unless two accepted names differ only in case.
    """

    meaning: str
    bounds: str = ""
    choices: tuple[str, ...] = ()
    pattern: str = ""
    pattern_text: str = ""
    is_path: bool = False
    required_when: tuple[str, Triggers] | None = None
    registry: NameSource | None = None

    def rule(self, section: str) -> str:
        """The accepted values in words; empty when any value of the key's type will do."""
        if self.registry is not None:
            builtin = ", ".join(show(name) for name in self.registry.builtin_names())
            return f"one of {builtin}, or a plugin's {self.registry.kind} (docs/plugins.md)"
        if self.choices:
            return "one of " + ", ".join(show(choice) for choice in self.choices)
        if self.is_path:
            if self.required_when is None:
                return "path to an existing file or directory, or empty"
            key, values = self.required_when
            shown = " or ".join(show(value) for value in _resolve(values))
            where = f"{section}.{key} is {shown}"
            return f"path to an existing file or directory; required when {where}"
        if self.pattern:
            return self.pattern_text
        if self.required_when is not None:
            key, values = self.required_when
            shown = " or ".join(show(value) for value in _resolve(values))
            return f"required when {section}.{key} is {shown}"
        if _ONE_SIDED.fullmatch(self.bounds):
            return self.bounds.removeprefix("x ")
        upper = self.upper_key
        return self.bounds if upper is None else self.bounds.replace(upper, f"{section}.{upper}")

    @property
    def upper_key(self) -> str | None:
        """The key of the same section this value may not exceed, if any."""
        match = _TWO_SIDED.fullmatch(self.bounds)
        if match is None or re.fullmatch(_NUMBER, match[4]):
            return None
        return match[4]

    def breaks_bounds(self, value: float) -> bool:
        """Whether a number lies outside the numeric bounds (an upper key is checked apart)."""
        one_sided = _ONE_SIDED.fullmatch(self.bounds)
        if one_sided is not None:
            limit = float(one_sided[2])
            return value < limit if one_sided[1] == ">=" else value <= limit
        two_sided = _TWO_SIDED.fullmatch(self.bounds)
        if two_sided is None:
            return False
        low, low_op, high_op, high = two_sided.groups()
        below = value < float(low) if low_op == "<=" else value <= float(low)
        if self.upper_key is not None:
            return below
        return below or (value > float(high) if high_op == "<=" else value >= float(high))


def setting(
    default: _T,
    meaning: str,
    *,
    bounds: str = "",
    choices: tuple[str, ...] = (),
    pattern: str = "",
    pattern_text: str = "",
    is_path: bool = False,
    required_when: tuple[str, Triggers] | None = None,
    registry: NameSource | None = None,
) -> _T:
    """Declare a configuration key: its default, its meaning and its accepted values.

    See ``KeySpec`` for the arguments. Raises ``ValueError`` for bounds it cannot read, so a
    typo in a declaration fails at import, not when a user hits it.
    """
    if bounds and not (_ONE_SIDED.fullmatch(bounds) or _TWO_SIDED.fullmatch(bounds)):
        raise ValueError(f"bounds {bounds!r}: expected 'x >= 1', 'x > 0' or '0 <= x < 1'")
    spec = KeySpec(
        meaning, bounds, choices, pattern, pattern_text, is_path, required_when, registry
    )
    return field(default=default, metadata={_METADATA_KEY: spec})


def show(value: object) -> str:
    """A value as it is written in TOML, so that messages quote what the user wrote."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _kind_word(value: object) -> str:
    words = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    words |= {list: "an array", dict: "a table"}
    return words.get(type(value), f"a {type(value).__name__}")


def key_spec(key_field: Field[Any]) -> KeySpec:
    """The ``KeySpec`` a field was declared with."""
    spec = key_field.metadata[_METADATA_KEY]
    assert isinstance(spec, KeySpec), "configuration keys are declared with setting()"
    return spec


def section_fields(section: type[ConfigSection]) -> dict[str, Field[Any]]:
    """The keys of a section, in declaration order."""
    return {key_field.name: key_field for key_field in fields(section)}  # type: ignore[arg-type]


def format_problems(problems: Sequence[str], source: str = "") -> str:
    """One message for one or several problems, prefixed by where they were found."""
    prefix = f"{source}: " if source else ""
    if len(problems) == 1:
        return prefix + problems[0]
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return f"{prefix}{len(problems)} problems in the configuration:\n{lines}"


def _checked_type(qualified: str, kind: type, value: object) -> object:
    """``value`` converted to ``kind``; only an int becomes a float, a bool is never a number."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        got = f"{show(value)} ({_kind_word(value)})"
        raise _InvalidValueError(f"{qualified}: expected {_NOUNS[kind]}, got {got}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _InvalidValueError(f"{qualified}: expected a finite number, got {show(value)}")
    return value


def _expected(kind: type, spec: KeySpec, section: str) -> str:
    """What a key accepts, phrased to follow "expected"."""
    if spec.is_path:
        return "a path to an existing file (relative paths start at the current directory)"
    rule = spec.rule(section)
    if spec.choices or spec.pattern:
        return rule
    return f"{_NOUNS[kind]} {'with ' if rule.startswith(tuple('-0123456789')) else ''}{rule}"


def _canonical_name(spec: KeySpec, value: object) -> object:
    """The accepted name ``value`` spells in other letter case ("FedAvg": "fedavg"), if it is
    the only one; else ``value`` unchanged, to be refused with a suggestion."""
    accepted = spec.registry.names() if spec.registry is not None else spec.choices
    if not isinstance(value, str) or not accepted or value in accepted:
        return value
    same = [name for name in accepted if name.casefold() == value.casefold()]
    return same[0] if len(same) == 1 else value


def _did_you_mean(value: str, accepted: Sequence[str]) -> str:
    """``'; did you mean "goal"?'`` for the accepted value closest to ``value``, or ``""``."""
    folded = {name.casefold(): name for name in accepted}
    close = difflib.get_close_matches(value.casefold(), list(folded), n=1)
    return f"; did you mean {show(folded[close[0]])}?" if close else ""


def _check_rule(qualified: str, kind: type, spec: KeySpec, value: Any) -> None:
    """Raise when ``value``, already of the right type, is not one the key accepts."""
    if spec.registry is not None:
        if value not in spec.registry.names():
            raise _InvalidValueError(f"{qualified}: {spec.registry.unknown(value)}")
        return
    if spec.choices:
        broken = value not in spec.choices
    elif spec.pattern:
        broken = re.fullmatch(spec.pattern, value) is None
    elif spec.is_path:
        broken = value != "" and not Path(value).exists()
    else:
        broken = kind in (int, float) and spec.breaks_bounds(value)
    if broken:
        section = qualified.partition(".")[0]
        expected = _expected(kind, spec, section)
        hint = _did_you_mean(value, spec.choices) if spec.choices else ""
        raise _InvalidValueError(f"{qualified}: expected {expected}, got {show(value)}{hint}")


def _relation_problem(
    section: type[ConfigSection], key: str, values: dict[str, Any], valid: set[str]
) -> str | None:
    """A rule between two keys of one section, checked only when both are valid alone."""
    spec = key_spec(section_fields(section)[key])
    name, qualified = section.section, f"{section.section}.{key}"
    upper = spec.upper_key
    if upper in valid and values[key] > values[upper]:
        limit = f"{name}.{upper} ({show(values[upper])})"
        return f"{qualified}: expected at most {limit}, got {show(values[key])}"
    if spec.required_when is not None and spec.required_when[0] in valid:
        other, triggers = spec.required_when
        if values[key] == "" and values[other] in _resolve(triggers):
            because = f"required when {name}.{other} is {show(values[other])}"
            wanted = "a path to an existing file" if spec.is_path else "a value"
            return f'{qualified}: {because}; expected {wanted}, got ""'
    return None


def section_problems(section: type[ConfigSection], values: dict[str, Any]) -> list[str]:
    """Every problem with a complete set of values for ``section``.

    Valid values are converted in place (an int given for a float key becomes a float).
    """
    problems: list[str] = []
    valid: set[str] = set()
    for key, key_field in section_fields(section).items():
        qualified, kind = f"{section.section}.{key}", KINDS[str(key_field.type)]
        spec = key_spec(key_field)
        try:
            values[key] = _canonical_name(spec, _checked_type(qualified, kind, values[key]))
            _check_rule(qualified, kind, spec, values[key])
        except _InvalidValueError as problem:
            problems.append(str(problem))
        else:
            valid.add(key)
    for key in section_fields(section):
        relation = _relation_problem(section, key, values, valid) if key in valid else None
        if relation is not None:
            problems.append(relation)
    return problems


class ConfigSection:
    """Base of a configuration section: its keys are checked whenever it is built.

    Subclasses are ``@dataclass(frozen=True, slots=True)`` classes with a ``section`` class
    variable (the TOML table name) and keys declared with ``setting``. Building one with a
    wrong value raises ``ConfigError`` naming every bad key.
    """

    __slots__ = ()
    section: ClassVar[str]

    def __post_init__(self) -> None:
        values = {key: getattr(self, key) for key in section_fields(type(self))}
        problems = section_problems(type(self), values)
        if problems:
            raise ConfigError(format_problems(problems))
        for key, value in values.items():
            # frozen dataclass: object.__setattr__ is the way to store the converted value
            object.__setattr__(self, key, value)
