"""What a changing task's run did, as typed records: the audit line, `inv history`, `inv status`
and the fleet read these back, never string keys.

``crdsops.runtime.lifecycle`` asks the operation for its ``Outcome`` when the run ends (also
when it failed: then the outcome holds what was known or made before the failure) and the
audit line carries it as ``touched`` (``Outcome.as_dict()``). A reader turns a line back
into the record of its task with ``read(task, data)``.

``BackupRef`` names one backup wherever a run made, read or kept one.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from crdsops.db.catalog import CatalogCounts
from crdsops.records import Record, RecordError


@dataclass(frozen=True)
class BackupRef(Record):
    """One backup: its dated name, where it is, when it was made and of which server."""

    name: str
    path: Path
    created: datetime.datetime | None = None
    server: str = ""  # whose backup it is (hst.test)

    def describe(self) -> str:
        made = f", made {self.created.isoformat(timespec='seconds')}" if self.created else ""
        return f"{self.path}{made}"


class Outcome(Record):
    """What one run of a task did (a frozen dataclass per task below)."""

    def describe(self) -> str:
        """A few words for `inv history` and `inv status`."""
        return ""


@dataclass(frozen=True)
class InstallOutcome(Outcome):
    root: Path | None = None
    database: str = ""

    def describe(self) -> str:
        return f"in {self.root}" if self.root else ""


@dataclass(frozen=True)
class ServiceOutcome(Outcome):
    """``run``, ``stop``, ``rerun``: the server's pid afterwards (None: not running)."""

    pid: int | None = None
    url: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} at {self.url}" if self.pid else "not running"


@dataclass(frozen=True)
class BuildOutcome(Outcome):
    stack: Path | None = None
    up_to_date: bool = False

    def describe(self) -> str:
        return f"stack {self.stack}" + (" (up to date)" if self.up_to_date else "")


@dataclass(frozen=True)
class BackupOutcome(Outcome):
    backup: BackupRef | None = None
    shared: Path | None = None  # the shared latest it was published as
    counts: CatalogCounts | None = None

    def describe(self) -> str:
        return self.backup.name if self.backup else ""


@dataclass(frozen=True)
class RestoreOutcome(Outcome):
    backup: BackupRef | None = None  # the backup restored
    safety_backup: Path | None = None  # the state before, kept
    held_seconds: float | None = None  # how long requests waited during the swap

    def describe(self) -> str:
        return f"from {self.backup.describe()}" if self.backup else ""


@dataclass(frozen=True)
class MirrorOutcome(Outcome):
    source: str  # the server mirrored (hst.test)
    source_host: str = ""
    source_url: str = ""
    backup: BackupRef | None = None  # the source's backup that was copied
    safety_backup: Path | None = None
    deleted: int | None = None  # cache files the source no longer had
    held_seconds: float | None = None  # how long requests waited during the swap

    def describe(self) -> str:
        if not self.backup:
            return f"from {self.source}"
        made = f", made {self.backup.created.isoformat(timespec='seconds')}" if self.backup.created else ""
        return f"from {self.source} (its backup {self.backup.path}{made})"


@dataclass(frozen=True)
class RepairOutcome(Outcome):
    """``check-cache --repair``."""

    source: str = ""
    source_host: str = ""
    fetched: int = 0
    still_bad: int = 0
    quarantine: Path | None = None
    quarantined: int = 0

    def describe(self) -> str:
        parts = [f"{self.fetched} fetched" + (f" from {self.source}" if self.source else "")]
        if self.quarantined:
            parts.append(f"{self.quarantined} quarantined")
        if self.still_bad:
            parts.append(f"{self.still_bad} still bad")
        return ", ".join(parts)


@dataclass(frozen=True)
class ScheduleOutcome(Outcome):
    job: str = "backup"  # or "pause": `--pause-until` / `--resume`
    cron_line: str = ""  # the line installed ("" when removed or none)
    changed: bool = False
    until: datetime.datetime | None = None  # pause: the cron lines do nothing until then (None: resumed)

    def describe(self) -> str:
        if self.job == "pause":
            return f"cron paused until {self.until.isoformat(timespec='minutes')}" if self.until else "cron resumed"
        return f"{self.job}: " + (self.cron_line or "no line") + ("" if self.changed else " (unchanged)")


