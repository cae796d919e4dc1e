"""What every task shares: the error and interrupt boundary, and the server it acts on.

``@ops_task`` wraps invoke's ``@task``:

* library errors (``CrdsOpsError``) become one line on stderr and exit code 1; unexpected
  exceptions too, unless ``inv --debug`` asks for the traceback;
* SIGINT, SIGTERM and SIGHUP raise ``crdsops.interrupts.Interrupted`` inside the task, so
  its ``finally`` blocks clean up; the run ends with one line, ``error: interrupted during
  STEP; <what state the server is in>``, and exit code 128 + the signal;
* a task names the server it acts on with ``acting_on(config)``: the interrupt line probes
  that server's state then, and compares it with what it was when the task began.

Module level imports invoke and the standard library only, so `inv --list` stays fast.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from dataclasses import dataclass

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
    """The run of one task: which one, on which server, and whether that server was up."""

    task: str
    config: object | None = None  # the ServerConfig it acts on, once acting_on() said so
    was_running: bool | None = None


_runs: list[TaskRun] = []


def acting_on(config):
    """Say which server this task acts on (for the interrupt line); return ``config``."""
    from crdsops.runtime import service

    if _runs and _runs[-1].config is None:
        _runs[-1].config = config
        try:
            _runs[-1].was_running = service.running_pid(config) is not None
        except Exception:  # noqa: BLE001 - a probe for a message; never fail the task on it
            _runs[-1].was_running = None
    return config


def ops_task(*args, **kwargs):
    """``@task``, with errors and interrupts turned into one line on stderr and an exit code."""

    def decorate(func):
        @functools.wraps(func)
        def body(c, *a, **kw):
            from crdsops import interrupts, steps
            from crdsops.errors import CrdsOpsError

            steps.reset()
            run = TaskRun(func.__name__.rstrip("_").replace("_", "-"))
            _runs.append(run)
            try:
                with interrupts.raising_signals(say=_say_err):
                    return func(c, *a, **kw)
            except CrdsOpsError as err:
                if debugging():
                    raise
                raise Exit(f"error: {err}", code=1) from None
            except (Exit, SystemExit):
                raise
            except KeyboardInterrupt as err:
                signal_exit = err if isinstance(err, interrupts.Interrupted) else interrupts.Interrupted()
                raise Exit(f"error: {interrupted_line(run)}", code=signal_exit.exit_code) from None
            except BrokenPipeError:
                # `inv config | head`: the reader left; end quietly, as a Unix tool killed by SIGPIPE
                # would, and keep Python from complaining again when it flushes stdout at exit.
                _stdout_to_devnull()
                raise Exit(code=141) from None
            except Exception as err:
                if debugging() or type(err).__module__.startswith("invoke"):
                    raise
                raise Exit(
                    f"error: unexpected {type(err).__name__}: {err} "
                    f"(run `inv --debug {func.__name__}` for the traceback)", code=1
                ) from None
            finally:
                _runs.pop()
                _flush_quietly()

        return task(*args, **kwargs)(body)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        func, args = args[0], ()
        return decorate(func)
    return decorate


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
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
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
