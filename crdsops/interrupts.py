"""Ctrl-C, SIGTERM and SIGHUP as one exception, and the sections they must not cut short.

A changing task runs under ``raising_signals()``: each of the three signals raises
``Interrupted`` in the main thread (a KeyboardInterrupt, so every ``try/finally`` and
``except BaseException`` that cleans up already handles it), and sets ``cancelled`` so
worker threads, which Python never interrupts, stop at their next ``check()``.

Rolling back after an interrupt must finish even if the operator presses Ctrl-C again:
``shielded(what)`` defers signals for its block, says that it is finishing ``what``, and
raises the deferred interrupt when the block is done.

Standard library only: the stack builder (run by a bare python3) uses it too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
cancelled = threading.Event()  # set by a signal, or by parallel.side_by_side for its jobs
received: list[int] = []  # the signals that arrived during this task
_shield_depth = 0
_shield_what: list[str] = []
_deferred: list[int] = []
log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP arrived; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {self.name}"


class Stopped(Interrupted):
    """No signal: ``parallel.side_by_side`` stopped this job because another one failed.

    Still an ``Interrupted`` (a KeyboardInterrupt), so a job's clean-up runs as for a signal;
    but it is no cause of anything, and says so.
    """

    def __str__(self) -> str:
        return "stopped because another job failed"


def describe(err: BaseException) -> str:
    """A reason for any exception, never empty (``str(KeyboardInterrupt())`` is '')."""
    if isinstance(err, Interrupted):
        return str(err)
    if isinstance(err, KeyboardInterrupt):
        return "interrupted by SIGINT"
    return str(err) or type(err).__name__


def _handler(signum, _frame):
    received.append(signum)
    cancelled.set()
    if _shield_depth:
        what, name = next((w for w in _shield_what if w), ""), signal.Signals(signum).name
        if what and not _deferred:
            log.warning(f"{name} received: finishing {what} first, then stopping")
        elif what:
            log.warning(f"{name} again: still finishing {what}; it must complete")
        _deferred.append(signum)
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def raising_signals():
    """Turn SIGINT, SIGTERM and SIGHUP into ``Interrupted`` for the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    cancelled.clear()
    received.clear()
    _deferred.clear()
    try:
        yield
    finally:
        # A signal after the task is done must not kill the process without a word (exit -2,
        # nothing printed): the run ends as it would have. Ignored, not handled in Python:
        # the interpreter puts back the default action for Python handlers as it exits.
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def shielded(what: str = "the clean-up", announce: bool = True):
    """Defer interrupts while the block runs (a rollback); raise the first one afterwards.

    A signal that arrives meanwhile is announced (on stderr, under a task) as being deferred,
    unless ``announce`` is false (the block looks at ``pending()`` and acts on it itself).
    """
    global _shield_depth
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only ever reach the main thread
        return
    _shield_what.append(what if announce else "")
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        _shield_what.pop()
    if not _shield_depth and _deferred:
        signum = _deferred[0]
        _deferred.clear()
        raise Interrupted(signum)


def pending_for_me() -> bool:
    """In a ``shielded`` block that no other shield encloses: whether a signal waits for its end.

    (Inside an enclosing shield, a rollback say, the signal waits for that one: the block goes on.)"""
    return bool(_deferred) and _shield_depth == 1


def pending() -> bool:
    """Whether a signal is waiting for the end of a shielded block."""
    return bool(_deferred)


def check() -> None:
    """In long loops of worker threads: stop when the task has been interrupted (``Interrupted``
    by the signal that arrived) or its jobs are being stopped (``Stopped``: another job failed)."""
    if cancelled.is_set():
        if received:
            raise Interrupted(received[0])
        raise Stopped(signal.SIGINT)


def send_self(signum: int) -> None:
    """Deliver ``signum`` to this process (failpoints use it to interrupt at a named point)."""
    os.kill(os.getpid(), signum)
