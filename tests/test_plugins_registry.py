"""``fedbus.plugins.Registry`` on its own: names, suggestions, clashes and its doctests."""

from __future__ import annotations

import doctest

import pytest

import fedbus.plugins
from fedbus.errors import PluginError
from fedbus.plugins import Registry, Settings


def test_the_module_examples_run() -> None:
    result = doctest.testmod(fedbus.plugins)
    assert result.attempted > 0
    assert result.failed == 0


def test_names_are_sorted_and_builtins_are_fedbus_modules() -> None:
    registry: Registry[int] = Registry("number", group="fedbus.tests.none", builtins=())
    registry.register("two", 2, module="fedbus.numbers")
    registry.register("one", 1, module="someones_plugin")
    assert registry.names() == ("one", "two")
    assert registry.builtin_names() == ("two",)
    assert "one" in registry
    assert "three" not in registry


def test_a_second_module_may_not_take_a_name_but_a_reloaded_one_may() -> None:
    registry: Registry[int] = Registry("number", group="fedbus.tests.none", builtins=())
    registry.register("one", 1, module="a")
    registry.register("one", 11, module="a")
    assert registry.get("one") == 11
    with pytest.raises(PluginError, match=r"number 'one' is registered twice: by a and by b"):
        registry.register("one", 1, module="b")


def test_a_name_a_configuration_cannot_write_is_refused() -> None:
    registry: Registry[int] = Registry("number", group="fedbus.tests.none", builtins=())
    with pytest.raises(PluginError, match="letters, digits"):
        registry.register("two words", 2, module="a")


def test_an_unknown_name_without_close_names_lists_the_known_ones() -> None:
    registry: Registry[int] = Registry("number", group="fedbus.tests.none", builtins=())
    registry.register("one", 1, module="a")
    with pytest.raises(PluginError, match=r"^number 'zzz' is not known; Known: one$"):
        registry.get("zzz")


def test_settings_read_section_keys_and_suggest_close_ones() -> None:
    settings = Settings({"strategy": {"server_lr": 0.5, "momentum": 0.9}})
    assert settings["strategy.momentum"] == 0.9
    assert len(settings) == 2
    with pytest.raises(KeyError, match=r"did you mean 'strategy.server_lr'"):
        settings["strategy.server_rl"]
