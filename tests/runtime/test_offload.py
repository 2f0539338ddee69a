"""Tasks and outcomes: what crosses to a worker process and back, without pickle."""

from __future__ import annotations

import numpy as np

from fedbus.message import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict, mark_sent
from fedbus.runtime.simulation import HANDLER_TIME
from fedbus.runtime.simulation.offload import (
    ArrayTable,
    Outcome,
    RecordingComm,
    Task,
    decode_outcome,
    decode_task,
    encode_outcome,
    encode_task,
)


def request(node_id: int, model: ArrayRecord) -> Message:
    content = RecordDict({"arrays": model, "config": ConfigRecord({"lr": 0.1, "tag": "x"})})
    message = Message(content, node_id, "train", group_id="3")
    mark_sent(message, run_id=1, message_id=str(node_id), src_node_id=0)
    return message


def test_a_round_s_model_goes_into_the_table_once() -> None:
    model = ArrayRecord({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3)})
    table = ArrayTable()
    requests = [request(n, model) for n in range(1, 11)]
    blobs = [
        b"".join(encode_task(Task(n, n, requests[n - 1], 2.5, 100.0, RecordDict()), table))
        for n in range(1, 11)
    ]
    assert len(table.arrays) == 2
    assert all(len(blob) < 1000 for blob in blobs)  # metadata and config only
    task = decode_task(blobs[3], table.arrays)
    assert (task.task_id, task.node_id, task.time, task.speed) == (4, 4, 2.5, 100.0)
    assert task.message.metadata == requests[3].metadata
    assert list(task.message.content) == ["arrays", "config"]
    assert dict(task.message.content.config_records["config"]) == {"lr": 0.1, "tag": "x"}
    received = task.message.content.array_records["arrays"].to_numpy_dict()
    np.testing.assert_array_equal(received["w"], model.to_numpy_dict()["w"])


def test_an_outcome_keeps_its_actions_in_order_with_their_messages_and_state() -> None:
    reply = request(1, ArrayRecord({"w": np.full(5, 0.5)})).create_reply(
        RecordDict({"metrics": MetricRecord({"loss": float("nan")})})
    )
    state = RecordDict({"control": ArrayRecord({"c": np.arange(4.0)})})
    outcome = Outcome(7, [("work", 64), ("send", reply), ("stop", None)], state, seconds=0.25)
    back = decode_outcome(b"".join(encode_outcome(outcome)))
    assert (back.task_id, back.inline, back.seconds) == (7, False, 0.25)
    assert [kind for kind, _ in back.actions] == ["work", "send", "stop"]
    assert back.actions[0] == ("work", 64)
    sent = back.actions[1][1]
    assert sent.metadata == reply.metadata
    assert np.isnan(sent.content.metric_records["metrics"]["loss"])
    control = back.state.array_records["control"].to_numpy_dict()
    np.testing.assert_array_equal(control["c"], np.arange(4.0))


def test_the_recording_comm_shows_the_clock_the_loop_would() -> None:
    comm = RecordingComm(start=10.0, speed=50.0)
    assert comm.clock() == 10.0 + HANDLER_TIME
    comm.report_work(100)
    assert comm.clock() == 10.0 + (HANDLER_TIME + 100 / 50.0)
    timer = comm.call_later(1.0, lambda: None)
    timer.cancel()
    assert comm.inline
    assert comm.actions == [("work", 100)]
