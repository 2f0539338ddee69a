"""A read-only live dashboard of fedbus runs, served over HTTP to a browser.

- ``sources``: what is shown: ``RunDirSource`` (a run directory on disk) and ``LiveRun`` (fed
  by the federation running in this process), both giving the same JSON snapshot.
- ``server``: ``serve_dashboard`` serves the page (``static/``) and the snapshots, live, from
  a background thread of the standard library's HTTP server.

``fedbus dashboard RUN_DIR ...`` serves run directories; see docs/dashboard.md.

Examples
--------
>>> from pathlib import Path
>>> run = LiveRun("demo", Path("runs/demo"), num_rounds=3)
>>> with serve_dashboard([run]) as dashboard:  # doctest: +SKIP
...     print(dashboard.url)  # open it in a browser; feed ``run`` as rounds go
http://127.0.0.1:40123/
"""

from __future__ import annotations

from fedbus.run.dashboard.server import DashboardHandle, serve_dashboard
from fedbus.run.dashboard.sources import LiveRun, RunDirSource, Source

__all__ = ["DashboardHandle", "LiveRun", "RunDirSource", "Source", "serve_dashboard"]
