"""Run a command and measure its wall time and the peak memory of its whole process tree.

A framework that fans work out to helper processes (Ray's raylet, GCS and workers; a pool of
fedbus workers) hides most of its memory from ``ru_maxrss``, which only sees one process. So
this polls ``/proc`` while the command runs and sums the resident set of every descendant.

Linux only, standard library only. The caller becomes a *child subreaper*, so a helper that
double-forks away from the command is re-parented to us and still counted; whatever of the
tree is left when the command exits is terminated, so one measured run cannot leak processes
(and memory) into the next.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
STDERR_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Measurement:
    """What one measured run produced.

    ``peak_rss_bytes`` is the largest sum of VmRSS over the process tree seen at one poll: pages
    shared between processes (libraries, copy-on-write after fork, shared memory) count once
    per process. ``peak_pss_bytes`` splits each shared page among its sharers, so it is the
    fairer "memory this tree costs the machine"; it is sampled less often (it is costly to
    read), so it may read a little below the true peak.

    ``cpu_s`` is the user + system CPU time of the tree (every descendant that was reaped, by
    its parent or by us): on a machine shared with other work it moves much less than wall
    time does.
    """

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    peak_pss_bytes: int
    peak_processes: int
    samples: int
    stdout: str
    stderr_tail: str
    timed_out: bool


def become_subreaper() -> None:
    """Adopt orphaned descendants, so a daemonising helper stays inside the measured tree."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def parent_map() -> dict[int, int]:
    """``pid -> ppid`` for every process now alive, read from ``/proc/<pid>/stat``.

    Raw ``os.read`` rather than ``Path.read_text``: this runs every poll over every process on
    the machine, and whatever it costs is CPU the measured command does not get.
    """
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read(f"/proc/{name}/stat")
        if stat is None:  # exited between listing and reading
            continue
        # The command name (field 2) may hold spaces and ')': the state and ppid follow the last.
        fields = stat[stat.rindex(b")") + 2 :].split(maxsplit=2)
        parents[int(name)] = int(fields[1])
    return parents


def descendants(root: int, parents: Mapping[int, int]) -> list[int]:
    """Every process below ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def kib_field(pid: int, filename: str, field: bytes) -> int:
    """A ``<field>: N kB`` line of ``/proc/<pid>/<filename>`` in KiB; 0 once the process is gone
    (and for zombies, which have no memory lines)."""
    text = _read(f"/proc/{pid}/{filename}")
    if text is None:
        return 0
    at = text.find(b"\n" + field + b":")
    if at < 0:
        return 0
    return int(text[at + len(field) + 2 :].split(maxsplit=1)[0])


def tree_rss_kib(pids: Iterable[int]) -> int:
    """Summed VmRSS of ``pids`` (cheap: ``/proc/<pid>/status``)."""
    return sum(kib_field(pid, "status", b"VmRSS") for pid in pids)


def tree_pss_kib(pids: Iterable[int]) -> int:
    """Summed Pss of ``pids``. Costly: the kernel walks each process's page tables (several ms
    for a Ray worker), so ``measure`` samples it less often than RSS."""
    return sum(kib_field(pid, "smaps_rollup", b"Pss") for pid in pids)


def _read(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return None
    finally:
        os.close(fd)


def terminate_tree(pids: Sequence[int], waited_elsewhere: int, grace_s: float = 5.0) -> None:
    """SIGTERM what is left of a measured run, by pid; SIGKILL whatever ignores it.

    ``waited_elsewhere`` (the command itself, which its ``Popen`` waits for) is signalled but
    never reaped here.
    """
    me = os.getpid()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if _signal(pid, sig)]
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            reap(pid for pid in alive if pid != waited_elsewhere)
            alive = [pid for pid in alive if _running(pid)]
            time.sleep(0.05)
        if not alive:
            break
    reap(pid for pid, ppid in parent_map().items() if ppid == me and pid != waited_elsewhere)


def reap(pids: Iterable[int]) -> None:
    """Collect the exit status of those of ``pids`` that are our (adopted) children and have
    exited, so they do not linger as zombies. Only named pids: a blanket ``waitpid(-1)`` could
    take the measured command's status from under ``Popen``."""
    for pid in pids:
        # ChildProcessError: not our child (its own parent reaps it), or already reaped.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _signal(pid: int, sig: signal.Signals) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    stat = _read(f"/proc/{pid}/stat")
    return stat is not None and stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"


def _children_cpu_s() -> float:
    """User + system CPU seconds of all our reaped descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Waiter(threading.Thread):
    """Waits for the command in the background and stamps the moment it exits, so the wall
    time does not depend on the polling interval."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.end = 0.0

    def run(self) -> None:
        self.proc.wait()
        self.end = time.perf_counter()


def measure(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    interval_s: float = 0.04,
    pss_interval_s: float = 0.5,
    timeout_s: float | None = None,
) -> Measurement:
    """Run ``command`` to completion; sum the tree's RSS every ``interval_s`` seconds (its PSS
    every ``pss_interval_s``, or sooner when RSS grows: PSS is costly to read).

    The tree is everything below this process, not just below the command: with the subreaper
    set, orphans of the command land here. So call it from a process with no other children.
    stdout and stderr go to temporary files rather than pipes, so a chatty child (Ray logs a
    lot) can never block on a full pipe while we are busy polling.
    """
    become_subreaper()
    me = os.getpid()
    peak_rss = peak_pss = peak_procs = samples = 0
    timed_out = False
    cpu_before = _children_cpu_s()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(command), stdout=out, stderr=err, env=None if env is None else dict(env), cwd=cwd
        )
        waiter = _Waiter(proc)
        waiter.start()
        next_pss, rss_at_pss = start, 0
        while waiter.is_alive():
            pids = descendants(me, parent_map())
            rss = tree_rss_kib(pids)
            peak_rss = max(peak_rss, rss)
            # PSS on schedule, and whenever RSS has grown 5% since the last PSS reading, so a
            # short run or a sudden peak still gets a PSS reading near its RSS peak.
            if time.perf_counter() >= next_pss or rss > rss_at_pss * 1.05:
                peak_pss = max(peak_pss, tree_pss_kib(pids))
                next_pss, rss_at_pss = time.perf_counter() + pss_interval_s, rss
            peak_procs = max(peak_procs, len(pids))
            samples += 1
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                timed_out = True
                terminate_tree(pids, proc.pid)
                break
            waiter.join(interval_s)
        waiter.join()
        wall = waiter.end - start
        terminate_tree(descendants(me, parent_map()), proc.pid)
        cpu = _children_cpu_s() - cpu_before
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return Measurement(
        returncode=proc.returncode,
        wall_s=wall,
        cpu_s=cpu,
        peak_rss_bytes=peak_rss * 1024,
        peak_pss_bytes=peak_pss * 1024,
        peak_processes=peak_procs,
        samples=samples,
        stdout=stdout,
        stderr_tail=stderr[-STDERR_TAIL_CHARS:],
        timed_out=timed_out,
    )
