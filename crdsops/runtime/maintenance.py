"""``inv maintenance on|off``: the server's maintenance file, for the rare job that cannot serve.

Restores and mirrors serve throughout (requests are held for a swap's few seconds); a job
that truly cannot (a schema change by hand, a long repair) turns maintenance on instead:
while ``Layout.maintenance`` exists, the server answers JSON-RPC with HTTP 503, a
``Retry-After`` and the notice's message, which the crds client prints in its error line,
so a pipeline fails with a reason rather than a reset connection. File downloads and
crdsops' own probes are served as usual (server/crds_server/serving.py reads the file).

The file is JSON (``MaintenanceNotice``: message, retry_after, since, by), written
atomically and readable by the web user (0644: it holds nothing secret). Turning it on or
off takes no server lock: an operator must be able to do it while a long job holds the lock,
and one file written by rename cannot be half-done.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass

from crdsops.config.layout import Layout
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import write_atomic
from crdsops.records import Record, RecordError
from crdsops.runtime import audit
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import MaintenanceOutcome
from crdsops.steps import Plan

log = logging.getLogger(__name__)

DEFAULT_MESSAGE = "this CRDS server is in maintenance; try again later"
DEFAULT_RETRY_AFTER = 300  # seconds; the server's default too
READABLE_FILE = 0o644  # the web user reads it
MAX_MESSAGE = 200  # it travels as an HTTP reason phrase


@dataclass(frozen=True)
class MaintenanceNotice(Record):
    """What the maintenance file says."""

    message: str = DEFAULT_MESSAGE
    retry_after: int = DEFAULT_RETRY_AFTER
    since: datetime.datetime | None = None
    by: str = ""

    def describe(self) -> str:
        since = self.since.strftime("%Y-%m-%d %H:%M UTC") if self.since else "?"
        return f"ON since {since} by {self.by or '?'}: {self.message!r} (clients told to retry after {self.retry_after} s)"


def read(layout: Layout) -> MaintenanceNotice | None:
    """The notice, or None when maintenance is off. A file that does not parse still means on."""
    try:
        text = layout.maintenance.read_text()
    except FileNotFoundError:
        return None
    try:
        return MaintenanceNotice.from_dict(json.loads(text), where=str(layout.maintenance))
    except (ValueError, RecordError) as err:
        log.warning("maintenance file %s does not parse (%s); the server says its default message",
                    layout.maintenance, err)
        return MaintenanceNotice(message=DEFAULT_MESSAGE)


def notice(message: str | None, retry_after: int | str | None) -> MaintenanceNotice:
    """A new notice from the task's flags (None: the default), checked; by whom and since now."""
    text = DEFAULT_MESSAGE if message is None else " ".join(str(message).split())
    if not text:
        raise CrdsOpsError("--message is empty; say why the server is in maintenance (or leave it out)")
    if len(text) > MAX_MESSAGE or not text.isprintable() or not text.isascii():
        raise CrdsOpsError(f"--message must be printable ASCII of at most {MAX_MESSAGE} characters "
                           "(the crds client shows it in an HTTP status line)")
    try:
        seconds = DEFAULT_RETRY_AFTER if retry_after is None else int(retry_after)
    except ValueError:
        seconds = 0
    if seconds < 1:
        raise CrdsOpsError(f"--retry-after {retry_after!r} is not a positive number of seconds")
    who = audit.who()
    return MaintenanceNotice(message=text, retry_after=seconds, since=datetime.datetime.now(datetime.UTC),
                             by=f"{who.user}@{who.host}")


def outcome_of(config: ServerConfig) -> MaintenanceOutcome:
    current = read(config.layout)
    if current is None:
        return MaintenanceOutcome(on=False)
    return MaintenanceOutcome(on=True, message=current.message, retry_after=current.retry_after,
                              since=current.since, by=current.by)


class Maintenance(Operation):
    """``inv maintenance on`` (with its ``MaintenanceNotice``) or ``off`` (``notice`` None)."""

    task = "maintenance"
    quiet_plan = True  # its one line says it all

    def __init__(self, config: ServerConfig, new: MaintenanceNotice | None):
        super().__init__(config)
        self.new = new

    @property
    def locks(self) -> None:
        return None  # see the module docstring

    def probe(self) -> MaintenanceNotice | None:
        return read(self.config.layout)

    def plan(self, current: MaintenanceNotice | None) -> Plan:
        path = self.config.layout.maintenance
        p = Plan(f"maintenance of {self.config.name}")
        if self.new is not None:
            said = (f"maintenance on: JSON-RPC answers 503 {self.new.message!r}, retry after "
                    f"{self.new.retry_after} s ({path})")
            p.add(said, lambda: self._write(said), name="turning maintenance on")
        elif current is not None:
            said = f"maintenance off: JSON-RPC serves again ({path} removed)"
            p.add(said, lambda: self._remove(said), name="turning maintenance off")
        else:
            said = f"maintenance is already off ({path} does not exist); nothing changed"
            p.add(said, lambda: log.info(said))
        return p

    def _write(self, said: str) -> None:
        write_atomic(self.config.layout.maintenance, json.dumps(self.new.as_dict(), indent=2) + "\n",
                     mode=READABLE_FILE)
        log.info(said)

    def _remove(self, said: str) -> None:
        self.config.layout.maintenance.unlink(missing_ok=True)
        log.info(said)

    def outcome(self) -> MaintenanceOutcome:
        return outcome_of(self.config)