@dataclass(frozen=True)
class MaintenanceOutcome(Outcome):
    """``maintenance on|off``: whether it is on afterwards, and the notice then in force."""

    on: bool = False
    message: str = ""
    retry_after: int | None = None
    since: datetime.datetime | None = None
    by: str = ""

    def describe(self) -> str:
        return f"on: {self.message!r}" if self.on else "off"


@dataclass(frozen=True)
class BootOutcome(Outcome):
    """``boot enable|disable``: how the server starts at boot afterwards."""

    enabled: bool = False
    how: str = ""  # "systemd" (the unit linked and enabled) or "cron" (an @reboot line)
    what: str = ""  # the unit's name, or the @reboot line
    changed: bool = False

    def describe(self) -> str:
        state = f"enabled ({self.how}: {self.what})" if self.enabled else f"disabled ({self.how})"
        return state + ("" if self.changed else " (unchanged)")


@dataclass(frozen=True)
class RotateOutcome(Outcome):
    """``rotate-logs``: whether it was forced and whether logrotate ran to its end."""

    forced: bool = False
    rotated: bool = False

    def describe(self) -> str:
        return ("forced" if self.forced else "due logs") + ("" if self.rotated else ", not done")


@dataclass(frozen=True)
class StepResult(Record):
    """One step of ``inv nightly``: the task it ran as, how it ended, in a few words."""

    task: str
    result: str  # ok | failed | skipped | interrupted
    seconds: float = 0.0
    detail: str = ""  # what it did (its outcome's words), the error line, or why it was skipped

    def line(self) -> str:
        """The step's summary line: ``nightly: backup        ok      4.2s  2026-12-03T031700``."""
        took = f"{self.seconds:6.1f}s" if self.result != "skipped" else " " * 7
        shown = {"failed": "FAILED", "interrupted": "INTERRUPTED"}.get(self.result, self.result)
        return f"nightly: {self.task:13} {shown:11} {took}  {self.detail}".rstrip()


@dataclass(frozen=True)
class NightlyOutcome(Outcome):
    """``nightly``: each step's result, in the order they ran (each step also has its own audit line)."""

    steps: tuple[StepResult, ...] = ()

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(s.task for s in self.steps if s.result in ("failed", "interrupted"))

    def describe(self) -> str:
        return ", ".join(f"{s.task} {s.result}" for s in self.steps)


@dataclass(frozen=True)
class ReleaseOutcome(Outcome):
    """``upgrade`` and ``rollback``: which release serves afterwards, and which served before."""

    serving: str = ""  # the release that serves after the run ("" : the checkout)
    previous: str = ""  # the one that served before it
    revision: str = ""  # the serving release's git sha
    switched: bool = False  # whether ``current`` now names another release than before
    rolled_back: bool = False  # switched, failed, and switched back

    def describe(self) -> str:
        if self.rolled_back:
            return f"rolled back: {self.serving or 'the checkout'} serves"
        if self.switched:
            return f"{self.previous or 'the checkout'} -> {self.serving} ({self.revision[:7]})"
        return f"{self.serving or 'the checkout'} serves (nothing switched)"


OUTCOMES: dict[str, type[Outcome]] = {
    "install": InstallOutcome, "run": ServiceOutcome, "stop": ServiceOutcome, "rerun": ServiceOutcome,
    "build": BuildOutcome, "backup": BackupOutcome, "restore": RestoreOutcome, "mirror": MirrorOutcome,
    "check-cache": RepairOutcome, "schedule": ScheduleOutcome, "maintenance": MaintenanceOutcome,
    "boot": BootOutcome, "rotate-logs": RotateOutcome, "nightly": NightlyOutcome,
    "upgrade": ReleaseOutcome, "rollback": ReleaseOutcome,
}


def read(task: str, data: object) -> Outcome | None:
    """The outcome record of ``task`` from its JSON (an audit line's ``touched``); None if it is not one."""
    kind = OUTCOMES.get(task)
    if kind is None or not data or not isinstance(data, dict):
        return None
    try:
        return kind.from_dict(_older(data), where=f"the outcome of {task}")
    except RecordError:
        return None


def _older(data: dict) -> dict:
    """An audit line written before the outcome records (a backup named by a bare string) in today's shape."""
    backup = data.get("backup")
    if not isinstance(backup, str):
        return data
    path = data.get("path") or backup  # `inv backup` said {backup: NAME, path: PATH}
    ref = {"name": Path(backup).name, "path": path, "created": data.get("backup_created"),
           "server": data.get("backup_of") or data.get("source") or ""}
    return {**data, "backup": ref}
