"""Draw a ``MessageFlow`` as a picture: roles as boxes, message types as labelled arrows.

Matplotlib only, through ``matplotlib.figure.Figure`` and the Agg renderer: no display, no
``pyplot`` (a notebook's backend is left alone) and no graphviz. The file type follows the
suffix of the output path: ``.png`` or ``.svg`` (``FLOW_SUFFIXES``).

The picture is laid out in inches, from the measured size of every text, and the figure is
sized to hold it all. Each arrow bends away from the straight line between its two boxes, and
its label sits beyond the top of the bend, on the outer side, so no arrow crosses its own
label. An arrow whose label would touch a box bends further, and the boxes move apart when
that is not enough; a label that would touch another moves away from its arrow. Arrows start
and end at the border of their boxes, so their heads are never hidden under a box.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fedbus.errors import InvalidArgumentError
from fedbus.run.plot import check_picture_path
from fedbus.worker import START, MessageFlow

if TYPE_CHECKING:  # Matplotlib is imported when a picture is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.text import Text

__all__ = ["FLOW_SUFFIXES", "FlowPicture", "check_flow_path", "draw_flow", "flow_figure"]

FLOW_SUFFIXES: tuple[str, ...] = (".png", ".svg")
"""The suffixes ``draw_flow`` writes."""

_NOBODY = "(no handler)"
_DPI = 150
_BOX_FONT = 10
_LABEL_FONT = 8
_PAD = 0.12  # inches between a box's text and its border
_CLEARANCE = 0.08  # inches kept free around every label
_MARGIN = 0.3  # inches around the drawing
_LABEL_WIDTH = 56  # characters per label line before it wraps
# arc3 curvatures: an arrow starts at _BEND and bends up to _MAX_BEND to free its label, after
# which the boxes move apart; a loop over a box starts at _LOOP_BEND
_BEND = 0.3
_MAX_BEND = 0.9
_LOOP_BEND = -2.0
_MAX_LOOP_BEND = 3.0
_MAX_TRIES = 40
_HEAD = "-|>,head_length=0.7,head_width=0.35"

_Rect = tuple[float, float, float, float]  # x0, y0, x1, y1 in inches


@dataclass(frozen=True, slots=True)
class FlowPicture:
    """The drawing of a flow, before it is saved: its figure and the artists on it.

    Attributes
    ----------
    figure : matplotlib.figure.Figure
        The figure, on an Agg canvas.
    boxes : dict of str to FancyBboxPatch
        The box of each role (and of ``(no handler)`` when a type has no handler).
    arrows : list of FancyArrowPatch
        One arrow per (sender, receiver) pair, self-loops included.
    labels : list of matplotlib.text.Text
        The label of each arrow, in the order of ``arrows``.
    """

    figure: Figure
    boxes: dict[str, FancyBboxPatch]
    arrows: list[FancyArrowPatch]
    labels: list[Text]


@dataclass(slots=True)
class _Edge:
    sender: str
    receiver: str
    label: Text
    size: tuple[float, float]
    rad: float = _BEND
    offset: float = 0.06  # inches from the top of the bend to the label


def check_flow_path(output: str | Path, *, name: str = "output") -> Path:
    """``output`` as a Path if it ends in ``.png`` or ``.svg``; else ``InvalidArgumentError``."""
    return check_picture_path(output, FLOW_SUFFIXES, name=name)


def draw_flow(flow: MessageFlow, output: str | Path, title: str = "message flow") -> Path:
    """Write ``flow`` as a PNG or SVG picture at ``output`` and return its path.

    Each role is a box listing the types it handles; each arrow carries the types one role
    sends another, with the handlers that send them. Types nobody handles point to a red box.
    The directory of ``output`` is created when missing.
    """
    path = check_flow_path(output)
    picture = flow_figure(flow, title)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        picture.figure.savefig(path, dpi=_DPI, format=path.suffix.lower().removeprefix("."))
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {str(path)!r}: {exc.strerror}") from exc
    return path


def flow_figure(flow: MessageFlow, title: str = "message flow") -> FlowPicture:
    """Lay out and draw ``flow`` on a new figure sized to fit it; ``draw_flow`` saves it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(dpi=_DPI)
    FigureCanvasAgg(figure)  # texts are measured with its renderer
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.axis("off")
    labels = _grouped_labels(flow)
    roles = list(flow.handled)
    if any(receiver == _NOBODY for _, receiver in labels):
        roles.append(_NOBODY)
    texts = {role: _role_text(axes, flow, role) for role in roles}
    sizes = {role: _size(text) for role, text in texts.items()}
    sizes = {role: (width + 2 * _PAD, height + 2 * _PAD) for role, (width, height) in sizes.items()}
    edges = [_label(axes, pair, text) for pair, text in labels.items()]
    gap = min(max(2.0, 0.6 * max((edge.size[0] for edge in edges), default=0.0)), 5.0)
    centres, rects, label_extents = _layout(roles, sizes, edges, gap)
    extents = [*rects.values(), *label_extents]
    boxes = {role: _box(axes, centres[role], sizes[role], role == _NOBODY) for role in roles}
    for role, text in texts.items():
        text.set_position(centres[role])
    arrows = [_arrow(axes, edge, centres, rects, boxes) for edge in edges]
    _fit(figure, axes, extents, title)
    return FlowPicture(figure, boxes, arrows, [edge.label for edge in edges])


