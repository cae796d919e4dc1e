"""A server's metrics for Prometheus, in the text format node_exporter's textfile collector reads.

Built from the ``inv status`` report (``crdsops.data.state.report``: the audit log, the backups,
the last check results, the live probe), never from a record of their own, so the metrics and
``inv status`` cannot disagree. Prometheus conventions: a ``crdsops_`` prefix, base units in the
name (``_seconds``, ``_bytes``), times as Unix timestamps rather than ages (an age would be stale
as soon as the file is written; the alert rule computes ``time() - ...``), and the labels
``observatory`` and ``kind`` on every sample. What is not known (no backup yet, a check never
run) has no sample: an absent series, not a made-up zero.

``text(report)`` is the exposition (what ``inv metrics`` prints); ``write(config)`` puts it in
``monitoring.textfile_dir`` as ``crdsops_<observatory>_<kind>.prom`` through a temporary name
and a rename (the collector ignores names that do not end in ``.prom``), so a scrape never
reads half a file. ``after_task(config)`` is what the task boundary calls when any task ends:
it never raises; a failure is one warning line. README "Metrics" lists every metric.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crdsops import __version__, commands
from crdsops.config.model import CHECKOUT, ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import DirectoryError, make_dirs, write_atomic
from crdsops.runtime.results import CacheCheckResult

if TYPE_CHECKING:
    from crdsops.data import state

log = logging.getLogger(__name__)

PREFIX = "crdsops"
FILE_MODE = 0o644  # node_exporter runs as its own user (Debian: prometheus) and must read it


@dataclass
class Metric:
    """One metric family: its name (without the prefix), help line, type and samples."""

    name: str
    help: str
    type: str = "gauge"
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float | None, **labels: str) -> None:
        if value is not None:
            self.samples.append((labels, float(value)))

    def lines(self, common: dict[str, str]) -> list[str]:
        name = f"{PREFIX}_{self.name}"
        out = [f"# HELP {name} {_escape_help(self.help)}", f"# TYPE {name} {self.type}"]
        for labels, value in self.samples:
            pairs = ",".join(f'{key}="{_escape_label(val)}"' for key, val in {**common, **labels}.items())
            out.append(f"{name}{{{pairs}}} {_number(value)}")
        return out


def metrics(rep: state.Report, revision: str) -> list[Metric]:
    """Every metric of the report, in README's order."""
    return [*_server(rep, revision), *_backups(rep), *_tasks(rep), *_checks(rep)]


def text(rep: state.Report, revision: str | None = None) -> str:
    """The exposition text of the report (HELP and TYPE lines, then the samples; ends with a newline)."""
    common = {"observatory": rep.config.observatory, "kind": rep.config.kind}
    revision = revision or (rep.release.revision if rep.release else git_revision())
    lines = [line for metric in metrics(rep, revision) for line in metric.lines(common)]
    return "\n".join(lines) + "\n"


def textfile(config: ServerConfig) -> Path | None:
    """Where this server's metrics file goes, or None when ``monitoring.textfile_dir`` is off."""
    base = config.monitoring.textfile_dir
    return None if base is None else Path(base) / f"{PREFIX}_{config.observatory}_{config.kind}.prom"


def write(config: ServerConfig) -> Path | None:
    """Write the metrics file (atomically) when ``monitoring.textfile_dir`` is set; return its path."""
    path = textfile(config)
    if path is None:
        return None
    make_dirs(path.parent)  # first: what is in the way is named by its config key
    from crdsops.data import state  # here: every task ends by calling after_task, most with no metrics file

    write_atomic(path, text(state.report(config)), mode=FILE_MODE)
    return path


def after_task(config: ServerConfig | None) -> None:
    """When a task has ended: rewrite the metrics of the server it acted on (else the installed one).

    Never raises: metrics are a side view, and a task must not fail because of them.
    """
    try:
        config = config or _installed()
        # no root: a first install that refused, or a dry run of one; no server here to describe
        if config is None or textfile(config) is None or not config.root.is_dir():
            return
        write(config)
    except Exception as err:  # noqa: BLE001 - whatever went wrong, the task's own result stands
        where = textfile(config) if config is not None else "monitoring.textfile_dir"
        # a DirectoryError's line names the config key to fix; a plain OSError's strerror says enough
        plain = isinstance(err, OSError) and not isinstance(err, DirectoryError)
        reason = (err.strerror if plain else None) or str(err) or type(err).__name__
        log.warning(f"could not write the metrics to {where} ({reason})")


