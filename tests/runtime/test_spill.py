"""Replies beyond the simulation's memory budget wait in spill files: the same run, bit for bit."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.fl.strategy import WeightedAverage
from fedbus.message import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from fedbus.message import spill as spill_module
from fedbus.message.codec import encode_message
from fedbus.message.spill import SpillDirectory, SpillError, drop_resident
from fedbus.run import load_config
from fedbus.run.federation import Federation, build_federation
from fedbus.runtime.simulation import Simulation, SimulationResult
from fedbus.runtime.simulation.loop import SPILL_FROM_BYTES

from .test_parallel import fingerprint as run_fingerprint

# An MLP of 64 * 256 + 256 * 10 weights: each reply is well over SPILL_FROM_BYTES.
BASE = [
    "federation.num_clients=12",
    "federation.clients_per_round=6",
    "federation.num_rounds=3",
    "model.name=mlp",
    "model.hidden=256",
    "trainer.epochs=1",
    "simulation.workers=1",
]
SPILL_COUNTERS = ("messages_spilled", "bytes_spilled", "peak_in_memory_bytes")


def run_configured(overrides: list[str]) -> tuple[Federation, SimulationResult]:
    federation = build_federation(load_config(None, [*BASE, *overrides]))
    return federation, federation.simulation.run()


def fingerprint(federation: Federation, result: SimulationResult) -> dict[str, Any]:
    """Everything a run produced but where its replies waited."""
    return run_fingerprint(federation, result, where=SPILL_COUNTERS)


STRATEGIES = {
    "fedavg": ["strategy.name=fedavg"],
    "fedadam": ["strategy.name=fedadam"],
    "scaffold": ["strategy.name=scaffold"],
    "median (robust, keeps every reply)": ["strategy.name=median"],
}


@pytest.mark.parametrize("overrides", STRATEGIES.values(), ids=STRATEGIES.keys())
def test_a_run_is_the_same_bit_for_bit_whatever_the_memory_budget(
    overrides: list[str], tmp_path: Path
) -> None:
    spill_dir = f"simulation.spill_dir={tmp_path}"
    reference = run_configured([*overrides, "simulation.memory_budget_mb=1000"])
    assert reference[1].stats.messages_spilled == 0
    every = run_configured([*overrides, "simulation.memory_budget_mb=0", spill_dir])
    some = run_configured([*overrides, "simulation.memory_budget_mb=0.2", spill_dir])
    replies = 6 * 3
    assert every[1].stats.messages_spilled == replies
    assert every[1].stats.peak_in_memory_bytes == 0
    assert 0 < some[1].stats.messages_spilled < replies
    assert 0 < some[1].stats.peak_in_memory_bytes <= 0.2e6
    assert fingerprint(*every) == fingerprint(*reference)
    assert fingerprint(*some) == fingerprint(*reference)
    # The run's folder of spill files is gone, and it never named a file.
    assert list(tmp_path.iterdir()) == []


def test_a_budget_that_holds_a_round_spills_nothing() -> None:
    _, result = run_configured([])  # the default budget
    assert result.stats.messages_spilled == 0
    assert result.stats.peak_in_memory_bytes >= 6 * SPILL_FROM_BYTES


def test_a_full_disk_fails_the_replies_it_cannot_hold_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spill_module.os, "posix_fallocate", disk_full)
    overrides = [
        "simulation.memory_budget_mb=0.2",  # two replies fit (77 kB each): the others cannot
        f"simulation.spill_dir={tmp_path}",
        "federation.min_replies=1",
    ]
    with caplog.at_level(logging.ERROR, logger="fedbus.simulation"):
        federation, result = run_configured(overrides)
    history = federation.server.history
    assert [record.round for record in history] == [1, 2, 3]
    assert all(0 < record.clients_replied < 6 for record in history)
    assert all(record.clients_failed == 6 - record.clients_replied for record in history)
    assert result.stats.events["no_room"] == sum(6 - record.clients_replied for record in history)
    assert "No space left on device" in caplog.text
    assert "simulation.spill_dir" in caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("budget", [-1, float("nan"), "64", True])
def test_the_budget_is_checked(budget: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="memory_budget_mb"):
        Simulation(build_federation(load_config(None, BASE)).server, [], memory_budget_mb=budget)


def test_the_config_refuses_a_negative_budget() -> None:
    with pytest.raises(ConfigError, match="memory_budget_mb"):
        load_config(None, ["simulation.memory_budget_mb=-1"])


# -- SpillDirectory ------------------------------------------------------------------------------
def a_message(size: int = 100_000) -> Message:
    weights = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    content = RecordDict(
        {"model": ArrayRecord({"w": weights}), "config": ConfigRecord({"round": 3, "tag": "x"})}
    )
    return Message(content, 0, "train")


@pytest.mark.parametrize("given_frame", [False, True], ids=["encoded into the file", "frame"])
def test_a_spilled_message_equals_the_original_and_views_its_file(
    tmp_path: Path, given_frame: bool
) -> None:
    spill = SpillDirectory(tmp_path)
    message = a_message()
    frame = encode_message(message)
    copy = spill.spill(message, frame if given_frame else None)
    assert bytes(encode_message(copy)) == bytes(frame)
    weights = copy.content["model"]["w"].numpy()
    assert not weights.flags.writeable
    assert not weights.flags.owndata  # a view of the mapped file, not a copy
    assert spill.messages_spilled == 1
    assert spill.bytes_spilled == len(frame)
    assert spill.path is not None
    assert list(spill.path.iterdir()) == []  # nameless: the mapping alone keeps the bytes
    spill.close()
    assert list(tmp_path.iterdir()) == []
    assert float(weights.sum()) == float(message.content["model"]["w"].numpy().sum())


def test_a_spill_directory_is_made_only_when_needed(tmp_path: Path) -> None:
    spill = SpillDirectory(tmp_path / "not" / "yet")
    assert spill.path is None
    spill.close()
    assert not (tmp_path / "not").exists()


def test_a_spill_that_cannot_be_written_says_what_to_do(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where a directory should be")
    spill = SpillDirectory(blocked, ("simulation.spill_dir", "simulation.memory_budget_mb"))
    with pytest.raises(SpillError, match=r"could not spill .*'train'.*simulation\.spill_dir"):
        spill.spill(a_message(10))
    assert spill.messages_spilled == 0


def test_a_message_that_failed_to_spill_is_not_counted_and_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spill_module.os, "posix_fallocate", disk_full)
    spill = SpillDirectory(tmp_path)
    with pytest.raises(SpillError, match="No space left on device; free space there"):
        spill.spill(a_message())
    assert (spill.messages_spilled, spill.bytes_spilled) == (0, 0)
    assert spill.path is not None
    assert list(spill.path.iterdir()) == []


def resident_file_kib() -> int:
    """This process's resident pages of mapped files (``RssFile``), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("this system does not report RssFile")


