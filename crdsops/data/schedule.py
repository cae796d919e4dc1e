"""The nightly cron lines that run ``inv backup`` (and the sample cache check) for the installed server.

One line per server and job, recognised by its trailing marker ``# crdsops backup <obs>.<kind>``
(``# crdsops check-cache <obs>.<kind>`` for ``inv check-cache --sha1 --sample auto/N``: each
night hashes the slice of that day, so N nights cover every file once); installing again
replaces it (idempotent), ``remove`` deletes it. Output goes to ``<root>/logs/backup.log``
(``check-cache.log``); ``# crdsops rotate-logs <obs>.<kind>`` runs ``inv rotate-logs``
(``rotate-logs.log``) after midnight. ``# crdsops nightly <obs>.<kind>`` runs ``inv nightly``
(``nightly.log``), which does all three and more in one run: installing it removes this server's
separate lines, which would do the same work twice. Every line but ``@reboot`` runs its task with
``CRDSOPS_CRON=1``, so that ``inv schedule --pause-until`` (``crdsops.runtime.cronpause``) can
make it do nothing until a given time without an edit of the crontab. ``crdsops.data.boot`` keeps its ``@reboot`` line in the
same crontab (``# crdsops boot <obs>.<kind>``). The ``crontab`` command is ``crontab`` (or
``CRDSOPS_CRONTAB``, for tests and for machines where it lives elsewhere).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from crdsops import commands
from crdsops.config.model import CHECKOUT, ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.runtime import cronpause
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import ScheduleOutcome
from crdsops.steps import Plan

log = logging.getLogger(__name__)

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


JOBS = ("backup", "check-cache", "rotate-logs", "nightly", "binlog-archive")
DEFAULT_AT = {"backup": "03:17", "check-cache": "04:47", "rotate-logs": "00:07", "nightly": "03:17",
              "binlog-archive": "every 5 minutes"}
NIGHTLY_RUNS = ("backup", "check-cache", "rotate-logs")  # the separate jobs `inv nightly` includes
DEFAULT_SLICES = 7


def marker(config: ServerConfig, job: str = "backup") -> str:
    return f"# crdsops {job} {config.name}"


def crontab_cmd() -> list[str]:
    return shlex.split(os.environ.get("CRDSOPS_CRONTAB", "crontab"))


def cron_line(config: ServerConfig, at: str = "03:17", job: str = "backup", slices: int = 7) -> str:
    if job == "binlog-archive":
        # the archive's keep-alive: every 5 minutes it starts the streamer unless it runs; never
        # paused (a pause would open a gap in the archive, the one thing a restore to a time cannot cross)
        from crdsops.data import binlogs

        command = task_command(["binlog-archive"], binlogs.log_file(config))
        return checked_line(f"*/5 * * * * {command} {marker(config, job)}")
    match = _TIME.match(at)
    if not match:
        raise CrdsOpsError(f"--at {at!r} is not a time of day; give HH:MM, e.g. 03:17")
    hour, minute = int(match.group(1)), int(match.group(2))
    if job in ("check-cache", "nightly") and slices < 1:
        raise CrdsOpsError(f"--slices {slices}: give the number of nights a full sha1 pass is spread over (>= 1)")
    if job == "backup":
        log, words = config.layout.backup_log, ["backup"]
    elif job == "rotate-logs":
        log, words = config.layout.rotate_log, ["rotate-logs"]
    elif job == "nightly":
        more = [] if slices == DEFAULT_SLICES else ["--slices", str(slices)]
        log, words = config.layout.nightly_log, ["nightly", *more]
    else:
        log, words = config.layout.check_cache_log, ["check-cache", "--sha1", "--sample", f"auto/{slices}"]
    return checked_line(f"{minute} {hour} * * * {task_command(words, log, pausable=True)} {marker(config, job)}")


def task_command(words: list[str], log: Path, pausable: bool = False) -> str:
    """The shell command of a cron line: ``inv WORDS`` in the checkout, for this server, into ``log``.

    ``pausable``: the task first asks whether ``inv schedule --pause-until`` paused the cron lines."""
    inv = Path(sys.executable).parent / "inv"
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in ("CRDSOPS_CONFIGS", "CRDSOPS_STATE") if os.environ.get(k)]
    if pausable:
        env.append(f"{cronpause.CRON_ENV}=1")
    # umask 077: the log the shell's `>>` creates holds the task's output, so it is 0600 like the rest
    return " ".join([f"cd {shlex.quote(str(CHECKOUT))} && umask 077 &&", *env, shlex.quote(str(inv)), *words,
                     ">>", shlex.quote(str(log)), "2>&1"])


def checked_line(line: str) -> str:
    if "%" in line:
        raise CrdsOpsError("a path in the cron line contains '%', which cron treats as a newline; move it")
    return line


def read_crontab() -> list[str]:
    result = commands.run([*crontab_cmd(), "-l"], check=False, what="crontab -l")
    if not result.ok:
        if "no crontab" in (result.stderr + result.stdout).lower():
            return []
        raise CrdsOpsError(f"crontab -l failed: {result.last_error_line()}")
    return result.stdout.splitlines()


def write_crontab(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n" if lines else ""
    result = commands.run([*crontab_cmd(), "-"], input=text, check=False, what="crontab")
    if not result.ok:
        raise CrdsOpsError(f"installing the crontab failed: {result.last_error_line()}")


def installed_line(config: ServerConfig, job: str = "backup") -> str | None:
    mine = marker(config, job)
    return next((each for each in read_crontab() if each.rstrip().endswith(mine)), None)


@dataclass(frozen=True)
class ScheduleOptions:
    job: str = "backup"  # one of JOBS
    at: str | None = None  # HH:MM (default: DEFAULT_AT[job])
    slices: int = DEFAULT_SLICES  # check-cache and nightly: the nights a full sha1 pass is spread over
    remove: bool = False


class Schedule(Operation):
    """``inv schedule``: install (or remove) this server's nightly line for one job; idempotent."""

    task = "schedule"

    def __init__(self, config: ServerConfig, options: ScheduleOptions):
        super().__init__(config)
        self.options = options
        self.line = ""
        self.changed = False

    def check(self) -> None:
        o = self.options
        if not o.remove:
            self.line = cron_line(self.config, o.at or DEFAULT_AT[o.job], o.job, o.slices)

    def probe(self) -> list[str]:
        return read_crontab()

    def plan(self, current: list[str]) -> Plan:
        o, mine = self.options, marker(self.config, self.options.job)
        others = [each for each in current if not each.rstrip().endswith(mine)]
        gone = [each for each in current if each.rstrip().endswith(mine)]
        p = Plan(f"scheduling {o.job} of {self.config.name}")
        if o.job == "nightly" and not o.remove:
            others = self._without_separate(others, p)
        if o.remove:
            action = (lambda: self._write(others, f"removed: {gone[0]}")) if gone else None
            p.add(f"remove {gone[0]}" if gone else f"no {o.job} line for {self.config.name} in the crontab; "
                  "nothing to do", action)
        elif others + [self.line] == current:
            p.add(f"already installed: {self.line}")
        else:
            p.add(f"install {self.line}", lambda: self._write(others + [self.line], f"installed: {self.line}"))
        return p

    def _without_separate(self, lines: list[str], p: Plan) -> list[str]:
        """``lines`` without this server's separate lines that the nightly job replaces (said in the plan)."""
        separate = tuple(marker(self.config, job) for job in NIGHTLY_RUNS)
        for line in lines:
            if line.rstrip().endswith(separate):
                p.add(f"remove {line} (the nightly job runs it)")
        return [each for each in lines if not each.rstrip().endswith(separate)]

    def _write(self, lines: list[str], said: str) -> None:
        write_crontab(lines)
        self.changed = True
        log.info(said)

    def outcome(self) -> ScheduleOutcome:
        return ScheduleOutcome(self.options.job, "" if self.options.remove else self.line, self.changed)
