"""The examples in fedbus.data's docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "fedbus.data",
    "fedbus.data.datasets",
    "fedbus.data.federated",
    "fedbus.data.huggingface",
    "fedbus.data.images",
    "fedbus.data.leaf",
    "fedbus.data.leaf_tasks",
    "fedbus.data.mnist1d",
    "fedbus.data.registry",
    "fedbus.data.partition",
    "fedbus.data.partition.column",
    "fedbus.data.partition.label",
    "fedbus.data.partition.size",
    "fedbus.data.synthetic",
    "fedbus.data.text",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))

    assert result.attempted > 0
    assert result.failed == 0
