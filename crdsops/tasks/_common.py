"""The task boundary: ``@ops_task`` turns what a task raises into one line on stderr and an exit code.

* library errors (``CrdsOpsError``) become ``error: ...`` and exit code 1; unexpected
  exceptions too, unless ``inv --debug`` asks for the traceback;
* an interrupt (SIGINT, SIGTERM, SIGHUP) ends with ``error: interrupted during STEP; <what
  state the server is in>`` and exit code 128 + the signal;
* a closed output pipe (``inv config | head``) ends quietly with 141, as a Unix tool would.

Whatever the task, once it has ended its server's metrics are rewritten for node_exporter
(``crdsops.data.metrics``; off until ``monitoring.textfile_dir`` is set).

The run itself (interrupts raised, output kept, notifications, the audit line) is
``crdsops.runtime.taskrun``; changing tasks go through ``crdsops.runtime.lifecycle.drive``.
Module level imports invoke and the standard library only, so `inv --list` stays fast.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys

from invoke import Exit, task


def debugging() -> bool:
    """True under `inv --debug` (or INVOKE_DEBUG), when tracebacks are wanted."""
    return bool(os.environ.get("INVOKE_DEBUG")) or logging.getLogger("invoke").isEnabledFor(logging.DEBUG)


def ops_task(*args, **kwargs):
    """``@task``, with errors and interrupts turned into one line on stderr and an exit code."""

    def decorate(func):
        signature = inspect.signature(func)
        name = func.__name__.rstrip("_").replace("_", "-")

        @functools.wraps(func)
        def body(c, *a, **kw):
            from crdsops import output
            from crdsops.runtime import taskrun

            output.to_terminal()
            paused = _paused()
            if paused:
                say(paused)  # a cron line's run while `inv schedule --pause-until` holds: one line, exit 0
                return None
            with taskrun.running(name, _given_flags(signature, c, a, kw), after=(_metrics,)) as run:
                return _bounded(run, func, c, *a, **kw)

        return task(*args, **kwargs)(body)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        func, args = args[0], ()
        return decorate(func)
    return decorate


def _paused() -> str | None:
    """The line a run from a cron line says instead of running while the cron lines are paused."""
    if not os.environ.get("CRDSOPS_CRON"):
        return None  # only cron's runs pause: an operator's own `inv backup` always runs
    from crdsops.errors import CrdsOpsError
    from crdsops.runtime import cronpause

    try:
        return cronpause.paused_line(server().layout)
    except CrdsOpsError:
        return None  # no server to ask: the task itself says what is wrong


def _bounded(run, func, c, *a, **kw):
    """Call the task; record how it ended on ``run`` and turn any failure into ``Exit``."""
    from crdsops import interrupts
    from crdsops.errors import CrdsOpsError

    try:
        result = func(c, *a, **kw)
        # block-buffered output (a pipe) meets a closed reader here, not in print(): the
        # same quiet 141 as when a print() finds the pipe closed
        sys.stdout.flush()
        return result
    except CrdsOpsError as err:
        run.ended("failed", 1, f"error: {err}")
        if debugging():
            raise
        raise Exit(f"error: {err}", code=1) from None
    except (Exit, SystemExit) as err:
        code = _exit_code(err)
        if code:
            message = getattr(err, "message", None)
            run.ended("failed", code, str(message) if message else f"exit {code}")
        raise
    except KeyboardInterrupt as err:
        signal_exit = err if isinstance(err, interrupts.Interrupted) else interrupts.Interrupted()
        line = f"error: {run.interrupted_line()}"
        run.ended("interrupted", signal_exit.exit_code, line)
        raise Exit(line, code=signal_exit.exit_code) from None
    except BrokenPipeError:
        # `inv config | head`: the reader left; end quietly, as a Unix tool killed by SIGPIPE
        # would, and keep Python from complaining again when it flushes stdout at exit.
        run.ended("failed", 141, "error: its output pipe was closed")
        _stdout_to_devnull()
        raise Exit(code=141) from None
    except Exception as err:
        line = f"error: unexpected {type(err).__name__}: {err} (run `inv --debug {run.task}` for the traceback)"
        run.ended("failed", 1, line)
        if debugging() or type(err).__module__.startswith("invoke"):
            raise
        raise Exit(line, code=1) from None
    finally:
        _flush_quietly()


def _metrics(run) -> None:
    """Once any task has ended (its audit line written): the server's metrics file, if configured."""
    from crdsops.data import metrics

    metrics.after_task(run.audit_in or run.config)


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

    return resolve(obs, kind)


def say(text: str = "") -> None:
    """A task's own line for the operator (through logging, so a notification carries it too)."""
    logging.getLogger("crdsops.tasks").info(text)
