"""Starting a new ``manage.py serve`` that takes the running one's listening socket over.

The server side is ``server/crds_server/devserver.py``. Here: whether the running server can
hand over (it serves with a control socket at the address the config names), and starting the
successor with its output on a pipe: it prints its start-up (or its traceback) there, then, once
it accepts on the taken-over socket, moves its output to the server's log, which closes the
pipe. End of the pipe with the successor alive and saying it took over is success; anything
else leaves the old server serving, and the output is the error.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from crdsops import commands, failpoints, interrupts
from crdsops.errors import CrdsOpsError
from crdsops.runtime.backends.base import kill, wait_gone

TOOK_OVER = "took over from pid"


class HandoverFailed(CrdsOpsError):
    """The successor did not take over; the old server goes on serving. ``output``: what it printed."""

    def __init__(self, message: str, output: str):
        super().__init__(message)
        self.output = output


@dataclass(frozen=True)
class Successor:
    pid: int
    output: str  # what it printed before its output moved to the server's log


def why_not(old_cmdline: str, control: Path, address: str) -> str:
    """Why the server running ``old_cmdline`` cannot hand its socket over; empty when it can."""
    words = old_cmdline.split()
    if "serve" not in words or "--control" not in words:
        return "it runs as `manage.py runserver`, started before servers could hand over their socket"
    if words[-1] != address:
        return f"its address changes from {words[-1]} to {address}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(control))  # connecting and hanging up is harmless: it waits for HANDOVER
        except OSError as err:
            return f"its control socket {control} does not answer ({err.strerror or err})"
    return ""


def start_successor(argv: list[str], *, timeout: float, what: str, **popen) -> Successor:
    """Start ``argv`` (a ``serve --take-over``) and wait until it has taken over or failed."""
    proc = commands.start(argv, what=what, stdout=commands.PIPE, stderr=commands.STDOUT,
                          start_new_session=True, **popen)  # its own session: stopping the old one spares it
    try:
        failpoints.hit("runserver.successor")
        output, finished = _read_until_closed(proc, timeout)
    except BaseException:
        with interrupts.shielded(f"stopping the new server (pid {proc.pid})"):
            # A successor that took over at this very moment drains gently on SIGTERM; the caller
            # then finds nothing running and starts the server again.
            _end(proc)
        raise
    proc.stdout.close()
    if finished and proc.poll() is None and TOOK_OVER in output:
        return Successor(proc.pid, output)
    code = _exit_code(proc, 5) if finished else None  # it closed its output: it is exiting
    _end(proc)
    why = f"did not take over within {timeout:g}s" if not finished else (
        f"exited (code {code})" if code is not None else "closed its output without taking over")
    last = next((line for line in reversed(output.splitlines()) if line.strip()), "")
    raise HandoverFailed(f"{why}" + (f": {last.strip()}" if last else ""), output)


def _read_until_closed(proc: commands.Popen, timeout: float) -> tuple[str, bool]:
    """What ``proc`` writes to its stdout until it closes it (True) or ``timeout`` passes (False)."""
    fd, chunks = proc.stdout.fileno(), []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], min(left, 0.2))[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks).decode(errors="replace"), True
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace"), False


def _exit_code(proc: commands.Popen, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc.returncode


def _end(proc: commands.Popen) -> None:
    """Stop the successor (gently: it may already hold requests) and reap it."""
    if proc.poll() is None:
        kill(proc.pid, signal.SIGTERM)
        if not wait_gone(proc.pid, 10):
            kill(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout and not proc.stdout.closed:
        proc.stdout.close()
