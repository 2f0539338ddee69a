"""The command line: run, flow and plot, their outputs and their errors."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from fedbus.cli import build_parser, main
from fedbus.run import RunDirectory, read_metrics

CONFIGS = Path(__file__).parents[1] / "examples" / "configs"


def run_dirs(root: Path) -> list[Path]:
    return sorted(path for path in root.iterdir() if path.is_dir())


def test_default_run_reaches_its_stated_accuracy(tmp_path: Path) -> None:
    """`fedbus run` with no config: FedAvg on digits, 100 clients, >= 0.90 test accuracy."""
    assert main(["run", "-q", "--set", f"run.output_dir={tmp_path}"]) == 0
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_test_accuracy"] >= 0.90
    assert summary["num_rounds"] == 80
    assert summary["failure"] is None
    for name in ("config.toml", "metrics.jsonl", "curves.png", "model.npz"):
        assert (run_dir / name).stat().st_size > 0, name
    metrics = read_metrics(run_dir)
    assert [line["round"] for line in metrics] == list(range(1, 81))
    first = metrics[0]
    assert first["clients_replied"] == 10
    assert first["clients_failed"] == 0
    assert first["bytes_down"] > 10 * 64 * 10 * 4  # ten copies of a 640-weight float32 model
    assert first["bytes_up"] > 0
    assert metrics[-1]["simulated_time"] == pytest.approx(summary["simulated_time"], rel=0.05)


def test_run_prints_where_it_wrote(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "-q", "--set", "federation.num_rounds=2", "--set", f"run.output_dir={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (run_dir,) = run_dirs(tmp_path)
    assert f"run directory:       {run_dir}" in out
    assert "final test accuracy: 0." in out


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    def run(seed: int) -> list[tuple[object, ...]]:
        out = tmp_path / f"seed{seed}-{len(list(tmp_path.iterdir()))}"
        args = ["run", "-q", "--set", "federation.num_rounds=5", "--set", f"run.output_dir={out}"]
        args += ["--set", "simulation.check_serialization=true"]
        assert main([*args, "--set", f"federation.seed={seed}"]) == 0
        (run_dir,) = run_dirs(out)
        keys = ("simulated_time", "test_accuracy", "test_loss", "train_loss", "bytes_up")
        return [tuple(line[k] for k in keys) for line in read_metrics(run_dir)]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_config_errors_exit_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "--set", "federation.clients_per_round=500", "--set", "trainer.lrr=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "federation.clients_per_round" in err
    assert "trainer.lrr" in err
    assert "did you mean trainer.lr" in err
    assert not (tmp_path / "runs").exists()


def test_a_run_that_cannot_finish_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "run", "-q",
        "--set", "simulation.dropout=1.0",
        "--set", "federation.round_timeout=5.0",
        "--set", f"run.output_dir={tmp_path}",
    ]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "fewer than min_replies=5, after 3 attempts" in err
    (run_dir,) = run_dirs(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert "after 3 attempts" in summary["failure"]


def test_dropout_without_timeout_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--set", "simulation.dropout=0.1", "--set", f"run.output_dir={tmp_path}"]
    assert main(args) == 2
    assert "federation.round_timeout" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_flow_prints_and_draws_the_standard_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = tmp_path / "flow.svg"
    assert main(["flow", "--output", str(picture)]) == 0
    out = capsys.readouterr().out
    assert "server handles: join, train, evaluate" in out
    assert "client handles: train, evaluate, finish, join" in out
    assert "server.on_start --train--> client" in out
    assert "client.on_start --join--> server" in out
    assert "NOBODY" not in out
    assert picture.read_text().startswith("<?xml")
    mermaid = (tmp_path / "flow.mmd").read_text()
    assert mermaid.startswith("flowchart LR\n")
    assert 'server -- "train (from on_start)" --> client' in mermaid


def test_plot_draws_several_runs(tmp_path: Path) -> None:
    for seed in (1, 2):
        args = ["run", "-q", "--set", "federation.num_rounds=3", "--set", f"federation.seed={seed}"]
        assert main([*args, "--set", f"run.output_dir={tmp_path / 'runs'}"]) == 0
    output = tmp_path / "both.png"
    assert main(["plot", *map(str, run_dirs(tmp_path / "runs")), "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_directory_without_metrics_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plot", str(tmp_path)]) != 0
    assert "metrics.jsonl" in capsys.readouterr().err


def test_the_console_entry_point_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fedbus", "run", "-q", "--set", "federation.num_rounds=1",
         "--set", f"run.output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "final test accuracy" in done.stdout


# -- the command line as a newcomer meets it: real processes, one-line errors that say what to do


def fedbus(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fedbus ARGS``; whatever it does, it must not print a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "fedbus", *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=cwd,
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert done.stderr.startswith("fedbus: "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def fake_run(root: Path, name: str, rounds: int = 5) -> Path:
    """A run directory with a few rounds of metrics, written without running anything."""
    run = RunDirectory.create(root, name, "", now=datetime(2025, 1, 1))
    for round_number in range(1, rounds + 1):
        run.append_metrics(
            {"round": round_number, "simulated_time": 2.0 * round_number,
             "test_accuracy": 0.5 + 0.05 * round_number, "test_loss": 1.0 / round_number,
             "train_loss": 0.9 / round_number}
        )  # fmt: skip
    return run.path


def test_version_prints_the_installed_version() -> None:
    done = fedbus("--version")
    assert done.returncode == 0
    assert done.stdout == f"fedbus {importlib.metadata.version('fedbus')}\n"
    assert re.fullmatch(r"fedbus \d+\.\d+\.\d+\S*\n", done.stdout)


TINY_RUN = [
    "-q", "--set", "federation.num_rounds=1", "--set", "federation.num_clients=4",
    "--set", "federation.clients_per_round=2", "--set", "run.plot=false",
    "--set", "run.save_model=false",
]  # fmt: skip


def log_lines(text: str, level: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"{level} fedbus.")]


def test_without_verbose_a_run_logs_nothing(tmp_path: Path) -> None:
    done = fedbus("run", *TINY_RUN, "--set", f"run.output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    assert log_lines(done.stderr, "INFO") == []
    assert "final test accuracy" in done.stdout


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_before_or_after_the_command_logs_more(tmp_path: Path, where: str) -> None:
    run = ["run", *TINY_RUN, "--set", f"run.output_dir={tmp_path}"]
    done = fedbus("-v", *run) if where == "before" else fedbus(*run, "-v")
    assert done.returncode == 0, done.stderr
    info = log_lines(done.stderr, "INFO")
    assert len(info) >= 2, done.stderr
    assert any("fedavg on digits" in line and "1 rounds" in line for line in info)
    assert log_lines(done.stderr, "DEBUG") == []


def test_double_verbose_logs_every_setting(tmp_path: Path) -> None:
    done = fedbus("run", *TINY_RUN, "--set", f"run.output_dir={tmp_path}", "-vv")
    assert done.returncode == 0, done.stderr
    assert any("every setting" in line for line in log_lines(done.stderr, "DEBUG"))
    assert "num_clients = 4" in done.stderr


def parsers(
    parser: argparse.ArgumentParser, path: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand's parser, with the words that call it (``"keys revoke"``)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found.append((f"{path} {name}".strip(), command))
                found += parsers(command, f"{path} {name}")
    return found


def test_every_command_has_a_description_an_example_and_help_for_each_argument() -> None:
    commands = parsers(build_parser(), "")
    names = [name for name, _ in commands]
    assert {"run", "flow", "plot", "server", "client", "keys", "keys revoke"} <= set(names)
    for name, command in commands:
        assert command.description, name
        assert f"fedbus {name} " in (command.epilog or ""), name
        assert command.formatter_class is argparse.RawDescriptionHelpFormatter, name
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help not in (None, "", argparse.SUPPRESS), (name, action.dest)


@pytest.mark.parametrize("command", [["plot"], ["client"], ["keys", "list"]])
def test_help_shows_the_examples(command: list[str]) -> None:
    done = fedbus(*command, "--help")
    assert done.returncode == 0
    examples = done.stdout.split("\nexample")[1]
    assert f"fedbus {' '.join(command)} " in examples
    assert "-v, --verbose" in done.stdout


def test_help_of_plot_explains_run_dir_and_client_explains_server() -> None:
    assert "RUN_DIR        a run directory" in fedbus("plot", "--help").stdout
    assert re.search(r"--server HOST:PORT\s+the address", fedbus("client", "--help").stdout)


def test_listen_without_a_port_is_refused_in_one_line() -> None:
    done = fedbus("server", "--listen", "127.0.0.1", "--insecure")
    assert done.returncode == 2
    err = one_line_error(done)
    assert "needs a port" in err
    assert "--listen 127.0.0.1:8080" in err
    assert done.stdout == ""


def test_server_without_a_port_is_refused_in_one_line() -> None:
    done = fedbus("client", "--server", "example.org", "--insecure", "--partition", "0")
    assert done.returncode == 2
    err = one_line_error(done)
    assert "needs a port" in err
    assert "--server 127.0.0.1:8080" in err


@pytest.mark.parametrize(
    ("option", "address", "expected"),
    [
        ("--listen", "::1:8080", "IPv6 address goes in brackets"),
        ("--listen", "[::1]", "needs a port"),
        ("--listen", "127.0.0.1:", "port must be a number from 0 to 65535"),
        ("--listen", "127.0.0.1:65536", "port must be a number from 0 to 65535"),
        ("--listen", "127.0.0.1:http", "port must be a number"),
        ("--listen", ":8080", "expected HOST:PORT"),
        ("--listen", "300.1.2.3:8080", "not a valid host name or IPv4 address"),
        ("--listen", "[not-ipv6]:8080", "not a valid IPv6 address"),
        ("--server", "127.0.0.1:0", "port must be a number from 1 to 65535"),
        ("--server", "host name:8080", "not a valid host name"),
    ],
)
def test_bad_addresses_are_refused_saying_what_to_give(
    option: str, address: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = "server" if option == "--listen" else "client"
    args = [command, option, address, "--insecure"] + (["--partition", "0"] * (command == "client"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert expected in err
    assert f"{option} " in err.split(":", 2)[2]  # an example of what to give


@pytest.mark.parametrize(
    ("option", "address"),
    [
        ("--listen", "0.0.0.0:8080"),
        ("--listen", "[::]:8080"),
        ("--listen", "127.0.0.1:0"),  # any free port: the server logs which
        ("--server", "[::1]:8080"),
        ("--server", "server.example.org:443"),
        ("--server", "localhost:65535"),
    ],
)
def test_good_addresses_pass_on_to_the_next_check(
    option: str, address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if option == "--listen":  # neither TLS nor --insecure: refused after the address
        assert main(["server", option, address]) == 2
        assert "--tls-cert and --tls-key, or --insecure" in capsys.readouterr().err
    else:
        args = ["client", option, address, "--partition", "0", "--insecure"]
        assert main([*args, "--root-cert", "ca.pem"]) == 2
        assert "give --root-cert or --insecure, not both" in capsys.readouterr().err


MAGIC = {
    ".pdf": (b"%PDF",),
    ".jpg": (b"\xff\xd8",),
    ".svg": (b"<?xml", b"<svg"),
    ".png": (b"\x89PNG",),
}


@pytest.mark.parametrize("suffix", [".pdf", ".jpg", ".svg"])
def test_plot_writes_the_format_of_its_suffix(tmp_path: Path, suffix: str) -> None:
    output = tmp_path / f"comparison{suffix}"
    done = fedbus("plot", str(fake_run(tmp_path, "one")), "--output", str(output))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {output}\n"
    assert output.read_bytes().startswith(MAGIC[suffix])


def test_plot_refuses_a_format_it_cannot_write_before_any_work(tmp_path: Path) -> None:
    output = tmp_path / "comparison.docx"
    # the run directory does not exist either: the suffix is checked first
    done = fedbus("plot", str(tmp_path / "missing"), "--output", str(output))
    err = one_line_error(done)
    assert "'.docx' is not a picture format" in err
    assert all(suffix in err for suffix in (".pdf", ".png", ".svg", ".jpg"))
    assert "--output" in err
    assert not output.exists()


def test_flow_refuses_a_format_it_cannot_write_before_printing(tmp_path: Path) -> None:
    done = fedbus("flow", "--output", str(tmp_path / "flow.pdf"))
    err = one_line_error(done)
    assert "end the file name with one of .png, .svg" in err
    assert done.stdout == ""  # the graph is not printed
    assert list(tmp_path.iterdir()) == []


def test_flow_writes_into_a_directory_it_creates(tmp_path: Path) -> None:
    picture = tmp_path / "pictures" / "secagg.svg"
    done = fedbus("flow", str(CONFIGS / "secure.toml"), "--output", str(picture))
    assert done.returncode == 0, done.stderr
    assert "server.on_start --secagg_train--> client" in done.stdout
    assert picture.read_bytes().startswith(MAGIC[".svg"])
    assert picture.with_suffix(".mmd").read_text().startswith("flowchart LR\n")
