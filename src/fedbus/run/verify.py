"""``fedbus verify RUN_DIR``: does a simulated run reproduce, bit for bit?

A simulation is deterministic: the same configuration gives the same messages, at the same
simulated times, and the same model. ``verify_run`` runs the configuration a run directory holds
(its ``config.toml``) again, in a temporary directory, and compares:

- the final model: the SHA-256 of its arrays (``summary.json``'s ``model_sha256``);
- the message trace: the SHA-256 of every row, in order (``trace_digest``);

and lists the versions (``versions.json``) that differ from this machine's, the usual reason
when a run does not reproduce elsewhere. A run stopped with Ctrl-C is checked once it has
finished (``fedbus run --resume``); a resumed run reproduces like any other.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fedbus.errors import ConfigError, InvalidArgumentError, RunError
from fedbus.run.config import load_config
from fedbus.run.experiment import run_experiment
from fedbus.run.outputs import CONFIG_FILE, RunDirectory
from fedbus.run.trace import chunk_paths, trace_digest
from fedbus.run.versions import differences, environment_versions, read_versions

__all__ = ["VerifyReport", "verify_run"]


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify_run`` found: each digest recorded and rerun, and the versions that differ."""

    run_dir: Path
    model: tuple[str, str]
    trace: tuple[str, str] | None
    versions: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """True when the model, and the trace if the run kept one, are the same."""
        same_trace = self.trace is None or self.trace[0] == self.trace[1]
        return self.model[0] == self.model[1] and same_trace

    def text(self) -> str:
        """What ``fedbus verify`` prints."""
        lines = [f"{self.run_dir}: {'identical' if self.identical else 'DIFFERENT'}"]
        lines.append(_compare("model", *self.model))
        if self.trace is None:
            lines.append("  trace: not kept (run.trace = false)")
        else:
            lines.append(_compare("trace", *self.trace))
        if self.versions:
            lines.append("  versions that differ from this machine's:")
            lines += [f"    {line}" for line in self.versions]
        return "\n".join(lines)


def _compare(name: str, recorded: str, rerun: str) -> str:
    if recorded == rerun:
        return f"  {name}: same (sha256 {recorded[:16]}...)"
    return f"  {name}: recorded sha256 {recorded[:16]}..., rerun {rerun[:16]}..."


def verify_run(run_dir: str | Path, *, quiet: bool = True) -> VerifyReport:
    """Run ``run_dir``'s configuration again and compare its model and trace with the run's.

    Raises
    ------
    InvalidArgumentError
        Not a finished simulated run: no ``config.toml``, no ``summary.json`` with the model's
        digest, a run that was interrupted (resume it first) or a deployment's.
    """
    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise InvalidArgumentError(f"{path}: not a run directory (no {CONFIG_FILE})")
    config = load_config(path / CONFIG_FILE)
    recorded = _recorded_summary(path)
    trace_kept = config.run.trace and bool(chunk_paths(path))
    with tempfile.TemporaryDirectory(prefix="fedbus-verify-") as scratch:
        rerun_config = dataclasses.replace(
            config, run=dataclasses.replace(config.run, output_dir=scratch, plot=False)
        )
        try:
            result = run_experiment(rerun_config, quiet=quiet)
            rerun_dir, summary = result.run_dir, result.summary
        except RunError:  # a run that failed fails again; what it wrote is still compared
            (rerun_dir,) = Path(scratch).iterdir()
            summary = RunDirectory(rerun_dir).read_summary()
        except ConfigError as exc:
            raise InvalidArgumentError(f"{path}: its configuration no longer runs: {exc}") from exc
        model = (str(recorded["model_sha256"]), str(summary["model_sha256"]))
        trace = (trace_digest(path), trace_digest(rerun_dir)) if trace_kept else None
    then = read_versions(path)
    versions = [] if then is None else differences(then, environment_versions())
    return VerifyReport(path, model, trace, versions)


def _recorded_summary(path: Path) -> dict[str, object]:
    summary = RunDirectory(path).read_summary()
    if summary.get("interrupted"):
        raise InvalidArgumentError(
            f"{path}: the run was interrupted ({summary.get('failure')}); finish it with "
            f"fedbus run --resume {path}, then verify it"
        )
    if not summary.get("model_sha256"):
        raise InvalidArgumentError(
            f"{path}: summary.json has no model_sha256 (a run from an older fedbus); run it "
            "again to verify it"
        )
    if "resumed_after_round" in summary:
        raise InvalidArgumentError(
            f"{path}: a deployment's run (fedbus server) depends on its clients' timing and "
            "cannot be re-run; verify simulated runs"
        )
    return summary
