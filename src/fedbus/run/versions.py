"""What a run ran on: fedbus's version, Python's, and the versions of the packages it uses.

Every run directory gets ``versions.json``, so that a result can be traced to the software that
made it, and ``fedbus verify`` can say which versions differ when a rerun does not reproduce.

Examples
--------
>>> versions = environment_versions()
>>> sorted(versions)[:2], "numpy" in versions["packages"]
(['fedbus', 'packages'], True)
>>> differences({"fedbus": "0.1", "packages": {"numpy": "2.0"}},
...             {"fedbus": "0.1", "packages": {"numpy": "2.1"}})
['numpy: 2.0 when the run was made, 2.1 now']
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from fedbus.errors import InvalidArgumentError

__all__ = [
    "VERSIONS_FILE",
    "differences",
    "environment_versions",
    "read_versions",
    "write_versions",
]

VERSIONS_FILE = "versions.json"

# What a run's numbers can depend on: fedbus's dependencies and the optional parts it imports.
_PACKAGES = (
    "numpy",
    "scikit-learn",
    "scipy",
    "torch",
    "transformers",
    "peft",
    "datasets",
    "mnist1d",
    "pillow",
    "dp-accounting",
    "grpcio",
    "protobuf",
    "cryptography",
    "zstandard",
    "ray",
    "matplotlib",
)


def environment_versions() -> dict[str, Any]:
    """fedbus's version, Python's, the platform, and each installed package of ``_PACKAGES``."""
    packages: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "fedbus": _fedbus_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
    }


def _fedbus_version() -> str:
    try:
        return metadata.version("fedbus")
    except metadata.PackageNotFoundError:  # run from a source tree that was not installed
        return "unknown"


def write_versions(run_dir: str | Path) -> Path:
    """Write ``versions.json`` (``environment_versions()``) into ``run_dir``."""
    path = Path(run_dir) / VERSIONS_FILE
    path.write_text(json.dumps(environment_versions(), indent=2) + "\n", encoding="utf-8")
    return path


def read_versions(run_dir: str | Path) -> dict[str, Any] | None:
    """The versions a run directory recorded; None for a directory without the file."""
    path = Path(run_dir) / VERSIONS_FILE
    if not path.exists():
        return None
    try:
        versions = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgumentError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(versions, dict):
        raise InvalidArgumentError(f"{path}: expected a JSON object")
    return versions


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per version that differs between ``recorded`` and ``current``."""
    lines = []
    for key in ("fedbus", "python"):
        if key in recorded and recorded.get(key) != current.get(key):
            lines.append(
                f"{key}: {recorded.get(key)} when the run was made, {current.get(key)} now"
            )
    before, now = dict(recorded.get("packages") or {}), dict(current.get("packages") or {})
    for name in sorted(set(before) | set(now)):
        if before.get(name) != now.get(name):
            then = before.get(name, "not installed")
            lines.append(
                f"{name}: {then} when the run was made, {now.get(name, 'not installed')} now"
            )
    return lines
