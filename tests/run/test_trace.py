"""The message trace: one row per message in trace.csv, and ``fedbus trace`` reading it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedbus import ErrorCode
from fedbus.cli import main
from fedbus.errors import InvalidArgumentError
from fedbus.run.trace import (
    TRACE_FILE,
    TraceRow,
    filter_rows,
    format_summary,
    read_trace,
    trace_rows,
    write_trace,
)
from fedbus.runtime.simulation import ClientProfile, ProfileTable, simulate

from ..runtime.test_simulation import Answerer, Asker
from ..worker.test_dispatch import Quiet, Relay


def test_an_expired_request_and_its_error_reply_get_one_row_each(tmp_path: Path) -> None:
    slow = ProfileTable({1: ClientProfile(latency=10.0)})
    server = Asker([1, 2], ttl=5.0)  # client 1 is 10 s away: its request expires on the way
    result = simulate(server, [Answerer(node_id=1), Answerer(node_id=2)], profiles=slow)

    rows = list(trace_rows(result.trace))

    assert len(rows) == result.stats.messages_sent == 4
    assert len({row.message_id for row in rows}) == 4
    by_outcome = {(row.src, row.dst, row.outcome, row.error) for row in rows}
    assert by_outcome == {
        (0, 1, "expired", 0),
        (1, 0, "delivered", int(ErrorCode.MESSAGE_EXPIRED)),  # the runtime's error reply
        (0, 2, "delivered", 0),
        (2, 0, "delivered", 0),
    }
    expired = next(row for row in rows if row.outcome == "expired")
    assert expired.bytes > 0
    assert expired.sent == pytest.approx(expired.created)
    assert expired.settled > expired.sent + 10.0
    answer = next(row for row in rows if row.src == 2)
    request = next(row for row in rows if row.dst == 2)
    assert answer.reply_to == request.message_id
    assert answer.settled > answer.sent >= request.settled


def test_a_refused_message_gets_its_row_and_its_sender_the_error(tmp_path: Path) -> None:
    # The server handles finish: a client's finish to another client is not in the flow.
    result = simulate(Quiet(handles_finish=True), [Relay(), Relay()])

    rows = list(trace_rows(result.trace))

    assert len(rows) == result.stats.messages_sent == 2
    refused, error = rows
    assert (refused.src, refused.dst, refused.outcome, refused.type) == (1, 2, "refused", "finish")
    assert (error.dst, error.outcome, error.error) == (1, "delivered", ErrorCode.PERMISSION_DENIED)
    summary = format_summary(rows)
    assert "2 messages" in summary
    assert "1 delivered, 1 refused" in summary
    assert "finish 1 -> 2 (group -): refused" in summary


def test_rows_survive_the_file_unchanged(tmp_path: Path) -> None:
    slow = ProfileTable({1: ClientProfile(latency=10.0)})
    result = simulate(
        Asker([1, 2], ttl=5.0), [Answerer(node_id=1), Answerer(node_id=2)], profiles=slow
    )
    rows = list(trace_rows(result.trace))

    assert write_trace(tmp_path / TRACE_FILE, rows) == 4

    assert read_trace(tmp_path) == rows


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("id,kind\n", "not a fedbus trace"),
        (
            "message_id,type,src,dst,group,reply_to,bytes,created,sent,settled,outcome,error\n"
            "a,train,0,1,1,,12,0.0,0.0,zero,delivered,0\n",
            "line 2: settled = 'zero' is not a number",
        ),
        (
            "message_id,type,src,dst,group,reply_to,bytes,created,sent,settled,outcome,error\n"
            "a,train,0\n",
            "line 2: 3 values, expected 12",
        ),
    ],
)
def test_a_file_that_is_not_a_trace_is_refused_with_the_line(
    tmp_path: Path, text: str, words: str
) -> None:
    (tmp_path / TRACE_FILE).write_text(text, encoding="utf-8")

    with pytest.raises(InvalidArgumentError, match=words):
        read_trace(tmp_path)


def test_a_run_without_a_trace_says_how_one_is_written(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape("run.trace = false")):
        read_trace(tmp_path)


def test_filters_keep_a_node_a_type_and_a_round() -> None:
    rows = [
        TraceRow("a", "train", 0, 1, "1", "", 10, 0.0, 0.0, 0.1, "delivered", 0),
        TraceRow("b", "train", 1, 0, "1", "a", 10, 0.1, 0.2, 0.3, "delivered", 0),
        TraceRow("c", "evaluate", 0, 2, "2", "", 10, 0.4, 0.4, 0.5, "delivered", 0),
    ]

    assert [row.message_id for row in filter_rows(rows, node=1)] == ["a", "b"]
    assert [row.message_id for row in filter_rows(rows, message_type="evaluate")] == ["c"]
    assert [row.message_id for row in filter_rows(rows, server_round=1, node=0)] == ["a", "b"]
    assert filter_rows(rows, server_round=3) == []


RUN = ["federation.num_clients=6", "federation.clients_per_round=3", "federation.num_rounds=2"]


def _run(tmp_path: Path, *extra: str) -> Path:
    overrides = [*RUN, f"run.output_dir={tmp_path}", "run.plot=false", *extra]
    assert main(["run", "-q", *[f"--set={item}" for item in overrides]]) == 0
    (run_dir,) = tmp_path.iterdir()
    return run_dir


def test_fedbus_run_writes_one_row_per_message_and_fedbus_trace_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _run(tmp_path)
    capsys.readouterr()

    rows = read_trace(run_dir)

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert len(rows) == summary["messages"]
    assert {row.type for row in rows} >= {"train"}
    assert all(row.outcome == "delivered" for row in rows)
    assert sum(row.bytes for row in rows) == summary["bytes_up"] + summary["bytes_down"]

    assert main(["trace", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(rows)} messages" in printed
    assert "slowest nodes" in printed
    assert main(["trace", str(run_dir), "--round", "2", "--type", "train"]) == 0
    printed = capsys.readouterr().out
    in_round_two = filter_rows(rows, server_round=2, message_type="train")
    assert printed.startswith(f"{len(in_round_two)} of {len(rows)} messages (type train, round 2)")


def test_run_trace_false_writes_no_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _run(tmp_path, "run.trace=false")

    assert not (run_dir / TRACE_FILE).exists()
    assert main(["trace", str(run_dir)]) == 1
    assert "no trace" in capsys.readouterr().err
