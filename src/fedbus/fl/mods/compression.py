"""Compression's mod by name, for configuration files: ``[compression]`` installs it.

The mod itself is ``fedbus.fl.compression.CompressionMod``; here it is built from a run's
``[compression]`` section, on the server and on every client alike.
"""

from __future__ import annotations

from fedbus.fl.compression import CompressionMod
from fedbus.fl.mods.registry import register_mod
from fedbus.plugins import Settings

__all__: list[str] = []


def _build(settings: Settings, seed: int | None) -> CompressionMod:
    """The mod ``[compression]`` describes (its defaults where a run has no such section)."""
    section = settings.section("compression")
    return CompressionMod(
        section.get("method", "none"),
        direction=section.get("direction", "up"),
        topk_ratio=section.get("topk_ratio", 0.01),
        zstd_level=section.get("zstd_level", 3),
        seed=seed,
    )


register_mod("compression", _build, roles=("client", "server"))
