"""What every task shares: the error and interrupt boundary, and the server it acts on.

``@ops_task`` wraps invoke's ``@task``:

* library errors (``CrdsOpsError``) become one line on stderr and exit code 1; unexpected
  exceptions too, unless ``inv --debug`` asks for the traceback;
* SIGINT, SIGTERM and SIGHUP raise ``crdsops.interrupts.Interrupted`` inside the task, so
  its ``finally`` blocks clean up; the run ends with one line, ``error: interrupted during
  STEP; <what state the server is in>``, and exit code 128 + the signal;
* a task names the server it acts on with ``acting_on(config)``: the interrupt line probes
  that server's state then, and compares it with what it was when the task began;
* ``@ops_task(changing=True)`` marks a task that changes its server (``changing="repair"``:
  only when that flag is given; never under ``--dry-run``): when it ends, ok, failed or
  interrupted, one line goes to the server's audit log (``crdsops.runtime.audit``), with what
  the task said it touched (``touched(backup=...)``);
* ``@ops_task(notifying=True)`` (backup, restore, mirror, check-cache) also pings
  ``monitoring.ping_url`` when it starts and ends, and mails ``monitoring.mail_to`` on
  failure (``crdsops.runtime.notify``), with the last lines of its output; a notification
  that fails is a warning on stderr and in the audit line, never a failed task.

Module level imports invoke and the standard library only, so `inv --list` stays fast.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from invoke import Exit, task


def _before_any_task(signum, _frame):
    # Between invoke's start and a task's own handlers nothing has changed yet: say so and end.
    print(f"error: interrupted by {signal.Signals(signum).name} before any task began; nothing was changed",
          file=sys.stderr, flush=True)
    os._exit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    if signal.getsignal(_sig) == signal.SIG_DFL:
        signal.signal(_sig, _before_any_task)


def debugging() -> bool:
    """True under `inv --debug` (or INVOKE_DEBUG), when tracebacks are wanted."""
    return bool(os.environ.get("INVOKE_DEBUG")) or logging.getLogger("invoke").isEnabledFor(logging.DEBUG)


@dataclass
class TaskRun:
    """The run of one task: which one, on which server, whether that server was up, how it ended."""

    task: str
    config: object | None = None  # the ServerConfig it acts on, once acting_on() said so
    was_running: bool | None = None
    log_to: object | None = None  # the ServerConfig whose audit log gets the line (default: config)
    changing: bool = False  # audited: one line in the server's audit log when it ends
    notifying: bool = False  # pings and mails (monitoring:) when it starts and ends
    flags: dict = field(default_factory=dict)  # the flags given, not at their default
    touched: dict = field(default_factory=dict)  # what it said it touched (``touched()``)
    warnings: list = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    started_at: str = ""
    notifier: object | None = None
    output: _OutputTail | None = None
    result: str = "ok"  # ok | failed | interrupted
    exit: int = 0
    error: str | None = None  # the error as the user sees it, all its lines


_runs: list[TaskRun] = []


def acting_on(config):
    """Say which server this task acts on (for the interrupt line, the audit log, alerts); return ``config``."""
    from crdsops.runtime import service

    if _runs and _runs[-1].config is None:
        run = _runs[-1]
        run.config = config
        try:
            run.was_running = service.running_pid(config) is not None
        except Exception:  # noqa: BLE001 - a probe for a message; never fail the task on it
            run.was_running = None
        if run.notifying:
            from crdsops.runtime.notify import Notifier

            run.notifier = Notifier(config, run.task)
            _warn(run, run.notifier.started())
    return config


def audited_in(config) -> None:
    """Log this run in ``config``'s audit log without making it the server acted on (``inv build``)."""
    if _runs and config is not None:
        _runs[-1].log_to = config


def audited_in_installed() -> None:
    """``audited_in`` the installed server, if there is one whose config loads (else no audit line)."""
    from crdsops.config.installed import resolve_installed_or_none
    from crdsops.errors import CrdsOpsError

    try:
        audited_in(resolve_installed_or_none())
    except CrdsOpsError:
        pass


