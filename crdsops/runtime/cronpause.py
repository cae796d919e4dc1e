"""A pause of crdsops' cron lines until a given time: ``inv schedule --pause-until TIME`` (the old ``no_cron_til``).

The pause is one file, ``Layout.cron_pause`` (``<root>/state/cron-pause.json``: until when, who set
it, when). The crontab itself is never edited for it, so nothing is left to undo: every line that
``inv schedule`` installs runs its task with ``CRDSOPS_CRON=1`` in its environment, and the task
boundary (``crdsops.tasks._common``) asks ``in_force`` first. While a pause is in force the task
says one line (``paused_line``) and exits 0, doing nothing; once its time has passed the file is
ignored and the next night runs as usual. The ``@reboot`` line is never paused: a machine that
boots must bring its server up. A pause in force is one line of ``inv status``.

``parse_until`` reads TIME as a date or date and time (``2026-12-24``, ``2026-12-24T06:00``, ISO
8601; without a zone, this machine's local time, the clock cron reads its lines by) or as a
duration from now (``36h``, ``3d``).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from dataclasses import dataclass

from crdsops.config.layout import Layout
from crdsops.config.model import ServerConfig, parse_duration
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, write_atomic
from crdsops.records import Record, RecordError
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import ScheduleOutcome
from crdsops.steps import Plan

log = logging.getLogger(__name__)

CRON_ENV = "CRDSOPS_CRON"  # set by the cron lines: the runs a pause applies to


@dataclass(frozen=True)
class CronPause(Record):
    until: datetime.datetime  # aware
    by: str = ""  # who set it (``audit.Who.describe()``)
    at: datetime.datetime | None = None  # when it was set

    def describe(self) -> str:
        """``paused until 2026-12-24 06:00 UTC (set by root)``."""
        by = f" (set by {self.by})" if self.by else ""
        return f"paused until {self.until.astimezone(datetime.UTC):%Y-%m-%d %H:%M} UTC{by}"


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse_until(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """TIME as an aware datetime (module docstring); CrdsOpsError naming the accepted forms."""
    now = now or now_utc()
    duration = parse_duration(text)
    if duration is not None:
        return now + duration
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CrdsOpsError(f"--pause-until {text!r} is not a time; give a date and time (2026-12-24T06:00, "
                           "local time unless it names a zone) or a duration from now (36h, 3d)") from None
    return when.astimezone() if when.tzinfo is None else when  # naive: local time, as cron's


def read(layout: Layout) -> CronPause | None:
    """The pause recorded, in force or not; None when there is none (or it cannot be read)."""
    try:
        return CronPause.from_dict(json.loads(layout.cron_pause.read_text()), where=str(layout.cron_pause))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecordError) as err:
        log.warning(f"ignoring the unreadable cron pause {layout.cron_pause} ({err})")
        return None


def in_force(layout: Layout, now: datetime.datetime | None = None) -> CronPause | None:
    """The pause, while its time has not passed; None otherwise (the lines resume by themselves)."""
    pause = read(layout)
    return pause if pause is not None and pause.until > (now or now_utc()) else None


def paused_line(layout: Layout) -> str | None:
    """For a run started by a cron line: the one line it says instead of running; None: run."""
    if not os.environ.get(CRON_ENV):
        return None
    pause = in_force(layout)
    if pause is None:
        return None
    return f"crdsops' cron lines are {pause.describe()}; nothing done (`inv schedule --resume` ends the pause)"


class PauseCron(Operation):
    """``inv schedule --pause-until TIME`` (``until``), or ``--resume`` (``until`` None)."""

    task = "schedule"

    def __init__(self, config: ServerConfig, until: datetime.datetime | None):
        super().__init__(config)
        self.until = until
        self.changed = False

    @property
    def locks(self) -> None:
        return None  # pausing must work while the job it pauses runs (and holds the lock)

    def check(self) -> None:
        if self.until is not None and self.until <= now_utc():
            raise CrdsOpsError(f"--pause-until {self.until.isoformat(timespec='minutes')} is in the past; "
                               "give a later time (or a duration: 36h)")

    def probe(self) -> CronPause | None:
        return in_force(self.config.layout)

    def plan(self, current: CronPause | None) -> Plan:
        p = Plan(f"pausing the cron lines of {self.config.name}")
        if self.until is not None:
            now = f" (now {current.describe()})" if current else ""
            until = self.until.astimezone(datetime.UTC)
            p.add(f"pause crdsops' cron lines until {until:%Y-%m-%d %H:%M} UTC{now}; they resume by themselves",
                  self._pause, name="pausing")
        elif current is not None:
            p.add(f"resume crdsops' cron lines ({current.describe()})", self._resume, name="resuming")
        else:
            p.add("no pause in force; nothing to do")
        return p

    def _pause(self) -> None:
        from crdsops.runtime import audit

        layout = self.config.layout
        ensure_dir(layout.state)
        pause = CronPause(self.until.astimezone(datetime.UTC), audit.who().describe(), now_utc().replace(microsecond=0))
        write_atomic(layout.cron_pause, json.dumps(pause.as_dict(), indent=2) + "\n")
        self.changed = True
        log.info(f"crdsops' cron lines of {self.config.name} are {pause.describe()}")

    def _resume(self) -> None:
        self.config.layout.cron_pause.unlink(missing_ok=True)
        self.changed = True
        log.info(f"crdsops' cron lines of {self.config.name} resumed")

    def outcome(self) -> ScheduleOutcome:
        until = self.until.astimezone(datetime.UTC) if self.until and self.changed else None
        return ScheduleOutcome("pause", "", self.changed, until)
