"""The message trace: one row per message in RUN_DIR/trace/, and ``fedbus trace`` reading it."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fedbus import ErrorCode
from fedbus.cli import main
from fedbus.errors import InvalidArgumentError
from fedbus.run.outputs import atomic_file, save_arrays
from fedbus.run.trace import (
    TRACE_DIR,
    TraceRow,
    TraceWriter,
    chunk_paths,
    read_trace,
    trace_digest,
    trace_rows,
    write_csv,
)
from fedbus.run.trace_summary import filter_rows, format_summary
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
    writer = TraceWriter(tmp_path)

    writer.write_entries(result.trace[:3])
    writer.write_entries(result.trace[3:])

    assert [path.name for path in chunk_paths(tmp_path)] == ["000000.npz", "000001.npz"]
    assert read_trace(tmp_path) == rows
    single = tmp_path / "single"
    TraceWriter(single).write_rows(rows)
    assert trace_digest(single) == trace_digest(tmp_path)


def _chunk(tmp_path: Path, **changes: object) -> Path:
    """A valid chunk of two rows with ``changes`` made to its arrays (None: left out)."""
    rows = [
        TraceRow("a", "train", 0, 1, "1", "", 10, 0.0, 0.0, 0.1, "delivered", 0),
        TraceRow("b", "train", 1, 0, "1", "a", 10, 0.1, 0.2, 0.3, "delivered", 0),
    ]
    TraceWriter(tmp_path).write_rows(rows)
    (path,) = chunk_paths(tmp_path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive}
    for name, value in changes.items():
        if value is None:
            del arrays[name.replace("__", ".")]
        else:
            arrays[name.replace("__", ".")] = np.asarray(value)
    with atomic_file(path) as file:
        save_arrays(file, arrays)
    return path


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"settled": None}, "not a fedbus trace chunk ('settled')"),
        ({"settled": [0.1, float("nan")]}, "column 'settled' is not finite numbers"),
        ({"src": [0]}, "column 'src' is not one value per message (2)"),
        ({"type": [0, 5]}, "column 'type' holds codes without a name"),
        ({"type__names": [1.5]}, "column 'type.names' is not text"),
        ({"bytes": [0.5, 1.5]}, "column 'bytes' is not integers"),
    ],
)
def test_a_chunk_that_is_not_a_trace_is_refused_naming_the_column(
    tmp_path: Path, changes: dict[str, object], words: str
) -> None:
    path = _chunk(tmp_path, **changes)

    with pytest.raises(
        InvalidArgumentError, match=re.escape(f"{path}: ") + ".*" + re.escape(words)
    ):
        read_trace(tmp_path)


def test_a_chunk_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    (tmp_path / TRACE_DIR).mkdir()
    (tmp_path / TRACE_DIR / "000000.npz").write_bytes(b"id,kind\n")

    with pytest.raises(InvalidArgumentError, match=r"not a NumPy \.npz archive"):
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
    exported = tmp_path / "node1.csv"
    assert main(["trace", str(run_dir), "--node", "1", "--csv", str(exported)]) == 0
    with exported.open(encoding="utf-8", newline="") as file:
        lines = list(csv.reader(file))
    assert lines[0] == list(TraceRow._fields)
    assert [line[0] for line in lines[1:]] == [row.message_id for row in filter_rows(rows, node=1)]


def test_run_trace_false_writes_no_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _run(tmp_path, "run.trace=false")

    assert not (run_dir / TRACE_DIR).exists()
    assert main(["trace", str(run_dir)]) == 1
    assert "no trace" in capsys.readouterr().err


def test_text_with_commas_quotes_and_line_breaks_round_trips_and_exports(tmp_path: Path) -> None:
    rows = [
        TraceRow("a", "train", 0, 1, "1", "", 10, 0.0, 0.0, 0.1, "delivered", 0),
        TraceRow("b", 'odd,"type"', 1, 0, "round\n2", "a", 10, 0.1, 0.2, 1 / 3, "expired", 4),
        TraceRow("c", "carriage\rreturn", 0, 2, "2", "", 10, 0.4, 0.4, 0.5, "delivered", 0),
    ]

    TraceWriter(tmp_path).write_rows(rows)
    assert read_trace(tmp_path) == rows

    assert write_csv(tmp_path / "rows.csv", rows) == 3
    with (tmp_path / "rows.csv").open(encoding="utf-8", newline="") as file:
        lines = list(csv.reader(file))
    assert [tuple(line) for line in lines[1:]] == [tuple(map(str, row)) for row in rows]