def _installed() -> ServerConfig | None:
    """The installed server, for tasks that name none (status, history, config); None if there is none."""
    from crdsops.config.installed import resolve

    try:
        return resolve()
    except CrdsOpsError:
        return None


def git_revision(checkout: Path = CHECKOUT) -> str:
    """The checkout's commit (what code this server runs), or ``unknown`` outside a git checkout."""
    try:
        result = commands.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], what="git rev-parse",
                              timeout=10, check=False)
    except CrdsOpsError:  # git not installed, or it hung
        return "unknown"
    return result.stdout.strip() if result.ok and result.stdout.strip() else "unknown"


# --- the metrics, by what they answer ----------------------------------------------------

def _server(rep: state.Report, revision: str) -> list[Metric]:
    up = Metric("server_up", "1 when the server runs and answers get_server_info, else 0")
    up.add(1 if rep.status.up else 0)
    maint = Metric("maintenance_mode", "1 while maintenance mode is on (JSON-RPC refuses clients), else 0")
    maint.add(1 if rep.maintenance is not None else 0)
    release = Metric("release_info", "always 1; its labels say which code the server runs (revision, crdsops version, release: inv upgrade)")
    release.add(1, revision=revision, version=__version__, release=rep.release.name if rep.release else "")
    return [up, maint, release]


def _backups(rep: state.Report) -> list[Metric]:
    success = Metric("backup_last_success_timestamp_seconds",
                     "when the newest verified private backup was made (Unix time)")
    success.add(_stamp(rep.verified.created if rep.verified else None))
    size = Metric("backup_last_size_bytes", "size of the newest verified private backup")
    size.add(rep.verified.size if rep.verified else None)
    run = rep.last_backup
    duration = Metric("backup_last_duration_seconds", "how long the last inv backup run took, whatever its result")
    duration.add(run.seconds if run else None)
    shared_ok = rep.shared if rep.shared is not None and rep.shared.state != "BAD" else None
    shared = Metric("backup_shared_last_success_timestamp_seconds",
                    "when the shared latest (what a mirror copies) was made (Unix time)")
    shared.add(_stamp(shared_ok.created if shared_ok else None))
    return [success, size, duration, shared]


def _tasks(rep: state.Report) -> list[Metric]:
    result = Metric("task_last_result", "1 when the task's last run (audit log) ended ok, 0 when it failed or was interrupted")
    stamp = Metric("task_last_timestamp_seconds", "when the task's last run ended (Unix time)")
    took = Metric("task_last_duration_seconds", "how long the task's last run took")
    for task, entry in sorted(rep.last_runs.items()):
        result.add(1 if entry.ok else 0, task=task)
        ended = entry.when + datetime.timedelta(seconds=entry.seconds) if entry.when else None
        stamp.add(_stamp(ended), task=task)
        took.add(entry.seconds, task=task)
    return [result, stamp, took]


def _checks(rep: state.Report) -> list[Metric]:
    result = Metric("check_last_result", "1 when the check's last result (inv runtests, inv check-cache) is ok, else 0")
    stamp = Metric("check_last_timestamp_seconds", "when the check's last result was recorded (Unix time)")
    for check, last in (("runtests", rep.runtests), ("check-cache", rep.check_cache)):
        if last is not None:
            result.add(1 if last.ok else 0, check=check)
            stamp.add(_stamp(last.at), check=check)
    problems = Metric("check_cache_problems", "problems the last inv check-cache found (what made it fail: "
                                              "missing files, wrong sizes or sha1s, orphans)")
    cache = rep.check_cache
    if isinstance(cache, CacheCheckResult):
        # `problems` holds the failing kinds (names capped at 100 each), `counts` every kind's full
        # count, notes (rejected, blacklisted) included: the failing kinds' full counts
        problems.add(sum(cache.counts.get(kind, len(names)) for kind, names in cache.problems.items()))
    return [result, stamp, problems]


def _stamp(when: datetime.datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _number(value: float) -> str:
    """Integers without a decimal point (counts, bytes, whole seconds); others as Python writes them."""
    return str(int(value)) if value.is_integer() else repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
