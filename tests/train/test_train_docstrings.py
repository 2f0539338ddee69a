"""The examples in fedbus.train's docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "fedbus.train.base",
    "fedbus.train.models",
    "fedbus.train.numpy_trainer",
    "fedbus.train.options",
    "fedbus.train.registry",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))

    assert result.attempted > 0
    assert result.failed == 0
