"""Registries of named components, and the plugin packages that add to them.

A strategy, a dataset or a model is known to configuration files by a name. Each registers
itself in its own module (one call at the bottom of the module), into the registry of its layer:
``fedbus.fl.registry.STRATEGIES``, ``fedbus.data.registry.DATASETS`` and
``fedbus.train.registry.MODELS``. Those are ``Registry`` objects from this module, which imports
nothing of fedbus but its errors, so that every layer may use it.

Other packages add theirs through Python entry points, in the groups ``fedbus.strategies``,
``fedbus.datasets`` and ``fedbus.models``: the entry point's name is the component's name and its
value the module that registers it. Entry points are discovered on the first lookup and an entry
point's module is imported only when its name is used, so a broken plugin fails only a run that
names it, with a ``PluginError`` saying which entry point and what to do. ``docs/plugins.md``
has a complete example.

Builders receive the run's configuration as ``Settings``, a read-only mapping keyed by
``"section.key"``, so that no layer below ``run`` depends on the configuration classes.

Examples
--------
>>> registry: Registry[str] = Registry("greeting", group="fedbus.examples", builtins=())
>>> registry.register("hello", "Hello!", module="greetings")
'Hello!'
>>> registry.get("hello")
'Hello!'
>>> registry.get("helo")
Traceback (most recent call last):
...
fedbus.errors.PluginError: greeting 'helo' is not known; did you mean 'hello'? Known: hello
"""

from __future__ import annotations

import difflib
import importlib
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Generic, TypeVar

from fedbus.errors import PluginError

__all__ = ["Registration", "Registry", "Settings", "is_builtin_module"]

T = TypeVar("T")

#: Names as configuration files write them: ``strategy.name = "trimmed_mean"``.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_builtin_module(module: str) -> bool:
    """Whether ``module`` is part of fedbus itself (rather than of a plugin package)."""
    return module == "fedbus" or module.startswith("fedbus.")


@dataclass(frozen=True, slots=True)
class Registration(Generic[T]):
    """One registered component: its name, what was registered, and the module that did it."""

    name: str
    entry: T
    module: str

    @property
    def builtin(self) -> bool:
        """Whether fedbus itself registered it."""
        return is_builtin_module(self.module)


