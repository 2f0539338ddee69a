"""The live dashboard: its two sources, its HTTP server, the page in a browser, and the CLI."""

from __future__ import annotations

import http.client
import io
import json
import math
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fedbus.cli import main
from fedbus.errors import ConfigError, InvalidArgumentError
from fedbus.run.config import load_config
from fedbus.run.dashboard import LiveRun, RunDirSource, serve_dashboard
from fedbus.run.dashboard.server import DashboardHandle
from fedbus.run.dashboard.sources import FLOW_CLIENTS, MAX_NODES, TRACE_ROWS
from fedbus.run.experiment import run_experiment
from fedbus.run.outputs import read_metrics

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 60.0  # seconds: only a stuck test waits this long
SNAPSHOT_KEYS = {
    "name",
    "run_dir",
    "state",
    "num_rounds",
    "round",
    "metrics",
    "waiting",
    "nodes",
    "node_totals",
    "flow",
    "trace",
    "version",
}
NODE_KEYS = {
    "id",
    "connected",
    "last_heartbeat",
    "bytes_up",
    "bytes_down",
    "messages",
    "failures",
    "staleness",
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of a real simulated federation: 6 clients, 3 per round, 3 rounds."""
    options = [
        "federation.num_clients=6",
        "federation.clients_per_round=3",
        "federation.clients_per_evaluation=3",
        "federation.num_rounds=3",
        "run.plot=false",
        f"run.output_dir={tmp_path_factory.mktemp('runs')}",
    ]
    return run_experiment(load_config(None, options), quiet=True).run_dir


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """Status, headers and body of a GET, errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def _raw(handle: DashboardHandle, method: str, path: str, **headers: str) -> tuple[int, bytes]:
    """A request sent as written (urllib would clean the path)."""
    connection = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=WAIT)
    try:
        connection.putrequest(method, path, skip_host=True)
        connection.putheader("Host", headers.pop("Host", f"127.0.0.1:{handle.port}"))
        for name, value in headers.items():
            connection.putheader(name.replace("_", "-"), value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- the sources ------------------------------------------------------------------------------


def test_a_run_directory_shows_what_its_files_say(finished_run: Path) -> None:
    source = RunDirSource(finished_run)

    snapshot = source.snapshot()

    summary = json.loads((finished_run / "summary.json").read_text())
    assert set(snapshot) >= SNAPSHOT_KEYS
    assert (snapshot["state"], snapshot["num_rounds"], snapshot["round"]) == ("finished", 3, 3)
    assert snapshot["metrics"] == read_metrics(finished_run)
    assert snapshot["waiting"] is None
    assert snapshot["error"] is None
    totals = snapshot["node_totals"]
    assert totals["messages"] == summary["messages"]
    # every byte sent is received once: up (clients to server) plus down
    assert totals["bytes_up"] == totals["bytes_down"] == summary["bytes_up"] + summary["bytes_down"]
    server = next(node for node in snapshot["nodes"] if node["id"] == 0)
    assert server["bytes_up"] == summary["bytes_down"]
    assert server["bytes_down"] == summary["bytes_up"]
    assert all(set(node) == NODE_KEYS for node in snapshot["nodes"])
    assert sum(edge["count"] for edge in snapshot["flow"]) == summary["messages"]
    assert {edge["type"] for edge in snapshot["flow"]} >= {"train"}
    assert len(snapshot["trace"]) == min(summary["messages"], TRACE_ROWS)
    json.dumps(snapshot, allow_nan=False)  # strict JSON
    assert source.snapshot() is snapshot  # nothing changed: nothing read again


def test_a_run_directory_is_followed_as_it_is_written(finished_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "growing"
    run_dir.mkdir()
    shutil.copy(finished_run / "config.toml", run_dir)
    source = RunDirSource(run_dir, name="growing")
    first = source.snapshot()
    assert (first["name"], first["state"], first["round"], first["metrics"]) == (
        "growing",
        "running",
        0,
        [],
    )
    lines = (finished_run / "metrics.jsonl").read_text().splitlines(keepends=True)

    with (run_dir / "metrics.jsonl").open("a") as file:
        file.write(lines[0])
    second = source.snapshot()
    (run_dir / "summary.json").write_text(json.dumps({"failure": "too few replies"}))
    third = source.snapshot()

    assert second["round"] == 1
    assert second["version"] > first["version"]
    assert (third["state"], third["version"] > second["version"]) == ("failed", True)


def test_a_half_written_file_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[federation]\nnum_rounds = 'many'\n")
    (tmp_path / "metrics.jsonl").write_text('{"round": 1}\nnot json\n{"round": 2}\n')

    snapshot = RunDirSource(tmp_path).snapshot()

    assert snapshot["num_rounds"] is None
    assert "config.toml" in snapshot["error"]
    assert "metrics.jsonl" in snapshot["error"]
    assert snapshot["state"] == "running"


def _feed_round(run: LiveRun, server_round: int, clients: list[int], size: int = 100) -> None:
    run.round_waiting(server_round, clients, 0, len(clients), deadline=None, since=0.0)
    for client in clients:
        run.message(0, client, "train", size, "delivered", float(server_round))
        run.message(client, 0, "train", size + 1, "delivered", server_round + 0.5)
    run.round_ended({"round": server_round, "test_accuracy": 0.1 * server_round, "train_loss": 1.0})


def test_a_live_run_fed_from_another_thread() -> None:
    run = LiveRun("live", Path("runs/live"), num_rounds=4)
    changes: list[int] = []
    run.add_listener(lambda: changes.append(run.version))

    feeder = threading.Thread(target=_feed_round, args=(run, 1, [1, 2, 3]))
    feeder.start()
    feeder.join()
    run.round_waiting(2, [2, 3], replies=1, expected=3, deadline=12.5, since=10.0)
    run.node_seen(4, connected=False, heartbeat=5.0)
    run.message(0, 4, "train", 50, "unavailable", 11.0)
    snapshot = run.snapshot()

    assert set(snapshot) >= SNAPSHOT_KEYS
    assert (snapshot["state"], snapshot["round"], snapshot["num_rounds"]) == ("running", 1, 4)
    assert snapshot["waiting"] == {
        "round": 2,
        "nodes": [2, 3],
        "replies": 1,
        "expected": 3,
        "deadline": 12.5,
        "since": 10.0,
    }
    assert [line["round"] for line in snapshot["metrics"]] == [1]
    nodes = {node["id"]: node for node in snapshot["nodes"]}
    assert snapshot["nodes"][0]["id"] == 4  # disconnected: the worst
    assert nodes[4]["connected"] is False
    assert nodes[4]["last_heartbeat"] == 5.0
    assert (nodes[1]["bytes_up"], nodes[1]["bytes_down"], nodes[1]["messages"]) == (101, 100, 1)
    assert nodes[0]["failures"] == 1  # its message to 4 was not delivered
    assert snapshot["node_totals"]["messages"] == 7
    edges = {(edge["src"], edge["dst"], edge["type"]): edge for edge in snapshot["flow"]}
    assert edges[0, 4, "train"]["failures"] == 1
    assert edges[2, 0, "train"]["bytes"] == 101
    assert snapshot["trace"][-1]["outcome"] == "unavailable"
    # rounds and waits are announced at once; messages are not
    assert len(changes) == 4  # waiting 1, ended 1, waiting 2, node 4 seen
    assert run.snapshot() is snapshot

    run.round_ended({"round": 2, "train_loss": math.nan})
    run.finished("finished", {"final_test_accuracy": 0.5})
    done = run.snapshot()
    assert (done["state"], done["round"], done["waiting"]) == ("finished", 2, None)
    assert done["metrics"][-1]["train_loss"] is None  # NaN: strict JSON has none
    assert done["version"] > snapshot["version"]
    json.dumps(done, allow_nan=False)


def test_a_live_run_counts_every_message_of_many_threads() -> None:
    run = LiveRun("busy", Path("runs/busy"), num_rounds=1)

    def send(client: int) -> None:
        for _ in range(500):
            run.message(client, 0, "train", 10, "delivered", 1.0)

    threads = [threading.Thread(target=send, args=(client,)) for client in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    snapshot = run.snapshot()
    assert snapshot["node_totals"]["messages"] == 4000
    assert snapshot["version"] == 4000
    assert len(snapshot["trace"]) == TRACE_ROWS


def test_many_clients_are_summed_in_the_flow_and_the_worst_nodes_listed() -> None:
    run = LiveRun("fleet", Path("runs/fleet"), num_rounds=2)
    clients = list(range(1, 1001))
    _feed_round(run, 1, clients)
    run.message(0, 7, "evaluate", 20, "expired", 2.0)

    snapshot = run.snapshot()

    assert len(clients) > FLOW_CLIENTS
    assert {(edge["src"], edge["dst"], edge["type"]) for edge in snapshot["flow"]} == {
        (0, "clients", "train"),
        ("clients", 0, "train"),
        (0, "clients", "evaluate"),
    }
    up = next(edge for edge in snapshot["flow"] if edge["src"] == "clients")
    assert (up["count"], up["bytes"]) == (1000, 101_000)
    assert len(snapshot["nodes"]) == MAX_NODES
    assert snapshot["node_totals"]["count"] == 1001
    assert snapshot["nodes"][0]["id"] == 0  # the one with a failure


def test_a_live_run_refuses_an_unknown_end() -> None:
    run = LiveRun("x", Path("x"), num_rounds=1)
    with pytest.raises(InvalidArgumentError, match="expected one of finished, failed"):
        run.finished("done", None)


# -- the server -------------------------------------------------------------------------------


@pytest.fixture
def served(finished_run: Path) -> Iterator[DashboardHandle]:
    with serve_dashboard([RunDirSource(finished_run)]) as handle:
        yield handle


def test_the_server_answers_get_only(served: DashboardHandle) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        status, _ = _raw(served, method, "/api/runs", Content_Length="0")
        assert status == 405, method


def test_unknown_paths_and_path_traversal_get_404(served: DashboardHandle) -> None:
    for path in (
        "/nothing",
        "/api/run/1",
        "/api/run/-1",
        "/static/",
        "/static/../server.py",
        "/static/..%2fserver.py",
        "/static/%2e%2e/sources.py",
        "/static/../../../../etc/passwd",
        "/../../etc/passwd",
        "/static/app.py",
    ):
        status, body = _raw(served, "GET", path)
        assert status == 404, path
        assert b"import" not in body
        assert b"root:" not in body
    status, _ = _raw(served, "GET", "/" + "a" * 5000)
    assert status == 414


def test_every_answer_has_the_security_headers(served: DashboardHandle) -> None:
    for path, status in (("", 200), ("static/app.js", 200), ("api/runs", 200), ("x", 404)):
        code, headers, _ = _get(served.url + path)
        assert code == status
        assert headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert headers["X-Content-Type-Options"] == "nosniff"
    _, headers, page = _get(served.url)
    assert b"<script>" not in page  # the page's script is a file: no inline script
    assert headers["Content-Type"] == "text/html; charset=utf-8"


def test_the_api_gives_snapshots_and_says_when_nothing_changed(
    served: DashboardHandle, finished_run: Path
) -> None:
    status, _, body = _get(served.url + "api/runs")
    (snapshot,) = json.loads(body)
    assert status == 200
    assert (snapshot["run_dir"], snapshot["round"]) == (str(finished_run), 3)
    version = snapshot["version"]

    unchanged, _, empty = _get(f"{served.url}api/run/0?since={version}")
    changed, _, again = _get(f"{served.url}api/run/0?since={version - 1}")

    assert (unchanged, empty) == (204, b"")
    assert changed == 200
    assert json.loads(again)["version"] == version


def test_a_request_for_another_host_is_refused_without_a_token(served: DashboardHandle) -> None:
    # a page of evil.example that rebinds its name to 127.0.0.1 must not read the runs
    status, body = _raw(served, "GET", "/api/runs", Host=f"evil.example:{served.port}")
    assert status == 403
    assert b"round" not in body


def test_listening_beyond_loopback_needs_a_token() -> None:
    for host in ("0.0.0.0", "192.0.2.1", "example.org", "::"):
        with pytest.raises(ConfigError, match=r"needs? .*token|give it a token"):
            serve_dashboard([], host=host)
    with pytest.raises(ConfigError, match="token is empty"):
        serve_dashboard([], token="  ")


def test_with_a_token_every_request_must_carry_it(finished_run: Path) -> None:
    token = "s3cret-token-for-tests"
    with serve_dashboard([RunDirSource(finished_run)], token=token) as handle:
        for path in ("", "api/runs", "api/run/0", "static/app.js", "nothing"):
            status, _, body = _get(handle.url + path)
            assert status == 403, path
            assert b"round" not in body
            assert b"fedbus" not in body.lower().replace(b"fedbus_", b"")
        wrong, _, _ = _get(handle.url + "api/runs?token=guess")
        by_query, _, _ = _get(f"{handle.url}api/runs?token={token}")
        by_header, _, body = _get(handle.url + "api/runs", {"X-Fedbus-Token": token})
        assert (wrong, by_query, by_header) == (403, 200, 200)
        assert json.loads(body)[0]["round"] == 3

        # the page's address trades the token for a cookie, and drops it
        connection = http.client.HTTPConnection("127.0.0.1", handle.port, timeout=WAIT)
        connection.request("GET", f"/?token={token}")
        response = connection.getresponse()
        response.read()
        connection.close()
        assert response.status == 303
        assert response.getheader("Location") == "/"
        cookie = response.getheader("Set-Cookie").split(";")[0]
        assert token not in cookie
        with_cookie, _, _ = _get(handle.url + "api/runs", {"Cookie": cookie})
        forged, _, _ = _get(handle.url + "api/runs", {"Cookie": "fedbus_dashboard=00"})
        assert (with_cookie, forged) == (200, 403)


def test_the_event_stream_pushes_a_change_as_it_happens() -> None:
    run = LiveRun("live", Path("runs/live"), num_rounds=3)
    with serve_dashboard([run]) as handle:
        stream = urllib.request.urlopen(handle.url + "api/events", timeout=WAIT)
        with stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            first = _next_event(stream)
            run.round_ended({"round": 1, "test_accuracy": 0.25})
            second = _next_event(stream)
    assert (first["index"], first["snapshot"]["round"]) == (0, 0)
    assert second["snapshot"]["round"] == 1
    assert second["snapshot"]["metrics"] == [{"round": 1, "test_accuracy": 0.25}]


def _next_event(stream: io.BufferedIOBase) -> Any:
    while True:
        line = stream.readline()
        if line.startswith(b"data: "):
            return json.loads(line.removeprefix(b"data: "))


# -- the command line -------------------------------------------------------------------------


def test_the_cli_refuses_a_missing_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err
    assert "nowhere" in error
    assert "not a run directory" in error


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1", "needs a port"),
        ("127.0.0.1:http", "the port must be a number"),
        ("::1:8050", "IPv6 address goes in brackets"),
        ("0.0.0.0:8050", "give it a token"),
    ],
)
def test_the_cli_refuses_a_bad_listen_address(
    finished_run: Path, listen: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("FEDBUS_DASHBOARD_TOKEN", raising=False)
        assert main(["dashboard", str(finished_run), "--listen", listen]) == 2
    assert expected in capsys.readouterr().err


def test_the_cli_refuses_an_unreadable_token_file(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["dashboard", str(finished_run), "--token-file", str(tmp_path / "none.txt")]
    assert main(argv) == 2
    assert "cannot read the dashboard's --token-file" in capsys.readouterr().err


def test_the_cli_serves_its_run_directories(
    finished_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Any] = []

    def fetch_instead_of_waiting(handle: DashboardHandle) -> None:
        seen.append(json.loads(_get(handle.url + "api/runs")[2]))

    monkeypatch.setattr(DashboardHandle, "wait", fetch_instead_of_waiting)
    argv = ["dashboard", str(finished_run), str(finished_run), "--listen", "127.0.0.1:0"]

    assert main(argv) == 0

    (runs,) = seen
    assert [run["round"] for run in runs] == [3, 3]
    assert "dashboard of 2 run(s) at http://127.0.0.1:" in capsys.readouterr().out


# -- the page in a browser --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven by Debian's chromedriver; nothing is downloaded."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no chromium and chromedriver: `make browser` installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch a driver
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _until(browser: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT).until(condition, message=f"the page never showed {what}")


def _shown(browser: Any, script: str) -> Callable[[Any], Any]:
    return lambda driver: driver.execute_script(script)


def _round_of(index: int) -> str:
    return (
        f"const r = document.querySelector('#run-{index} .round');"
        "return r ? r.dataset.round : null;"
    )


def _not_blank(png: bytes) -> None:
    """A screenshot of a drawn page: many colours, and far from one flat grey."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50
    assert float(pixels.mean(axis=2).std()) > 10.0


@pytest.mark.slow
@pytest.mark.xdist_group("browser")
def test_the_page_shows_a_finished_run(browser: Any, finished_run: Path) -> None:
    token = "page-token"
    with serve_dashboard([RunDirSource(finished_run)], token=token) as handle:
        browser.get(f"{handle.url}?token={token}")
        _until(browser, lambda d: d.execute_script(_round_of(0)) == "3", "round 3")

        page = browser.execute_script(
            "const run = document.querySelector('#run-0');"
            "return {state: run.querySelector('.state').dataset.state,"
            " text: run.querySelector('.round').textContent,"
            " nodes: [...run.querySelectorAll('.nodes-table tbody tr')].map(r => r.dataset.node),"
            " points: run.querySelectorAll('.chart-accuracy .point').length,"
            " edges: run.querySelectorAll('.flow-graph .edge-label').length,"
            " trace: run.querySelectorAll('.trace-table tbody tr').length,"
            " url: location.href};"
        )
        png = browser.get_screenshot_as_png()

    snapshot = RunDirSource(finished_run).snapshot()
    assert page["state"] == "finished"
    assert page["text"] == "round 3 / 3"
    assert page["nodes"] == [str(node["id"]) for node in snapshot["nodes"]]
    assert page["points"] == 3
    assert page["edges"] == len(snapshot["flow"])
    assert page["trace"] == min(len(snapshot["trace"]), 50)
    assert token not in page["url"]  # traded for a cookie
    _not_blank(png)


@pytest.mark.slow
@pytest.mark.xdist_group("browser")
@pytest.mark.parametrize("transport", ["events", "poll"])
def test_the_page_follows_a_live_run(browser: Any, transport: str) -> None:
    run = LiveRun("<b>live</b>", Path("runs/live"), num_rounds=3)
    step = threading.Semaphore(0)
    fed: list[str] = []

    def feeder() -> None:  # the federation: one step each time the test allows it
        step.acquire()
        _feed_round(run, 1, [1, 2, 3])
        fed.append("round 1")
        step.acquire()
        run.round_waiting(2, [2, 3], replies=1, expected=3, deadline=30.0, since=20.0)
        fed.append("waiting 2")
        step.acquire()
        _feed_round(run, 2, [2, 3])
        run.finished("finished", None)
        fed.append("done")

    thread = threading.Thread(target=feeder, daemon=True)
    thread.start()
    with serve_dashboard([run]) as handle:
        browser.get(f"{handle.url}?transport={transport}")
        _until(browser, lambda d: d.execute_script(_round_of(0)) == "0", "round 0")
        step.release()
        _until(browser, lambda d: d.execute_script(_round_of(0)) == "1", "round 1")
        step.release()
        waiting = _until(
            browser,
            _shown(
                browser,
                "const w = document.querySelector('#run-0 .waiting');"
                "if (w.dataset.round !== '2') return null;"
                "return [...w.querySelectorAll('li')].map(li => li.dataset.node);",
            ),
            "the wait of round 2",
        )
        summary = browser.execute_script(
            "return document.querySelector('#run-0 .waiting-summary').textContent"
        )
        name = browser.execute_script("return document.querySelector('#run-0 h2').textContent")
        step.release()
        _until(browser, lambda d: d.execute_script(_round_of(0)) == "2", "round 2")
        state = _until(
            browser,
            _shown(
                browser,
                "const s = document.querySelector('#run-0 .state').dataset.state;"
                "return s === 'finished' ? s : null;",
            ),
            "the end",
        )
        points = browser.execute_script(
            "return document.querySelectorAll('#run-0 .chart-loss .point').length"
        )
        png = browser.get_screenshot_as_png()
    thread.join(WAIT)

    assert fed == ["round 1", "waiting 2", "done"]
    assert waiting == ["2", "3"]
    assert summary.startswith("round 2: 1 / 3 replies, deadline t = 30.00")
    assert name == "<b>live</b>"  # shown as text, not markup
    assert (state, points) == ("finished", 2)
    _not_blank(png)


@pytest.mark.slow
@pytest.mark.xdist_group("browser")
def test_two_runs_are_shown_side_by_side(browser: Any, finished_run: Path, tmp_path: Path) -> None:
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(finished_run / "config.toml", second)
    first_line = (finished_run / "metrics.jsonl").read_text().splitlines()[0]
    (second / "metrics.jsonl").write_text(first_line + "\n")

    with serve_dashboard([RunDirSource(finished_run), RunDirSource(second)]) as handle:
        browser.get(handle.url)
        _until(browser, lambda d: d.execute_script(_round_of(1)) == "1", "the second run")
        _until(browser, lambda d: d.execute_script(_round_of(0)) == "3", "the first run")
        boxes = browser.execute_script(
            "return [0, 1].map(i => {"
            " const box = document.querySelector('#run-' + i).getBoundingClientRect();"
            " return [box.left, box.top, box.width]; })"
        )
        states = browser.execute_script(
            "return [...document.querySelectorAll('.run .state')].map(s => s.dataset.state)"
        )

    (left0, top0, width0), (left1, top1, _) = boxes
    assert states == ["finished", "running"]
    assert top0 == top1
    assert left1 >= left0 + width0  # beside it, not below