def touched(**facts) -> None:
    """Record what the running task touched (a backup, a mirror's source ...) for its audit line."""
    if _runs:
        _runs[-1].touched.update({k: str(v) if isinstance(v, os.PathLike) else v for k, v in facts.items()
                                  if v is not None})


def ops_task(*args, changing: bool | str = False, notifying: bool = False, **kwargs):
    """``@task``, with errors and interrupts turned into one line on stderr and an exit code.

    ``changing``: True for a task that changes its server, or the name of the flag that makes it
    one (``changing="repair"``); such a run leaves one audit line. ``notifying``: it sends the
    ``monitoring:`` notifications. A ``--dry-run`` is neither.
    """

    def decorate(func):
        signature = inspect.signature(func)

        @functools.wraps(func)
        def body(c, *a, **kw):
            from crdsops import interrupts, steps
            from crdsops.errors import CrdsOpsError

            steps.reset()
            run = TaskRun(func.__name__.rstrip("_").replace("_", "-"))
            run.flags = _given_flags(signature, c, a, kw)
            dry = bool(run.flags.get("dry-run"))
            run.changing = not dry and (changing is True or (isinstance(changing, str) and bool(
                run.flags.get(changing.replace("_", "-")))))
            run.notifying = notifying and not dry
            run.started_at = _now_iso()
            if run.notifying:
                run.output = _OutputTail()
            _runs.append(run)
            try:
                with interrupts.raising_signals(say=_say_err):
                    result = func(c, *a, **kw)
                # block-buffered output (a pipe) meets a closed reader here, not in print(): the
                # same quiet 141 as when a print() finds the pipe closed
                sys.stdout.flush()
                return result
            except CrdsOpsError as err:
                run.result, run.exit, run.error = "failed", 1, f"error: {err}"
                if debugging():
                    raise
                raise Exit(f"error: {err}", code=1) from None
            except (Exit, SystemExit) as err:
                code = _exit_code(err)
                if code:
                    message = getattr(err, "message", None)
                    run.result, run.exit = "failed", code
                    run.error = str(message) if message else f"exit {code}"
                raise
            except KeyboardInterrupt as err:
                signal_exit = err if isinstance(err, interrupts.Interrupted) else interrupts.Interrupted()
                line = f"error: {interrupted_line(run)}"
                run.result, run.exit, run.error = "interrupted", signal_exit.exit_code, line
                raise Exit(line, code=signal_exit.exit_code) from None
            except BrokenPipeError:
                # `inv config | head`: the reader left; end quietly, as a Unix tool killed by SIGPIPE
                # would, and keep Python from complaining again when it flushes stdout at exit.
                run.result, run.exit, run.error = "failed", 141, "error: its output pipe was closed"
                _stdout_to_devnull()
                raise Exit(code=141) from None
            except Exception as err:
                line = (f"error: unexpected {type(err).__name__}: {err} "
                        f"(run `inv --debug {func.__name__}` for the traceback)")
                run.result, run.exit, run.error = "failed", 1, line
                if debugging() or type(err).__module__.startswith("invoke"):
                    raise
                raise Exit(line, code=1) from None
            finally:
                _runs.pop()
                _finish(run)
                _flush_quietly()

        return task(*args, **kwargs)(body)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        func, args = args[0], ()
        return decorate(func)
    return decorate


# --- the end of a run: notifications and the audit line ------------------------------------

class _OutputTail:
    """Keep the last lines the task printed (stdout and stderr) while they still reach the terminal."""

    LINES = 40

    def __init__(self):
        self.lines: collections.deque[str] = collections.deque(maxlen=self.LINES)
        self.partial = ""
        self.saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = _Tee(sys.stdout, self), _Tee(sys.stderr, self)

    def feed(self, text: str) -> None:
        text = self.partial + text
        *whole, self.partial = text.split("\n")
        self.lines.extend(whole)

    def text(self) -> str:
        return "\n".join([*self.lines, self.partial] if self.partial else self.lines)

    def close(self) -> None:
        if isinstance(sys.stdout, _Tee):
            sys.stdout = self.saved[0]
        if isinstance(sys.stderr, _Tee):
            sys.stderr = self.saved[1]


