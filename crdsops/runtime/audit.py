"""The audit log: one JSON line per run of a changing task, in ``<root>/logs/audit.jsonl`` (0600).

The task boundary (``crdsops.tasks._common.ops_task``) appends the line when a changing task
ends, whether it succeeded, failed or was interrupted; ``inv history`` and ``inv status``
read it. A line (schema 1) says::

    schema    1
    at        when the task began (ISO 8601, UTC, to the millisecond)
    seconds   how long it ran
    task      the task: install, run, stop, rerun, backup, restore, mirror, schedule, ...
    flags     the flags given, those not at their default ({"from": "2026-11-28", "yes": true})
    server    the server it acted on (hst.dev)
    who       {user, uid, host, pid, ssh, via, tty}: ssh is the SSH client (address and port
              from SSH_CLIENT) when the task came in over SSH, via the control host that sent it
              with ``fab`` (CRDSOPS_VIA), tty whether it ran in a terminal (cron: false)
    result    ok | failed | interrupted
    exit      the exit code
    error     the one error line (null when ok)
    touched   what it touched: {"backup": ..., "source": ..., "safety_backup": ...}
    warnings  notifications that could not be delivered, and the like

Lines are appended with one ``write`` on a file opened ``O_APPEND``, so concurrent writers
(a cron backup refused while a mirror runs) never interleave within a line. A line that does
not parse (cut short by a power loss, edited by hand) is skipped by the readers, and the next
line starts on a line of its own.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from crdsops.config.layout import Layout
from crdsops.files import ensure_dir

SCHEMA = 1
RESULTS = ("ok", "failed", "interrupted")


@dataclass(frozen=True)
class Who:
    user: str
    uid: int
    host: str
    pid: int
    ssh: str | None = None  # "ADDRESS PORT" of the SSH client
    via: str | None = None  # the control host a `fab` run came from
    tty: bool = False

    def describe(self) -> str:
        """``root`` / ``ops via fab on ctl1`` / ``ops over ssh from 10.0.0.9``."""
        text = self.user
        if self.via:
            text += f" via fab on {self.via}"
        elif self.ssh:
            text += f" over ssh from {self.ssh.split()[0]}"
        elif not self.tty:
            text += " (no terminal)"
        return text


def who() -> Who:
    """Who runs this process: user and uid, and where it came from (SSH client, fab control host)."""
    ssh = os.environ.get("SSH_CLIENT") or " ".join(os.environ.get("SSH_CONNECTION", "").split()[:2])
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    try:
        tty = sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):
        tty = False
    return Who(user=user, uid=os.getuid(), host=socket.gethostname(), pid=os.getpid(),
               ssh=" ".join(ssh.split()[:2]) or None, via=os.environ.get("CRDSOPS_VIA") or None, tty=tty)


@dataclass(frozen=True)
class Entry:
    at: str
    task: str
    server: str
    who: Who
    result: str  # one of RESULTS
    exit: int = 0
    seconds: float = 0.0
    flags: dict = field(default_factory=dict)
    error: str | None = None
    touched: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    schema: int = SCHEMA

    @property
    def when(self) -> datetime.datetime | None:
        try:
            return datetime.datetime.fromisoformat(self.at)
        except (TypeError, ValueError):
            return None

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def as_dict(self) -> dict:
        data = asdict(self)
        return {"schema": data.pop("schema"), **data}

    @classmethod
    def from_dict(cls, data: dict) -> Entry | None:
        """The entry of one parsed line; None when it is not one of ours."""
        try:
            who_data = data["who"]
            return cls(
                at=str(data["at"]), task=str(data["task"]), server=str(data["server"]),
                who=Who(**{k: who_data.get(k) for k in ("user", "uid", "host", "pid", "ssh", "via", "tty")}),
                result=str(data["result"]), exit=int(data.get("exit") or 0),
                seconds=float(data.get("seconds") or 0), flags=dict(data.get("flags") or {}),
                error=data.get("error"), touched=dict(data.get("touched") or {}),
                warnings=list(data.get("warnings") or []), schema=int(data.get("schema") or SCHEMA),
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def append(layout: Layout, entry: Entry) -> None:
    """Append one line to the server's audit log (created 0600 in a 0700 ``logs/``)."""
    ensure_dir(layout.logs)
    line = (json.dumps(entry.as_dict(), sort_keys=False, default=str) + "\n").encode()
    fd = os.open(layout.audit_log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o777 != 0o600:
            os.fchmod(fd, 0o600)
        if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
            line = b"\n" + line  # the last line was cut short (a power loss): never glue ours onto it
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def newest_first(layout: Layout) -> Iterator[Entry]:
    """The entries of the audit log, newest first, read from the end (the log only grows)."""
    for raw in _lines_backwards(layout.audit_log):
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        entry = Entry.from_dict(data) if isinstance(data, dict) else None
        if entry is not None:
            yield entry


def last(layout: Layout, task: str) -> Entry | None:
    """The newest entry of ``task``, or None."""
    return next((e for e in newest_first(layout) if e.task == task), None)


def history(layout: Layout, limit: int | None = 20, task: str | None = None) -> list[Entry]:
    """The newest ``limit`` entries (of ``task``), oldest first, as a log reads."""
    found = []
    for entry in newest_first(layout):
        if task is None or entry.task == task:
            found.append(entry)
            if limit is not None and len(found) >= limit:
                break
    return list(reversed(found))


def _lines_backwards(path, block: int = 64 * 1024) -> Iterator[bytes]:
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        rest = b""
        while position > 0:
            step = min(block, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step) + rest
            lines = chunk.split(b"\n")
            rest = lines.pop(0)  # may be the tail of an earlier line: keep it for the next block
            for line in reversed(lines):
                if line.strip():
                    yield line
        if rest.strip():
            yield rest
