"""The last result of a check (``inv runtests``, ``inv check-cache``), kept for ``inv status``.

``Layout.last_result(task)`` (``<root>/state/<task>.json``, 0600) holds one record, written
by the check and read back by ``inv status`` as the same record::

    schema    1
    task      "runtests" | "check-cache" | "offsite"
    at        when it ran (ISO 8601, UTC)
    ok        true | false
    seconds   how long it took
    summary   the one line that says how it went
    error     the one line when it could not run (else null)

and what each check adds: ``RuntestsResult`` (passed, failed, django_only, live_only),
``CacheCheckResult`` (mode, checked, hashed, bytes, counts, problems: up to 100 names per kind);
``OffsiteResult`` (backup, remote, size, hash), the last off-site upload ``inv backup`` made.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field

from crdsops.config.layout import Layout
from crdsops.files import ensure_dir, write_atomic
from crdsops.records import Record, RecordError

SCHEMA = 1


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class CheckResult(Record):
    """What every check's last result says."""

    task: str = ""
    ok: bool = False
    seconds: float = 0.0
    summary: str = ""
    error: str | None = None
    at: datetime.datetime = field(default_factory=utcnow)
    schema: int = SCHEMA

    def line(self) -> str:
        """The one line `inv status` shows."""
        return self.summary or self.error or ("ok" if self.ok else "failed")


@dataclass(frozen=True)
class RuntestsResult(CheckResult):
    task: str = "runtests"
    passed: int = 0
    failed: int = 0
    django_only: bool = False
    live_only: bool = False


@dataclass(frozen=True)
class CacheCheckResult(CheckResult):
    task: str = "check-cache"
    mode: str = "sizes"
    checked: int = 0
    hashed: int = 0
    bytes: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # problem kind -> how many
    problems: dict[str, list[str]] = field(default_factory=dict)  # problem kind -> up to 100 names

    def line(self) -> str:
        if self.summary or self.error:
            return super().line()
        found = sum(self.counts.values()) if self.counts else sum(len(v) for v in self.problems.values())
        return f"{self.checked} files checked ({self.mode}), {found} problem(s)"  # a record older than summary


@dataclass(frozen=True)
class OffsiteResult(CheckResult):
    """The last off-site upload (``crdsops.data.offsite``), written after each ``inv backup`` that made one."""

    task: str = "offsite"
    backup: str = ""  # the backup's dated name
    remote: str = ""  # where it went: REMOTE:PATH/OBJECT
    size: int = 0  # of the encrypted file
    hash: str = ""  # what the remote's hash was checked with (md5, sha1)


KINDS: dict[str, type[CheckResult]] = {"runtests": RuntestsResult, "check-cache": CacheCheckResult,
                                       "offsite": OffsiteResult}


def write(layout: Layout, result: CheckResult) -> CheckResult:
    """Keep ``result`` as the last result of its task."""
    ensure_dir(layout.state)
    write_atomic(layout.last_result(result.task), json.dumps(result.as_dict(), indent=2) + "\n")
    return result


def read(layout: Layout, task: str) -> CheckResult | None:
    """The last result of ``task``, or None when it never ran (or its record is unreadable)."""
    try:
        data = json.loads(layout.last_result(task).read_text())
        return KINDS.get(task, CheckResult).from_dict(data, where=str(layout.last_result(task)))
    except (OSError, ValueError, RecordError):
        return None
