"""The dashboard's HTTP server: the page, its assets and the runs' snapshots, read-only.

``serve_dashboard(sources)`` starts the standard library's threading HTTP server on a
background daemon thread and returns at once. Every response is for a GET::

    /                       the page (static/index.html)
    /static/NAME            its script and style sheet, from the installed package
    /api/runs               every run's snapshot, as a JSON list
    /api/run/I?since=V      run I's snapshot; 204 (no body) while its version is still V
    /api/events             Server-Sent Events: each run's snapshot as it changes

The page listens to ``/api/events``: a change is pushed as it happens (a round ends, a wait
starts, the run is over), while messages and heartbeats alone are sent at the next refresh,
``REFRESH`` seconds at most. ``?transport=poll`` on the page's address makes it poll
``/api/run/I`` instead; bench/dashboard_latency.py compares both.

Security: the server only reads. On a loopback address it needs no token, and it answers only
requests addressed to that loopback host (a web page elsewhere cannot rebind its own name to
it). Any other address requires a token: every request must carry it, as ``?token=`` (the
page then trades it for a cookie and drops it from its address), the cookie, or the
``X-Fedbus-Token`` header; without it the answer is 403 and no data. The page runs no inline
script (``Content-Security-Policy: default-src 'self'``) and inserts every text as text.
There is no TLS: off this machine, reach it through an SSH tunnel or a network you trust.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fedbus.errors import ConfigError
from fedbus.run.dashboard.sources import Source

__all__ = [
    "REFRESH",
    "TOKEN_VARIABLE",
    "DashboardHandle",
    "dashboard_token",
    "serve_dashboard",
    "serve_until_interrupted",
]

logger = logging.getLogger(__name__)

#: The environment variable that holds the dashboard's token when no file is given.
TOKEN_VARIABLE = "FEDBUS_DASHBOARD_TOKEN"
#: Seconds between two looks at sources that do not say when they change (run directories).
REFRESH = 0.25
# An idle event stream sends a comment this often, so a closed page is noticed.
_KEEPALIVE = 15.0
# Event streams at once; each holds a thread.
_MAX_STREAMS = 32
_MAX_PATH = 2048
_COOKIE = "fedbus_dashboard"
_TOKEN_HEADER = "X-Fedbus-Token"
_STATIC_NAME = re.compile(r"[A-Za-z0-9_-]+\.(html|js|css)")
_CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class _Hub:
    """The sources, their last snapshot as JSON bytes, and a condition that changes wake."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = list(sources)
        self.closed = False
        self.streams = threading.BoundedSemaphore(_MAX_STREAMS)
        self._condition = threading.Condition()
        self._generation = 0
        self._bodies: list[tuple[Any, bytes] | None] = [None] * len(self.sources)
        self._body_lock = threading.Lock()

    def notify(self) -> None:
        """A source changed (called from the thread that changed it)."""
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def close(self) -> None:
        self.closed = True
        self.notify()

    def body(self, index: int) -> tuple[Any, bytes]:
        """Source ``index``'s version and snapshot as JSON; serialised once per version."""
        snapshot = self.sources[index].snapshot()
        version = snapshot.get("version")
        with self._body_lock:
            cached = self._bodies[index]
        if cached is not None and version is not None and cached[0] == version:
            return cached
        body = json.dumps(snapshot, allow_nan=False, separators=(",", ":")).encode("utf-8")
        with self._body_lock:
            self._bodies[index] = (version, body)
        return version, body

    def wait_for_change(self, seen: Sequence[Any], timeout: float) -> list[int]:
        """The indices of the sources whose version is not ``seen``; waits up to ``timeout``.

        Sources that notify wake it at once; the others are looked at every REFRESH seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._condition:
                generation = self._generation
            changed = [
                index
                for index, source in enumerate(self.sources)
                if source.snapshot().get("version") != seen[index]
            ]
            remaining = deadline - time.monotonic()
            if changed or self.closed or remaining <= 0:
                return changed
            with self._condition:
                if self._generation == generation and not self.closed:
                    self._condition.wait(min(remaining, REFRESH))


class DashboardHandle:
    """A dashboard being served; ``close()`` (or leaving its ``with`` block) stops it.

    Attributes
    ----------
    url : str
        Where to open it, e.g. ``http://127.0.0.1:8050/``.
    port : int
        The port it listens on (the one chosen, when asked for port 0).
    """

    def __init__(
        self,
        server: ThreadingHTTPServer,
        hub: _Hub,
        url: str,
        detach: Callable[[], None],
    ) -> None:
        self._server = server
        self._hub = hub
        self._detach = detach
        self.url = url
        self.port: int = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, name="fedbus-dashboard", daemon=True
        )
        self._thread.start()

    def wait(self) -> None:
        """Block until the dashboard is closed (from another thread), or Ctrl-C."""
        self._thread.join()

    def close(self) -> None:
        """Stop serving: open event streams end and the port is released."""
        if self._hub.closed:
            return
        self._hub.close()
        self._detach()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> DashboardHandle:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # set by serve_dashboard before the first request
    hub: _Hub
    token: str | None
    session: str
    hosts: frozenset[str]
    static: dict[str, bytes]


class _Server6(_Server):
    address_family = socket.AF_INET6


def serve_dashboard(
    sources: Sequence[Source],
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
) -> DashboardHandle:
    """Serve the dashboard of ``sources`` from a background thread; return at once.

    Parameters
    ----------
    sources : sequence of Source
        What to show, one column each: ``RunDirSource``, ``LiveRun`` or anything with
        ``snapshot()``. A source with ``add_listener`` (``LiveRun``) is shown as it changes.
    host : str
        The address to listen on; any other than a loopback one requires ``token``.
    port : int
        The port; 0 takes any free one (``handle.port`` says which).
    token : str, optional
        A secret every request must carry (``?token=``, the cookie the page gets, or the
        ``X-Fedbus-Token`` header).

    Raises
    ------
    ConfigError
        A non-loopback ``host`` without a token, an empty token, or an address that cannot be
        listened on.
    """
    if token is not None and not token.strip():
        raise ConfigError("the dashboard token is empty: put a secret in the token file")
    loopback = _is_loopback(host)
    if not loopback and token is None:
        raise ConfigError(
            f"the dashboard would listen on {host}, which other machines can reach: give it a "
            "token (--token-file FILE or FEDBUS_DASHBOARD_TOKEN), or listen on 127.0.0.1"
        )
    kind = _Server6 if ":" in host else _Server
    try:
        server = kind((host, port), _Handler)
    except (OSError, OverflowError) as exc:
        raise ConfigError(f"the dashboard cannot listen on {host}:{port}: {exc}") from exc
    hub = _Hub(sources)
    server.hub = hub
    server.token = token
    server.session = "" if token is None else _session(token)
    bound = server.server_address[1]
    # Without a token, only requests naming this loopback host are answered (DNS rebinding).
    server.hosts = frozenset(
        f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]", _url_host(host))
    )
    server.static = _static_files()
    attached = [source for source in sources if callable(getattr(source, "add_listener", None))]
    for source in attached:
        source.add_listener(hub.notify)  # type: ignore[attr-defined]

    def detach() -> None:
        for source in attached:
            remove = getattr(source, "remove_listener", None)
            if callable(remove):
                remove(hub.notify)

    url = f"http://{_url_host(host)}:{bound}/"
    logger.info("dashboard of %d run(s) at %s", len(sources), url)
    return DashboardHandle(server, hub, url, detach)


def serve_until_interrupted(handle: DashboardHandle) -> None:
    """Serve until Ctrl-C (or until ``handle`` is closed elsewhere), then close it."""
    try:
        handle.wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.close()


def dashboard_token(token_file: str | os.PathLike[str] | None) -> str | None:
    """The dashboard's token: ``token_file``'s text, else ``$FEDBUS_DASHBOARD_TOKEN``, else None.

    A token on the command line would show in ``ps``: it comes from a file or the environment.

    Raises
    ------
    ConfigError
        ``token_file`` cannot be read, or is empty.
    """
    if token_file is None:
        return os.environ.get(TOKEN_VARIABLE, "").strip() or None
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the dashboard's --token-file {token_file}: {exc}") from exc
    if not token:
        raise ConfigError(f"--token-file {token_file} is empty: put the dashboard's secret in it")
    return token


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _session(token: str) -> str:
    """The cookie's value: derived from the token, so the token itself is not stored."""
    key = token.encode("utf-8")
    return hmac.new(key, b"fedbus dashboard session", hashlib.sha256).hexdigest()