def _label(axes: Axes, pair: tuple[str, str], text: str) -> _Edge:
    """The label of the arrow from ``pair[0]`` to ``pair[1]``, measured, not yet placed."""
    colour = "tab:red" if pair[1] == _NOBODY else "tab:blue"
    label = axes.text(
        0,
        0,
        text,
        fontsize=_LABEL_FONT,
        color=colour,
        multialignment="left",
        # another role's arrow may pass behind a label when there are three roles or more
        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none"},
        zorder=4,
    )
    return _Edge(pair[0], pair[1], label, _size(label))


def _grouped_labels(flow: MessageFlow) -> dict[tuple[str, str], str]:
    """One label per (sender, receiver): each type with the handlers that send it."""
    grouped: dict[tuple[str, str], dict[str, list[str]]] = {}
    for edge in flow.edges:
        for receiver in edge.receiver_roles or (_NOBODY,):
            triggers = grouped.setdefault((edge.sender_role, receiver), {})
            senders = triggers.setdefault(edge.message_type, [])
            if edge.trigger not in senders:
                senders.append(edge.trigger)
    return {
        pair: "\n".join(_label_line(kind, senders) for kind, senders in types.items())
        for pair, types in grouped.items()
    }


def _label_line(message_type: str, triggers: list[str]) -> str:
    """``secagg_mask  (after secagg_share)``, wrapped to lines of ``_LABEL_WIDTH``."""
    after = [trigger for trigger in triggers if trigger != START]
    parts = ["on start"] if START in triggers else []
    parts += [f"after {', '.join(after)}"] if after else []
    line = f"{message_type}  ({'; '.join(parts)})"
    return "\n".join(textwrap.wrap(line, _LABEL_WIDTH, subsequent_indent="    "))


def _role_text(axes: Axes, flow: MessageFlow, role: str) -> Text:
    handled = "\n".join(flow.handled.get(role, [])) or "-"
    text = role if role == _NOBODY else f"{role}\n\nhandles:\n{handled}"
    return axes.text(0, 0, text, ha="center", va="center", fontsize=_BOX_FONT, zorder=3)


def _size(text: Text) -> tuple[float, float]:
    """Width and height of ``text`` in inches, as its figure's canvas renders it."""
    extent = text.get_window_extent()
    return extent.width / _DPI, extent.height / _DPI