class Registry(Generic[T]):
    """Named components of one kind: fedbus's own and those of installed plugin packages.

    Parameters
    ----------
    kind : str
        What the components are, in words: ``"strategy"``, ``"dataset"``, ``"model"``.
    group : str
        The entry point group plugin packages declare theirs in: ``"fedbus.strategies"``.
    builtins : tuple of str
        fedbus's modules whose import registers the built-in components; they are imported
        before the first lookup. fedbus's own modules are found like a plugin's, by import
        path, so that a registry never imports the layer above it.
    """

    def __init__(self, kind: str, *, group: str, builtins: tuple[str, ...]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._registered: dict[str, Registration[T]] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None
        self._builtins_imported = False
        # clients may be built on several threads at once; the first lookup imports modules
        self._lock = threading.RLock()

    def register(self, name: str, entry: T, *, module: str) -> T:
        """Add ``entry`` under ``name``; ``module`` is the module registering it.

        Registering the same name again from the same module (a reloaded module) replaces
        the entry; from another module it raises ``PluginError``.
        """
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise PluginError(
                f"{self.kind} name {name!r} (registered by {module}): expected letters, digits, "
                "'_', '.' and '-', starting with a letter or digit"
            )
        with self._lock:
            existing = self._registered.get(name)
            if existing is not None and existing.module != module:
                raise PluginError(
                    f"{self.kind} {name!r} is registered twice: by {existing.module} and by "
                    f"{module}; rename one of them"
                )
            self._registered[name] = Registration(name, entry, module)
        return entry

    def names(self) -> tuple[str, ...]:
        """Every known name, sorted: fedbus's own and installed plugins' (not yet imported)."""
        with self._lock:
            self._import_builtins()
            return tuple(sorted({*self._registered, *self._discover()}))

    def builtin_names(self) -> tuple[str, ...]:
        """The names fedbus itself registers, sorted."""
        with self._lock:
            self._import_builtins()
            return tuple(sorted(name for name, item in self._registered.items() if item.builtin))

    def get(self, name: str) -> T:
        """The entry registered under ``name``, importing its plugin on first use.

        Raises
        ------
        PluginError
            ``name`` is not known (the message suggests close names), or its plugin's entry
            point fails to load or does not register it.
        """
        return self.registration(name).entry

    def registration(self, name: str) -> Registration[T]:
        """``get``, with the module that registered the entry."""
        with self._lock:
            self._import_builtins()
            if name not in self._registered:
                entry_point = self._discover().get(name)
                if entry_point is None:
                    raise PluginError(self.unknown(name))
                self._load(entry_point)
            return self._registered[name]

    def unknown(self, name: str) -> str:
        """The message for an unknown ``name``: close names, then every known name."""
        known = self.names()
        by_lower = {each.lower(): each for each in known}  # "FEDAVGG" is close to "fedavg" too
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
        hint = f"did you mean {by_lower[close[0]]!r}? " if close else ""
        return f"{self.kind} {name!r} is not known; {hint}Known: {', '.join(known)}"

    def refresh(self) -> None:
        """Discover entry points again, e.g. after installing a plugin package at runtime.

        Entries already registered stay; ``importlib.invalidate_caches()`` is called so that
        new directories on ``sys.path`` are seen.
        """
        with self._lock:
            importlib.invalidate_caches()
            self._entry_points = None

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests that install and remove a plugin); unknown names are ignored."""
        with self._lock:
            self._registered.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r})"

    def _import_builtins(self) -> None:
        if self._builtins_imported:
            return
        for module in self._builtins:
            importlib.import_module(module)
        self._builtins_imported = True

    def _discover(self) -> dict[str, metadata.EntryPoint]:
        """The group's entry points by name, read once; clashes raise ``PluginError``."""
        if self._entry_points is None:
            found: dict[str, metadata.EntryPoint] = {}
            for entry_point in metadata.entry_points(group=self.group):
                self._check_entry_point(entry_point, found.get(entry_point.name))
                found[entry_point.name] = entry_point
            self._entry_points = found
        return self._entry_points

    def _check_entry_point(
        self, entry_point: metadata.EntryPoint, same_name: metadata.EntryPoint | None
    ) -> None:
        where = _describe(entry_point, self.group)
        if _NAME.fullmatch(entry_point.name) is None:
            raise PluginError(
                f"{where}: {entry_point.name!r} is not a valid {self.kind} name (letters, "
                "digits, '_', '.' and '-'); rename the entry point"
            )
        if same_name is not None and same_name.value != entry_point.value:
            raise PluginError(
                f"{where} and {_describe(same_name, self.group)} both name a {self.kind} "
                f"{entry_point.name!r}; uninstall or rename one of them"
            )
        existing = self._registered.get(entry_point.name)
        if existing is not None and existing.builtin:
            raise PluginError(
                f"{where} takes the name of fedbus's built-in {self.kind} "
                f"{entry_point.name!r}; rename the entry point"
            )

    def _load(self, entry_point: metadata.EntryPoint) -> None:
        where = _describe(entry_point, self.group)
        try:
            entry_point.load()
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(
                f"{where} failed to load: {type(exc).__name__}: {exc}. Fix that package, or "
                f"uninstall it{_uninstall_hint(entry_point)} to run without it"
            ) from exc
        if entry_point.name not in self._registered:
            raise PluginError(
                f"{where} loaded, but registered no {self.kind} named {entry_point.name!r}: "
                f"the module it names must register it (docs/plugins.md)"
            )


def _describe(entry_point: metadata.EntryPoint, group: str) -> str:
    """``entry point 'name = module' (group ..., package ...)`` for messages."""
    dist = entry_point.dist
    package = f", package {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point '{entry_point.name} = {entry_point.value}' (group {group}{package})"


def _uninstall_hint(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return f" (pip uninstall {dist.name})" if dist is not None else ""


class Settings(Mapping[str, Any]):
    """A read-only view of a run's validated configuration, keyed ``"section.key"``.

    Builders of strategies, datasets and models receive one; ``run`` makes it from its
    ``Config``, so that the layers below never import the configuration classes.

    Parameters
    ----------
    sections : mapping of str to mapping
        ``{"section": {"key": value}}``, as ``fedbus.run.config_to_dict`` gives.

    Examples
    --------
    >>> settings = Settings({"strategy": {"server_lr": 0.5}})
    >>> settings["strategy.server_lr"]
    0.5
    >>> settings.section("strategy")
    {'server_lr': 0.5}
    """

    __slots__ = ("_values",)

    def __init__(self, sections: Mapping[str, Mapping[str, Any]]) -> None:
        self._values = {
            f"{section}.{key}": value
            for section, table in sections.items()
            for key, value in table.items()
        }

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            close = difflib.get_close_matches(key, list(self._values), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise KeyError(f"no setting {key!r}{hint} (keys are 'section.key')") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def section(self, name: str) -> dict[str, Any]:
        """The keys of one section, without the section's prefix."""
        prefix = f"{name}."
        return {
            key.removeprefix(prefix): value
            for key, value in self._values.items()
            if key.startswith(prefix)
        }

    def __repr__(self) -> str:
        return f"Settings({len(self._values)} keys)"