def test_pages_of_a_spilled_message_are_let_go_and_read_back(tmp_path: Path) -> None:
    spill = SpillDirectory(tmp_path)
    copy = spill.spill(a_message(16 << 20))  # 64 MiB of float32
    weights = copy.content["model"]["w"].numpy()
    total = float(weights.sum(dtype=np.float64))  # reads every page
    before = resident_file_kib()
    drop_resident(weights)
    assert before - resident_file_kib() > 60 * 1024
    assert float(weights.sum(dtype=np.float64)) == total  # the same bytes, from the file
    spill.close()


def test_letting_go_leaves_any_other_memory_alone() -> None:
    values = np.arange(1 << 20, dtype=np.float64)  # anonymous memory: dropping would zero it
    drop_resident(values)
    drop_resident(values[1:])  # not page-aligned
    assert float(values.sum()) == float((1 << 20) * ((1 << 20) - 1) // 2)


def test_folding_a_spilled_reply_keeps_one_block_of_it_resident(tmp_path: Path) -> None:
    spill = SpillDirectory(tmp_path)
    weights = np.random.default_rng(1).standard_normal(32 << 20).astype(np.float32)  # 128 MiB
    content = RecordDict(
        {"arrays": ArrayRecord({"w": weights}), "metrics": MetricRecord({"num_examples": 2})}
    )
    aggregate = WeightedAverage(ArrayRecord({"w": weights}))
    aggregate.add(1, content)  # from memory
    before = resident_file_kib()
    aggregate.add(2, spill.spill(Message(content, 0, "train")).content)  # from a spill file
    assert resident_file_kib() - before < 32 * 1024  # a 128 MiB reply, at most 8 MB of it
    averaged = aggregate.result()[0]["w"].numpy()
    assert averaged.tobytes() == weights.tobytes()
    spill.close()