class _Tee:
    def __init__(self, stream, tail: _OutputTail):
        self._stream, self._tail = stream, tail

    def write(self, text):
        self._tail.feed(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _finish(run: TaskRun) -> None:
    """Send the run's notifications, then write its audit line; neither may fail the task."""
    if run.output is not None:
        run.output.close()
    if run.notifier is not None:
        try:
            output = run.output.text() if run.output else ""
            _warn(run, run.notifier.finished(run.result == "ok", run.error or "", output))
        except Exception as err:  # noqa: BLE001 - a notification never fails the task
            _warn(run, [f"warning: notifications failed ({type(err).__name__}: {err})"])
    if run.changing and (run.log_to or run.config) is not None:
        _write_audit(run)


def _write_audit(run: TaskRun) -> None:
    config = run.log_to or run.config
    if not config.root.exists():
        return  # a first install refused before it made the root: there is nothing to log into
    from crdsops.runtime import audit

    error = None
    if run.error:
        first = run.error.splitlines()[0] if run.error.strip() else run.error
        error = first.removeprefix("error: ")
    entry = audit.Entry(
        at=run.started_at, task=run.task, server=config.name, who=audit.who(), result=run.result,
        exit=run.exit, seconds=round(time.monotonic() - run.started, 3), flags=run.flags, error=error,
        touched=run.touched, warnings=run.warnings,
    )
    try:
        audit.append(config.layout, entry)
    except OSError as err:
        _say_err(f"warning: could not write the audit line to {config.layout.audit_log} ({err.strerror or err})")


def _warn(run: TaskRun, warnings: list[str]) -> None:
    for line in warnings:
        _say_err(line)
        run.warnings.append(line.removeprefix("warning: "))


def _given_flags(signature: inspect.Signature, c, a, kw) -> dict:
    """The flags a run was given, as ``{flag-name: value}``, leaving out those at their default."""
    try:
        bound = signature.bind(c, *a, **kw)
    except TypeError:
        return {}
    flags = {}
    for name, value in list(bound.arguments.items())[1:]:
        param = signature.parameters[name]
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or value == param.default:
            continue
        flag = name.rstrip("_").replace("_", "-")
        flags[flag] = value if isinstance(value, (bool, int, float, str, type(None))) else str(value)
    return flags


def _exit_code(err: BaseException) -> int:
    code = getattr(err, "code", 1)
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _now_iso() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def interrupted_line(run: TaskRun) -> str:
    """``interrupted during STEP; STATE``: where it stopped and what the server is now."""
    from crdsops import steps

    where = steps.current() or run.task
    return f"interrupted during {where}; {server_state(run)}"


def server_state(run: TaskRun) -> str:
    if run.config is None:
        return "no server was changed"
    from crdsops.runtime import service

    config = run.config
    try:
        pid = service.running_pid(config)
    except Exception:  # noqa: BLE001
        return f"the state of {config.name} is unknown; check it with `inv status`"
    if pid is not None:
        before = " as before" if run.was_running else ""
        return f"{config.name} is up{before} (pid {pid}) at {config.local_url}"
    if run.was_running:
        return f"{config.name} is DOWN (it was up before); start it with `inv run`"
    return f"{config.name} is not running, as before"


def _say_err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
    except (OSError, ValueError):
        pass


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null and drop what it still buffers, so Python's flush at exit is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        sys.stdout.flush()  # the bytes the closed pipe refused now go to /dev/null
    except (OSError, ValueError):
        pass
    if sys.__stdout__ is not None and sys.__stdout__ is not sys.stdout:
        try:
            sys.__stdout__.flush()
        except (OSError, ValueError):
            pass


def server(obs=None, kind=None):
    """The server a task acts on: the one ``--obs``/``--kind`` name, else the installed one."""
    from crdsops.config.installed import resolve

    return acting_on(resolve(obs, kind))


def installed_config():
    """The installed server (the record, with CRDSOPS_CONFIGS overriding its configs)."""
    return server()


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask before a destructive step; no answer (no terminal, EOF) means no."""
    if assume_yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
