"""The curated public surface: ``fedbus.__all__`` changes only on purpose.

Adding or removing a public name means editing ``PUBLIC_NAMES`` below in the same change.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

import fedbus

PUBLIC_NAMES = {
    "Array",
    "ArrayRecord",
    "ConfigRecord",
    "DEFAULT_TTL",
    "DecodeError",
    "Error",
    "ErrorCode",
    "FedbusError",
    "Message",
    "Metadata",
    "MetricRecord",
    "RecordDict",
    "decode_message",
    "encode_message",
    # the handler model, the standard flow and the simulation
    "Client",
    "FedAvg",
    "Server",
    "SimulationResult",
    "Strategy",
    "Worker",
    "handler",
    "simulate",
}


def test_all_is_exactly_the_public_names() -> None:
    assert set(fedbus.__all__) == PUBLIC_NAMES
    assert len(fedbus.__all__) == len(set(fedbus.__all__)), "duplicates in fedbus.__all__"


def test_no_other_public_module_attribute_leaks_in() -> None:
    """Public attributes of the package are the public names, its subpackages and __version__."""
    public = {name for name in vars(fedbus) if not name.startswith("_")}
    subpackages = {name for name in public if inspect.ismodule(getattr(fedbus, name))}
    assert public - subpackages == PUBLIC_NAMES


@pytest.mark.parametrize("name", sorted(PUBLIC_NAMES))
def test_public_name_is_importable(name: str) -> None:
    module = importlib.import_module("fedbus")
    assert hasattr(module, name), f"fedbus.{name} is not importable"


@pytest.mark.parametrize("name", sorted(PUBLIC_NAMES - {"DEFAULT_TTL"}))
def test_public_name_has_its_own_docstring(name: str) -> None:
    value = getattr(fedbus, name, None)
    if value is None:
        pytest.fail(f"fedbus.{name} is not importable")
    assert inspect.isclass(value) or inspect.isfunction(value)
    doc = vars(value).get("__doc__") if inspect.isclass(value) else value.__doc__
    assert doc, f"fedbus.{name} has no docstring"
    assert doc.strip()
    assert value.__module__.startswith("fedbus."), value.__module__


def test_default_ttl_is_twelve_hours() -> None:
    assert fedbus.DEFAULT_TTL == 43200.0
    assert isinstance(fedbus.DEFAULT_TTL, float)


def test_errors_share_one_root() -> None:
    decode_error = getattr(fedbus, "DecodeError", None)
    if decode_error is None:
        pytest.fail("fedbus.DecodeError is not importable")
    assert issubclass(decode_error, fedbus.FedbusError)
    assert issubclass(decode_error, ValueError)