def _static_files() -> dict[str, bytes]:
    """The page's files, read once from the installed package."""
    folder = importlib.resources.files("fedbus.run.dashboard").joinpath("static")
    return {
        item.name: item.read_bytes()
        for item in folder.iterdir()
        if item.is_file() and _STATIC_NAME.fullmatch(item.name)
    }


class _Handler(BaseHTTPRequestHandler):
    """Answers GET requests; anything else is refused with 405."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "fedbus-dashboard"
    sys_version = ""
    timeout = 30  # seconds a client may take to send its request

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _not_allowed(self) -> None:
        self.close_connection = True  # its body, if any, is not read
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"only GET\n", extra=(("Allow", "GET"),))

    # http.server answers a method by the handler's do_<METHOD> attribute
    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815
    do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

    def do_GET(self) -> None:
        if len(self.path) > _MAX_PATH:
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_URI_TOO_LONG, b"address too long\n")
            return
        if self.headers.get("Content-Length", "0").strip() not in ("", "0"):
            self.close_connection = True
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"a GET has no body\n")
            return
        address = urlsplit(self.path)
        query = parse_qs(address.query, max_num_fields=8)
        if not self._allowed(query):
            return
        if address.path in ("/", "/index.html") and self.server.token and "token" in query:
            # the token leaves the address bar (and the history) for a cookie
            cookie = f"{_COOKIE}={self.server.session}; Path=/; HttpOnly; SameSite=Strict"
            target = "/?transport=poll" if query.get("transport") == ["poll"] else "/"
            self._send(
                HTTPStatus.SEE_OTHER, b"", extra=(("Set-Cookie", cookie), ("Location", target))
            )
            return
        try:
            self._route(address.path, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        """Whether the request carries the token (when there is one) or names our host."""
        token = self.server.token
        if token is None:
            if self.headers.get("Host", "") in self.server.hosts:
                return True
            self._send(HTTPStatus.FORBIDDEN, b"forbidden: unknown Host\n")
            return False
        given = [value.encode("utf-8") for value in query.get("token", [])[:1]]
        header = self.headers.get(_TOKEN_HEADER)
        if header is not None:
            given.append(header.encode("utf-8"))
        expected = token.encode("utf-8")
        if any(hmac.compare_digest(value, expected) for value in given):
            return True
        try:
            cookies = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            cookies = SimpleCookie()
        morsel = cookies.get(_COOKIE)
        if morsel is not None and hmac.compare_digest(
            morsel.value.encode("utf-8"), self.server.session.encode("utf-8")
        ):
            return True
        self._send(
            HTTPStatus.FORBIDDEN,
            b"forbidden: this dashboard needs its token; open its address with ?token=...\n",
        )
        return False

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        if path in ("/", "/index.html"):
            self._static("index.html")
        elif path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
        elif path == "/api/runs":
            bodies = [hub.body(index)[1] for index in range(len(hub.sources))]
            self._send(HTTPStatus.OK, b"[" + b",".join(bodies) + b"]", "application/json")
        elif path.startswith("/api/run/"):
            self._run(path.removeprefix("/api/run/"), query.get("since", [None])[0])
        elif path == "/api/events":
            self._events()
        elif path == "/favicon.ico":  # browsers ask for it; there is none
            self._send(HTTPStatus.NO_CONTENT, b"")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")

    def _static(self, name: str) -> None:
        body = self.server.static.get(name) if _STATIC_NAME.fullmatch(name) else None
        if body is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n")
            return
        self._send(HTTPStatus.OK, body, _CONTENT_TYPES[name.rsplit(".", 1)[1]])

    def _run(self, index_text: str, since: str | None) -> None:
        hub = self.server.hub
        if not index_text.isdigit() or int(index_text) >= len(hub.sources):
            self._send(HTTPStatus.NOT_FOUND, b"no such run\n")
            return
        version, body = hub.body(int(index_text))
        if since is not None and since == str(version):
            self._send(HTTPStatus.NO_CONTENT, b"")
        else:
            self._send(HTTPStatus.OK, body, "application/json")

    def _events(self) -> None:
        hub = self.server.hub
        if not hub.streams.acquire(blocking=False):
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many open pages\n")
            return
        self.close_connection = True  # the stream ends when the connection does
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            for name, value in _SECURITY_HEADERS:
                self.send_header(name, value)
            self.end_headers()
            seen: list[Any] = [None] * len(hub.sources)
            while not hub.closed:
                changed = hub.wait_for_change(seen, _KEEPALIVE)
                if not changed:
                    self.wfile.write(b": keepalive\n\n")
                for index in changed:
                    seen[index], body = hub.body(index)
                    self.wfile.write(b'data: {"index":%d,"snapshot":%s}\n\n' % (index, body))
                self.wfile.flush()
        except (OSError, ValueError):  # the page went away (ValueError: the stream closed)
            pass
        finally:
            hub.streams.release()

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        if body or status not in (HTTPStatus.NO_CONTENT, HTTPStatus.SEE_OTHER):
            self.send_header("Content-Type", content_type)
        if status != HTTPStatus.NO_CONTENT:
            self.send_header("Content-Length", str(len(body)))
        for name, value in (*_SECURITY_HEADERS, *extra):
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)
