"""Draw a ``MessageFlow`` as a picture: roles as boxes, message types as labelled arrows.

Matplotlib only (Agg backend, no display and no graphviz). The file type follows the suffix of
the output path: ``.png`` or ``.svg``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch

from fedbus.errors import InvalidArgumentError
from fedbus.worker import START, MessageFlow

__all__ = ["draw_flow"]

_SUFFIXES = (".png", ".svg")
_NOBODY = "(no handler)"


def _positions(roles: list[str]) -> dict[str, tuple[float, float]]:
    """Roles on a circle (two roles: side by side), the server first, on the left."""
    if len(roles) == 1:
        return {roles[0]: (0.0, 0.0)}
    return {
        role: (-math.cos(2 * math.pi * i / len(roles)), math.sin(2 * math.pi * i / len(roles)))
        for i, role in enumerate(roles)
    }


def _grouped_labels(flow: MessageFlow) -> dict[tuple[str, str], str]:
    """One label per (sender, receiver): each type with the handlers that send it."""
    grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
    for edge in flow.edges:
        for receiver in edge.receiver_roles or (_NOBODY,):
            triggers = grouped.setdefault((edge.sender_role, receiver), {})
            name = "on start" if edge.trigger == START else f"after {edge.trigger}"
            triggers.setdefault(edge.message_type, []).append(name)
    return {
        pair: "\n".join(f"{kind}  ({', '.join(names)})" for kind, names in types.items())
        for pair, types in grouped.items()
    }


def draw_flow(flow: MessageFlow, output: str | Path, title: str = "message flow") -> Path:
    """Write ``flow`` as a PNG or SVG picture at ``output`` and return its path.

    Each role is a box listing the types it handles; each arrow carries the types one role
    sends another, with the handlers that send them. Types nobody handles point to a red box.
    """
    path = Path(output)
    if path.suffix.lower() not in _SUFFIXES:
        raise InvalidArgumentError(f"draw_flow: output must end in .png or .svg, got {path}")
    labels = _grouped_labels(flow)
    positions = _positions(list(flow.handled))
    if any(receiver == _NOBODY for _, receiver in labels):
        positions[_NOBODY] = (0.0, -1.4)
    figure, axes = plt.subplots(figsize=(10, 6))
    axes.set_title(title)
    axes.set_xlim(-2.0, 2.0)
    axes.set_ylim(-1.8, 1.8)
    axes.axis("off")
    for (sender, receiver), label in labels.items():
        colour = "tab:red" if receiver == _NOBODY else "tab:blue"
        # The two directions of a pair bend to opposite sides, so their labels never overlap.
        _arrow(axes, positions[sender], positions[receiver], label, colour)
    for role, (x, y) in positions.items():
        handled = "\n".join(flow.handled.get(role, [])) or "-"
        text = role if role == _NOBODY else f"{role}\n\nhandles:\n{handled}"
        axes.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=10,
            bbox={"boxstyle": "round,pad=0.6", "facecolor": "#eef3fb", "edgecolor": "#335"},
            zorder=3,
        )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _arrow(
    axes: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str,
    colour: str,
) -> None:
    """One labelled arrow bending to its left; a self-loop circles above the box."""
    if start == end:
        x, y = start
        radius = 0.5
        loop = FancyArrowPatch(
            (x - 0.15, y + 0.3),
            (x + 0.15, y + 0.3),
            connectionstyle=f"arc3,rad=-{radius * 4}",
            arrowstyle="-|>",
            mutation_scale=14,
            color=colour,
            zorder=2,
        )
        axes.add_patch(loop)
        axes.text(x, y + 0.3 + radius * 1.6, label, ha="center", fontsize=8, color=colour)
        return
    bend = 0.3
    arrow = FancyArrowPatch(
        start,
        end,
        connectionstyle=f"arc3,rad={bend}",
        arrowstyle="-|>",
        mutation_scale=14,
        color=colour,
        shrinkA=45,
        shrinkB=45,
        zorder=2,
    )
    axes.add_patch(arrow)
    mid_x, mid_y = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
    normal_x, normal_y = end[1] - start[1], start[0] - end[0]
    axes.text(
        mid_x + normal_x * bend * 0.5,
        mid_y + normal_y * bend * 0.5,
        label,
        ha="center",
        va="center",
        fontsize=8,
        color=colour,
        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8},
    )
