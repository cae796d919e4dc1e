"""What crdsops says, through ``logging``: the terminal, and the tail a notification carries.

Every module logs to a child of the ``crdsops`` logger (``logging.getLogger(__name__)``);
nothing in the library prints. A task (``to_terminal()``, once per process) shows:

* INFO as the bare line on stdout (the plan, the progress, what was done);
* WARNING on stderr as ``warning: ...``, ERROR as ``ERROR: ...``.

``info_to_stderr()`` sends the INFO lines to stderr for a block (``--json``: stdout holds
the document alone). ``captured()`` keeps the last lines said during a block, prefixes
included, for the notification a backup, restore or mirror sends when it ends: a logging
handler, not a tee of ``sys.stdout``.

Standard library only: the stack builder (run by a bare python3) uses it too.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import sys

ROOT = "crdsops"
PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "ERROR: ", logging.CRITICAL: "ERROR: "}


def line_of(record: logging.LogRecord) -> str:
    """The line as the operator reads it: the message, with ``warning: `` or ``ERROR: `` before it."""
    return PREFIX.get(record.levelno, "") + record.getMessage()


class TerminalHandler(logging.Handler):
    """INFO to stdout, WARNING and above to stderr; the streams are looked up when a line is written."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.info_to_stderr = False

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING or self.info_to_stderr else sys.stdout
        try:
            stream.write(line_of(record) + "\n")
            stream.flush()
        except BrokenPipeError:
            raise  # the reader left: the task boundary ends quietly, as a tool killed by SIGPIPE would
        except Exception:  # noqa: BLE001 - a message that cannot be written never fails the work
            self.handleError(record)


class Tail(logging.Handler):
    """The last ``lines`` lines said, as the terminal shows them."""

    def __init__(self, lines: int = 40):
        super().__init__(logging.INFO)
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(line_of(record))

    def text(self) -> str:
        return "\n".join(self.lines)


def _terminal() -> TerminalHandler | None:
    return next((h for h in logging.getLogger(ROOT).handlers if isinstance(h, TerminalHandler)), None)


def to_terminal() -> TerminalHandler:
    """Show what the library says on this process's terminal (idempotent)."""
    logger = logging.getLogger(ROOT)
    handler = _terminal()
    if handler is None:
        handler = TerminalHandler()
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # `inv --debug` configures the root logger: never say a line twice
    return handler


@contextlib.contextmanager
def info_to_stderr():
    """INFO lines go to stderr for the block (stdout carries a JSON document)."""
    handler = _terminal()
    before = handler.info_to_stderr if handler else False
    if handler:
        handler.info_to_stderr = True
    try:
        yield
    finally:
        if handler:
            handler.info_to_stderr = before


@contextlib.contextmanager
def captured(lines: int = 40):
    """Keep the last ``lines`` lines said during the block; yields the ``Tail``."""
    logger = logging.getLogger(ROOT)
    tail = Tail(lines)
    logger.addHandler(tail)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield tail
    finally:
        logger.removeHandler(tail)
