"""The run of one task, from its start to its audit line: interrupts, notifications, the audit.

``running(task, flags)`` is what every task runs under (the task boundary in
``crdsops.tasks._common`` opens it; nothing here knows invoke):

* SIGINT, SIGTERM and SIGHUP raise ``crdsops.interrupts.Interrupted`` inside it, so every
  ``finally`` cleans up; ``interrupted_line()`` says where it stopped and what state the
  server is in then, compared with what it was when the run said which server it acts on;
* the lines the library says are kept (``crdsops.output.captured``) for the notifications;
* a part that fails without failing the run (``alerting``: an off-site upload) is a warning
  now and a failure's notification at the end, the run's result staying ok;
* when it ends, ok, failed or interrupted: a notifying run pings ``monitoring.ping_url`` and
  mails ``monitoring.mail_to`` (``crdsops.runtime.notify``), and a changing run appends one
  line to its server's audit log (``crdsops.runtime.audit``) with its ``Outcome``. Neither
  can fail the task: each failure is a warning, on stderr and in the audit line;
* then the ``after`` hooks the caller gave, each with the finished run: the task boundary
  passes the metrics writer (``crdsops.data.metrics``, a layer this one may not import), which
  reads the audit line just written. A hook that raises is one warning line, never a failure.

``crdsops.runtime.lifecycle.drive`` tells the run which server it acts on (``acting_on``)
and hands it the operation's outcome.

``step(task, config)`` runs one step of a composite task (``inv nightly``) as a run of its own
inside the current one: its own audit line, as if its task had been run alone (so `inv status`
and the metrics see the nightly backup as a backup), no notifications of its own, and the
signals left to the enclosing run. A step that fails is recorded, not raised.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from crdsops import interrupts, output, steps
from crdsops.config.model import ServerConfig

if TYPE_CHECKING:  # annotations only: the outcomes' records cost an import every task would pay
    from crdsops.runtime.outcomes import Outcome

log = logging.getLogger(__name__)


@dataclass
class TaskRun:
    """One task being run: which, on which server, what it did, how it ended."""

    task: str
    flags: dict = field(default_factory=dict)  # the flags given, not at their default
    config: ServerConfig | None = None  # the server it acts on, once the driver said so
    was_running: bool | None = None
    audit_in: ServerConfig | None = None  # whose audit log gets its line (None: no line)
    outcome: Outcome | None = None
    notifier: object | None = None
    warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    started_at: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    tail: output.Tail | None = None
    result: str = "ok"  # ok | failed | interrupted
    exit: int = 0
    error: str | None = None  # the error as the user sees it
    after: tuple[Callable[[TaskRun], None], ...] = ()  # called last, once the audit line is written
    notifies: bool = True  # False: a step of a composite run, which notifies once for all its steps
    alert: str | None = None  # a part that failed without failing the run (an off-site upload): notify as a failure

    def acting_on(self, config: ServerConfig | None, audit_in: ServerConfig | None = None,
                  notifying: bool = False) -> None:
        """Say which server this run changes (``config``), whose log gets its line, and whether it notifies."""
        from crdsops.runtime import service

        self.audit_in = audit_in
        if config is not None and self.config is None:
            self.config = config
            try:
                self.was_running = service.running_pid(config) is not None
            except Exception:  # noqa: BLE001 - a probe for a message; never fail the task on it
                self.was_running = None
        wanted = notifying and self.notifies and config is not None and config.monitoring.notifies
        if wanted and self.notifier is None:
            from crdsops.runtime.notify import Notifier  # smtplib, email, urllib: only when there is someone to tell

            self.notifier = Notifier(config, self.task)
            self._warn(self.notifier.started())

    def alerting(self, line: str) -> None:
        """A part of the run failed but the run goes on and succeeds: warn now, and notify as a failure at the end.

        Monitoring must hear of it (an off-site copy missing for a week is a real gap), yet the
        backup it follows is good, so the task's result and exit code stay ``ok``/0.
        """
        self._warn([line])
        self.alert = line.removeprefix("warning: ")

    def ended(self, result: str, code: int, error: str | None) -> None:
        self.result, self.exit, self.error = result, code, error

    def interrupted_line(self) -> str:
        """``interrupted during STEP; STATE``: where it stopped and what the server is now."""
        return f"interrupted during {steps.current() or self.task}; {self.server_state()}"

    def server_state(self) -> str:
        if self.config is None:
            return "no server was changed"
        from crdsops.runtime import service

        config = self.config
        try:
            pid = service.running_pid(config)
        except Exception:  # noqa: BLE001
            return f"the state of {config.name} is unknown; check it with `inv status`"
        if pid is not None:
            before = " as before" if self.was_running else ""
            return f"{config.name} is up{before} (pid {pid}) at {config.local_url}"
        if self.was_running:
            return f"{config.name} is DOWN (it was up before); start it with `inv run`"
        return f"{config.name} is not running, as before"

    # --- the end: notifications, then the audit line ------------------------------------

    def finish(self) -> None:
        if self.notifier is not None:
            try:
                text = self.tail.text() if self.tail else ""
                ok = self.result == "ok" and self.alert is None
                self._warn(self.notifier.finished(ok, self.error or self.alert or "", text))
            except Exception as err:  # noqa: BLE001 - a notification never fails the task
                self._warn([f"warning: notifications failed ({type(err).__name__}: {err})"])
        if self.audit_in is not None:
            self._audit()
        for hook in self.after:
            try:
                hook(self)
            except Exception as err:  # noqa: BLE001 - a hook is a side view; the task's result stands
                log.warning(f"{getattr(hook, '__name__', 'a hook')} failed after the task ({type(err).__name__}: {err})")

    def _audit(self) -> None:
        config = self.audit_in
        if not config.root.is_dir():
            return  # a first install refused before it made the root (or it is not a directory): no log to write
        from crdsops.runtime import audit

        error = None
        if self.error:
            first = self.error.splitlines()[0] if self.error.strip() else self.error
            error = first.removeprefix("error: ")
        entry = audit.Entry(
            at=self.started_at.isoformat(timespec="milliseconds"), task=self.task, server=config.name, who=audit.who(),
            result=self.result, exit=self.exit, seconds=round(time.monotonic() - self.started, 3), flags=self.flags,
            error=error, touched=self.outcome.as_dict() if self.outcome else {}, warnings=self.warnings,
        )
        try:
            audit.append(config.layout, entry)
        except OSError as err:
            log.warning(f"could not write the audit line to {config.layout.audit_log} ({err.strerror or err})")

    def _warn(self, warnings: list[str]) -> None:
        for line in warnings:
            text = line.removeprefix("warning: ")
            log.warning(text)
            self.warnings.append(text)


_runs: list[TaskRun] = []


def current() -> TaskRun | None:
    """The task run under way in this process, if any (library code called from a test has none)."""
    return _runs[-1] if _runs else None


def alert(line: str) -> None:
    """``TaskRun.alerting`` for the current run; the runs it is a step of notify as a failure too.

    (``inv nightly`` notifies once for its steps: its backup's failed off-site upload must reach it.)
    Outside any run (library code in a test) the line is only logged.
    """
    if not _runs:
        log.warning(line.removeprefix("warning: "))
        return
    _runs[-1].alerting(line)
    for outer in _runs[:-1]:
        outer.alert = outer.alert or _runs[-1].alert


@contextlib.contextmanager
def running(task: str, flags: dict | None = None, after: tuple[Callable[[TaskRun], None], ...] = ()):
    """Run a task: signals raise ``Interrupted``, its lines are kept; notify, audit, then ``after``.

    The caller records how it ended (``TaskRun.ended``) before the block is left.
    """
    steps.reset()
    run = TaskRun(task, dict(flags or {}), after=tuple(after))
    _runs.append(run)
    try:
        with output.captured() as run.tail, interrupts.raising_signals():
            yield run
    finally:
        _runs.pop()
        run.finish()


@contextlib.contextmanager
def step(task: str, config: ServerConfig, flags: dict | None = None):
    """Run the block as step ``task`` of the current run (module docstring); yield its ``TaskRun``.

    Its failure (``CrdsOpsError`` or any other error) ends up in ``run.result`` and ``run.error``
    and goes no further; an interrupt is recorded and raised, stopping the enclosing run too.
    """
    from crdsops.errors import CrdsOpsError

    run = TaskRun(task, dict(flags or {}), notifies=False)
    run.tail = current().tail if current() else None
    _runs.append(run)
    try:
        yield run
    except CrdsOpsError as err:
        run.ended("failed", 1, f"error: {err}")
    except KeyboardInterrupt as err:
        code = err.exit_code if isinstance(err, interrupts.Interrupted) else 130
        run.ended("interrupted", code, f"error: {run.interrupted_line()}")
        raise
    except Exception as err:  # noqa: BLE001 - one step's bug must not stop the steps after it
        log.debug("the step's traceback", exc_info=True)
        run.ended("failed", 1, f"error: unexpected {type(err).__name__}: {err}")
    finally:
        _runs.pop()
        # a step whose operation changes nothing (the cache check) still gets its line: the
        # nightly's reader wants each step's result where its task's result is read
        run.audit_in = run.audit_in or config
        run.finish()