def _positions(
    roles: list[str], sizes: dict[str, tuple[float, float]], gap: float
) -> dict[str, tuple[float, float]]:
    """Box centres in inches: two roles side by side, more on a circle, the server on the left."""
    if len(roles) == 1:
        return {roles[0]: (0.0, 0.0)}
    if len(roles) == 2:
        half = (sizes[roles[0]][0] + sizes[roles[1]][0]) / 4 + gap / 2
        return {roles[0]: (-half, 0.0), roles[1]: (half, 0.0)}
    widest = max(math.hypot(*size) for size in sizes.values())
    radius = (widest + gap) / (2 * math.sin(math.pi / len(roles)))
    return {
        role: (
            -radius * math.cos(2 * math.pi * i / len(roles)),
            radius * math.sin(2 * math.pi * i / len(roles)),
        )
        for i, role in enumerate(roles)
    }


def _rect(centre: tuple[float, float], size: tuple[float, float]) -> _Rect:
    (x, y), (width, height) = centre, size
    return x - width / 2, y - height / 2, x + width / 2, y + height / 2


def _overlaps(first: _Rect, second: _Rect) -> bool:
    return (
        first[0] < second[2]
        and second[0] < first[2]
        and first[1] < second[3]
        and second[1] < first[3]
    )


def _ends(
    edge: _Edge, centres: dict[str, tuple[float, float]], rects: dict[str, _Rect]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where the arrow's curve is computed from and to: box centres, or a box's top for a loop."""
    if not _is_loop(edge):
        return centres[edge.sender], centres[edge.receiver]
    x0, _, x1, top = rects[edge.sender]
    quarter = (x1 - x0) / 4
    return (x0 + quarter, top + 0.05), (x1 - quarter, top + 0.05)


def _layout(
    roles: list[str], sizes: dict[str, tuple[float, float]], edges: list[_Edge], gap: float
) -> tuple[dict[str, tuple[float, float]], dict[str, _Rect], list[_Rect]]:
    """Place boxes and labels so that every label is clear of every box and every other label.

    A label on a box bends its arrow further (up to ``_MAX_BEND``), and when that is not
    enough the boxes move apart; a label on an earlier label moves away from its arrow. Returns
    the box centres, the box extents and the label extents, with each label's position and
    alignment set. (With three roles or more, another role's arrow may still pass behind a
    label: labels have a white background.)
    """
    for edge in edges:
        edge.rad = _LOOP_BEND if _is_loop(edge) else _BEND
    spread = 1.0
    for _ in range(_MAX_TRIES):
        centres = _positions(roles, sizes, gap * spread)
        rects = {role: _rect(centres[role], sizes[role]) for role in roles}
        extents = [_label_extent(edge, centres, rects) for edge in edges]
        on_box = [
            i
            for i, extent in enumerate(extents)
            if any(_overlaps(_grown(extent), rect) for rect in rects.values())
        ]
        on_label = [
            i
            for i, extent in enumerate(extents)
            if i not in on_box and any(_overlaps(_grown(extent), e) for e in extents[:i])
        ]
        if not on_box and not on_label:
            break
        for index in on_label:
            edges[index].offset += 0.15
        limits = [_MAX_LOOP_BEND if _is_loop(edge) else _MAX_BEND for edge in edges]
        bendable = [i for i in on_box if abs(edges[i].rad) * 1.25 <= limits[i]]
        for index in bendable:
            edges[index].rad *= 1.25
        if len(bendable) < len(on_box):
            spread *= 1.2
    return centres, rects, extents


def _is_loop(edge: _Edge) -> bool:
    return edge.sender == edge.receiver


def _grown(rect: _Rect) -> _Rect:
    return rect[0] - _CLEARANCE, rect[1] - _CLEARANCE, rect[2] + _CLEARANCE, rect[3] + _CLEARANCE


def _control(
    edge: _Edge, centres: dict[str, tuple[float, float]], rects: dict[str, _Rect]
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
    """Start, control point and end of the arrow's curve, as Matplotlib's arc3 computes them."""
    (x1, y1), (x2, y2) = _ends(edge, centres, rects)
    control = ((x1 + x2) / 2 + edge.rad * (y2 - y1), (y1 + y2) / 2 - edge.rad * (x2 - x1))
    return (x1, y1), control, (x2, y2)


def _label_extent(
    edge: _Edge, centres: dict[str, tuple[float, float]], rects: dict[str, _Rect]
) -> _Rect:
    """Anchor the label just beyond the top of its arrow's bend, extending away from the arrow.

    The curve's top is half-way from the chord's middle to the control point; the label is
    anchored there by the corner (or edge) nearest the curve, so it lies wholly on the outer
    side of the curve's tangent.
    """
    start, control, end = _control(edge, centres, rects)
    middle = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    normal = (control[0] - middle[0], control[1] - middle[1])
    length = math.hypot(*normal) or 1.0
    normal = (normal[0] / length, normal[1] / length)
    x = (middle[0] + control[0]) / 2 + edge.offset * normal[0]
    y = (middle[1] + control[1]) / 2 + edge.offset * normal[1]
    width, height = edge.size
    horizontal: Literal["left", "center", "right"] = (
        "center" if abs(normal[0]) < 0.02 else "left" if normal[0] > 0 else "right"
    )
    vertical: Literal["bottom", "center", "top"] = (
        "center" if abs(normal[1]) < 0.02 else "bottom" if normal[1] > 0 else "top"
    )
    x0 = {"left": x, "center": x - width / 2, "right": x - width}[horizontal]
    y0 = {"bottom": y, "center": y - height / 2, "top": y - height}[vertical]
    edge.label.set_position((x, y))
    edge.label.set_horizontalalignment(horizontal)
    edge.label.set_verticalalignment(vertical)
    return x0, y0, x0 + width, y0 + height


def _box(
    axes: Axes, centre: tuple[float, float], size: tuple[float, float], missing: bool
) -> FancyBboxPatch:
    from matplotlib.patches import FancyBboxPatch

    x0, y0, _, _ = _rect(centre, size)
    box = FancyBboxPatch(
        (x0, y0),
        size[0],
        size[1],
        boxstyle="round,pad=0,rounding_size=0.08",
        facecolor="#fbeeee" if missing else "#eef3fb",
        edgecolor="tab:red" if missing else "#335",
        zorder=1,
    )
    axes.add_patch(box)
    return box


def _arrow(
    axes: Axes,
    edge: _Edge,
    centres: dict[str, tuple[float, float]],
    rects: dict[str, _Rect],
    boxes: dict[str, FancyBboxPatch],
) -> FancyArrowPatch:
    """The arrow of ``edge``, cut where it leaves and enters a box so its head shows."""
    from matplotlib.patches import ConnectionStyle, FancyArrowPatch

    start, end = _ends(edge, centres, rects)
    loop = _is_loop(edge)
    arrow = FancyArrowPatch(
        start,
        end,
        connectionstyle=ConnectionStyle.Arc3(rad=edge.rad),
        arrowstyle=_HEAD,
        mutation_scale=16,
        color=edge.label.get_color(),
        linewidth=1.3,
        patchA=None if loop else boxes[edge.sender],
        patchB=None if loop else boxes[edge.receiver],
        shrinkA=2,
        shrinkB=2,
        zorder=2,
    )
    axes.add_patch(arrow)
    return arrow


def _fit(figure: Figure, axes: Axes, extents: list[_Rect], title: str) -> None:
    """Size the figure to the drawing so that one data unit is one inch, with the title on top."""
    extents = extents or [(0.0, 0.0, 1.0, 1.0)]  # a flow without roles: only the title
    x0 = min(rect[0] for rect in extents) - _MARGIN
    y0 = min(rect[1] for rect in extents) - _MARGIN
    x1 = max(rect[2] for rect in extents) + _MARGIN
    y1 = max(rect[3] for rect in extents) + _MARGIN
    title_height = 0.45
    axes.text((x0 + x1) / 2, y1 + 0.1, title, ha="center", va="bottom", fontsize=12)
    y1 += title_height
    figure.set_size_inches(x1 - x0, y1 - y0)
    axes.set_xlim(x0, x1)
    axes.set_ylim(y0, y1)
