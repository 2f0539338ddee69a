"""The message-flow picture: labels clear of every box and of each other, arrowheads in sight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.patches import ArrowStyle

from fedbus.errors import InvalidArgumentError
from fedbus.run.config import load_config
from fedbus.run.federation import build_federation
from fedbus.run.flowchart import FlowPicture, check_flow_path, draw_flow, flow_figure
from fedbus.worker import MessageFlow
from fedbus.worker.flow import FlowEdge

CONFIGS = Path(__file__).parents[2] / "examples" / "configs"


@pytest.fixture(scope="module")
def secagg_flow() -> MessageFlow:
    config = load_config(CONFIGS / "secure.toml")
    return build_federation(config).simulation.message_flow()


def three_roles() -> MessageFlow:
    """Three roles, a self-loop and a type nobody handles: every case of the layout."""
    edges = [
        FlowEdge("server", "on_start", "train", ("client",)),
        FlowEdge("client", "on_start", "join", ("server",)),
        FlowEdge("client", "train", "gossip", ("client",)),
        FlowEdge("client", "train", "relay", ("edge",)),
        FlowEdge("edge", "relay", "train", ("client",)),
        FlowEdge("edge", "relay", "ping", ()),
    ]
    handled = {"server": ["join"], "client": ["train", "gossip"], "edge": ["relay"]}
    return MessageFlow(handled, edges)


def check_picture(picture: FlowPicture) -> None:
    figure = picture.figure
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    boxes = {role: box.get_window_extent(renderer) for role, box in picture.boxes.items()}
    labels = [label.get_window_extent(renderer) for label in picture.labels]
    assert len(labels) == len(picture.arrows) > 0
    for index, (label, text) in enumerate(zip(labels, picture.labels, strict=True)):
        for role, box in boxes.items():
            assert not label.overlaps(box), f"{text.get_text()!r} lies on the box of {role}"
        for other in labels[index + 1 :]:
            assert not label.overlaps(other), f"{text.get_text()!r} lies on another label"
        assert figure.bbox.contains(label.x0, label.y0), "label cut off at the bottom left"
        assert figure.bbox.contains(label.x1, label.y1), "label cut off at the top right"
    for arrow in picture.arrows:
        style = arrow.get_arrowstyle()
        assert isinstance(style, ArrowStyle.CurveFilledB)  # "-|>": a filled head at the end
        assert style.head_length > 0
        assert style.head_width > 0
        # the whole drawn arrow, head included, lies outside every box: nothing hides it
        drawn = arrow.get_transform().transform(arrow.get_path().vertices)
        for role, box in picture.boxes.items():
            outline = box.get_path().transformed(box.get_transform())
            inside = outline.contains_points(drawn)
            assert not np.any(inside), f"an arrow of {arrow.get_label()!r} is under {role}"


def test_secagg_labels_are_clear_of_the_boxes_and_arrowheads_show(
    secagg_flow: MessageFlow,
) -> None:
    picture = flow_figure(secagg_flow)
    assert set(picture.boxes) == {"server", "client"}
    assert len(picture.arrows) == 2  # server to client and client to server
    check_picture(picture)
    texts = "\n".join(label.get_text() for label in picture.labels)
    for message_type in ("secagg_train", "secagg_share", "secagg_mask", "secagg_unmask", "join"):
        assert message_type in texts


def test_three_roles_a_loop_and_a_missing_handler_lay_out_cleanly() -> None:
    picture = flow_figure(three_roles())
    assert set(picture.boxes) == {"server", "client", "edge", "(no handler)"}
    assert picture.boxes["(no handler)"].get_edgecolor()[0] > 0.5  # red
    check_picture(picture)


def test_draw_flow_writes_png_and_svg_and_refuses_others(tmp_path: Path) -> None:
    flow = three_roles()
    assert draw_flow(flow, tmp_path / "a" / "flow.png").read_bytes()[:4] == b"\x89PNG"
    assert draw_flow(flow, tmp_path / "flow.svg").read_bytes().startswith(b"<?xml")
    for bad in ("flow.pdf", "flow"):
        with pytest.raises(InvalidArgumentError, match=r"one of \.png, \.svg"):
            draw_flow(flow, tmp_path / bad)
        with pytest.raises(InvalidArgumentError, match="--output"):
            check_flow_path(bad, name="--output")
