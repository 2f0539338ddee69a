"""The mods configuration files name (``federation.client_mods``, ``federation.server_mods``).

A mod registers itself in its own module, with a call at the bottom::

    register_mod("fedprox", lambda settings, seed: FedProxMod())

Plugin packages add theirs through the ``fedbus.mods`` entry point group (``docs/plugins.md``),
as they add strategies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from fedbus.errors import InvalidArgumentError
from fedbus.plugins import Registry, Settings
from fedbus.worker import ROLES, SERVER_ROLE

__all__ = ["MODS", "ModBuilder", "RegisteredMod", "build_mods", "register_mod"]

#: ``build(settings, seed) -> mod``: ``seed`` seeds the mod's randomness on one node (None: fresh
#: entropy from the operating system, as in deployments).
ModBuilder = Callable[[Settings, int | None], object]


@dataclass(frozen=True, slots=True)
class RegisteredMod:
    """How a configured run builds one mod, and the roles of the nodes it may be installed on."""

    build: ModBuilder
    roles: frozenset[str]


#: Every mod a configuration may name.
MODS: Registry[RegisteredMod] = Registry("mod", group="fedbus.mods", builtins=("fedbus.fl.mods",))


def register_mod(
    name: str, build: ModBuilder, *, roles: Collection[str] = ("client",)
) -> RegisteredMod:
    """Make the mod ``build`` makes available to configuration files as ``name``.

    Parameters
    ----------
    name : str
        The name ``federation.client_mods`` and ``federation.server_mods`` use.
    build : callable
        ``build(settings, seed) -> mod``, called once for each node the mod is installed on.
    roles : collection of str
        ``"client"``, ``"server"`` or both: the nodes it may be installed on.

    Raises
    ------
    PluginError
        ``name`` is already registered by another module.
    """
    unknown = sorted(set(roles) - set(ROLES))
    if isinstance(roles, str) or unknown or not roles:
        raise InvalidArgumentError(
            f"register_mod({name!r}): roles must be a non-empty list among {list(ROLES)}, "
            f"got {roles!r}"
        )
    return MODS.register(name, RegisteredMod(build, frozenset(roles)), module=build.__module__)


def build_mods(
    names: Sequence[str], role: str, settings: Settings, seed: int | None
) -> list[object]:
    """The mods ``names`` name, built for one node of ``role``, in the order given.

    Raises
    ------
    PluginError
        A name is not known (the message lists the known ones).
    InvalidArgumentError
        A mod may not be installed on a node of ``role``.
    """
    mods = []
    for name in names:
        registered = MODS.get(name)
        if role not in registered.roles:
            where = "federation.server_mods" if role == SERVER_ROLE else "federation.client_mods"
            raise InvalidArgumentError(
                f"{where}: mod {name!r} runs on {' and '.join(sorted(registered.roles))} nodes "
                f"only, not on the {role}"
            )
        mods.append(registered.build(settings, seed))
    return mods
