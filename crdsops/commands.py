"""The one seam through which crdsops runs commands: argv lists, a timeout, one error line.

    result = commands.run(["mysql", "--version"], what="the mysql client", timeout=10)
    commands.run(argv, check=False).ok

``run`` never goes through a shell, feeds no terminal input (stdin is ``input`` or nothing),
captures both outputs, and turns every way a command can fail into ``CommandFailed``, a
``CrdsOpsError`` whose message is one line: ``WHAT failed (exit N: the last line of its
stderr)``, ``WHAT: TOOL is not installed``, ``WHAT did not finish within Ns``. ``start`` is
the same for a process whose output is streamed (rsync's itemized list, a pipeline).

Tests describe "given these answers, these commands" as a table::

    with commands.fake({r"^rsync .*--files-from": commands.Result((), 0, "", "")}) as calls:
        ...
    assert calls[0][0] == "rsync"

A command fed on stdin is matched as a shell shows a here-string, ``mysql --batch <<< SELECT 1;``,
so a table can tell SQL statements apart; ``calls.lines`` are the commands in that form. An
answer may also be ``commands.times_out`` or ``commands.not_installed``: ``run`` then fails as
it does for the real command that hangs or is missing.

``PIPE``, ``DEVNULL``, ``STDOUT`` and ``Popen`` are subprocess's, for the streams and type of
what ``start`` starts, so no other module needs ``subprocess``.

Standard library only: the stack builder (run by a bare python3) uses it too.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from crdsops import interrupts
from crdsops.errors import CrdsOpsError

PIPE, DEVNULL, STDOUT = subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT
Popen = subprocess.Popen


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str | bytes = ""
    stderr: str | bytes = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_error_line(self) -> str:
        return last_line(self.stderr) or last_line(self.stdout)


class CommandFailed(CrdsOpsError):
    """A command failed; ``result`` holds what it said (None: it could not run at all)."""

    def __init__(self, message: str, result: Result | None = None):
        super().__init__(message)
        self.result = result


class NotInstalled(CommandFailed):
    """The command's program is not there (``error``: the FileNotFoundError that said so)."""

    def __init__(self, message: str, error: OSError):
        super().__init__(message)
        self.error = error


class TimedOut(CommandFailed):
    """The command did not finish within ``timeout`` seconds; it was stopped."""

    def __init__(self, message: str, timeout: float):
        super().__init__(message)
        self.timeout = timeout


def _text(data: str | bytes) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def last_line(text: str | bytes | None) -> str:
    """The last non-empty line of a command's output ('' if none)."""
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def failure_line(what: str, result: Result, codes: dict[int, str] | None = None) -> str:
    """``WHAT failed (exit N: meaning; last line)``, the one line every failed command gets."""
    said = result.last_error_line()
    meaning = (codes or {}).get(result.returncode, "")
    detail = "; ".join(x for x in (meaning, said) if x)
    return f"{what} failed (exit {result.returncode}{': ' + detail if detail else ''})"


def shown(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


@dataclass(frozen=True)
class How:
    """``run``'s options besides the argv, its timeout and its input.

    ``capture=False``: the command talks to this process's terminal (``inv manage -- shell``);
    its Result then holds no output. ``new_session``: in a session of its own, so a Ctrl-C in the
    terminal does not reach it (our own interrupt still ends it). ``user``: (user, group) to run
    it as, without our supplementary groups (we are root). ``ok_codes``: the exits that are not a
    failure; ``codes``: what an exit means, for the error line.
    """

    env: dict | None = None
    cwd: object = None
    text: bool = True
    capture: bool = True
    new_session: bool = False
    user: tuple[str, str] | None = None
    ok_codes: tuple[int, ...] = (0,)
    codes: dict[int, str] | None = None


@dataclass(frozen=True)
class Call:
    """One command as ``run`` runs it (what ``_real`` and the fakes see)."""

    argv: tuple[str, ...]
    timeout: float | None = None
    input: str | bytes | None = None
    how: How = How()


_fakes: list[Callable[[Call], Result | None]] = []


def run(argv: Sequence[str], *, what: str = "", timeout: float | None = None, input: str | bytes | None = None,
        check: bool = True, **how) -> Result:
    """Run ``argv`` to its end and return what it said; ``check``: raise CommandFailed unless its exit is accepted.

    ``how`` are the ``How`` options (env, cwd, text, capture, new_session, user, ok_codes,
    codes); an unknown one is a TypeError. ``what`` names the command in the error line.
    """
    options = How(**how)
    call = Call(tuple(str(a) for a in argv), timeout, input, options)
    what = what or call.argv[0]
    try:
        result = _faked(call)
        if result is None:
            result = _real(call)
    except FileNotFoundError as err:
        raise NotInstalled(f"{what}: {call.argv[0]} is not installed (not on PATH)", err) from None
    except subprocess.TimeoutExpired as err:
        limit = err.timeout if timeout is None else timeout
        raise TimedOut(f"{what} did not finish within {limit:g}s; it was stopped", limit) from None
    if check and result.returncode not in options.ok_codes:
        raise CommandFailed(failure_line(what, result, options.codes), result)
    return result


def _faked(call: Call) -> Result | None:
    for fake in reversed(_fakes):
        result = fake(call)
        if result is not None:
            return result
    return None


def _real(call: Call) -> Result:
    how = call.how
    quiet_stdin = call.input is None and how.capture  # a captured command never waits on the terminal
    as_user = {"user": how.user[0], "group": how.user[1], "extra_groups": []} if how.user else {}
    pipe = subprocess.PIPE if how.capture else None
    with _stdin_of(call.input, quiet_stdin) as stdin:
        proc = subprocess.Popen(call.argv, stdin=stdin, stdout=pipe, stderr=pipe, text=how.text, env=how.env,
                                cwd=how.cwd, errors="replace" if how.text else None,
                                start_new_session=how.new_session, **as_user)
    out, err = _waited(proc, call)
    empty = "" if how.text else b""
    return Result(call.argv, proc.returncode, out or empty, err or empty)


@contextlib.contextmanager
def _stdin_of(data: str | bytes | None, quiet: bool):
    """What a command reads: its input from an unnamed file (communicate() cannot go on feeding a pipe
    across the short waits ``_waited`` makes), nothing, or the terminal."""
    if data is None:
        yield subprocess.DEVNULL if quiet else None
        return
    with tempfile.TemporaryFile() as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.seek(0)
        yield handle


def _waited(proc: subprocess.Popen, call: Call) -> tuple:
    """``communicate`` with signals deferred: an interrupt raised inside subprocess's own locks can leave
    one held (a later wait then hangs forever), so a signal is looked at between short waits instead:
    the command is killed and reaped, then the interrupt is raised as the block ends."""
    deadline = None if call.timeout is None else time.monotonic() + call.timeout
    in_a_job = threading.current_thread() is not threading.main_thread()
    with interrupts.shielded(announce=False):
        while True:
            try:
                return proc.communicate(timeout=0.1)
            except subprocess.TimeoutExpired:
                late = deadline is not None and time.monotonic() > deadline
                # a job's command in a session of its own is not among the children side_by_side ends
                stopping = interrupts.pending_for_me() or (in_a_job and interrupts.cancelled.is_set())
                if late or stopping:
                    proc.kill()
                    proc.communicate()
                    if late:
                        raise subprocess.TimeoutExpired(call.argv, call.timeout) from None
                    if in_a_job:
                        interrupts.check()  # Interrupted by the signal, or Stopped
                    return None, None  # leaving the shield raises the deferred interrupt


def start(argv: Sequence[str], *, what: str = "", **popen) -> subprocess.Popen:
    """Start ``argv`` (stdin from nothing unless given); NotInstalled when it is not installed.

    ``popen`` are subprocess.Popen's keywords. The process stays in our session (where
    ``parallel.side_by_side`` ends it with the job that started it) unless the caller passes
    ``start_new_session=True``, as the backends do for a server.
    """
    argv = [str(a) for a in argv]
    popen.setdefault("stdin", subprocess.DEVNULL)
    try:
        return subprocess.Popen(argv, **popen)
    except FileNotFoundError as err:
        raise NotInstalled(f"{what or argv[0]}: {argv[0]} is not installed (not on PATH)", err) from None


class Calls(list):
    """The argv of every command ``run`` was given under ``fake``, in order; ``lines``: each as the
    table matched it (the shell-quoted argv, then ``<<< STDIN`` when it was fed some)."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []


@contextlib.contextmanager
def fake(table: dict[str, Result | Callable[[tuple[str, ...]], Result]]) -> Iterator[Calls]:
    """Answer ``run`` from ``table`` (a regex searched in the command's line -> a Result, or a function of the argv).

    The line is the shell-quoted argv, followed by `` <<< `` and its stdin when ``run`` feeds it
    some. Yields the ``Calls``. A command no pattern matches fails the test with AssertionError: a
    table says every command the code under test may run. A function may raise what subprocess
    raises (``times_out``, ``not_installed``): ``run`` turns it into the same error as for the
    real command. ``start`` is not faked.
    """
    calls = Calls()
    compiled = [(re.compile(pattern), answer) for pattern, answer in table.items()]

    def answer(call: Call) -> Result:
        line = shown(call.argv) + ("" if call.input is None else " <<< " + _text(call.input))
        calls.append(call.argv)
        calls.lines.append(line)
        for pattern, value in compiled:
            if pattern.search(line):
                return value(call.argv) if callable(value) else Result(call.argv, value.returncode, value.stdout,
                                                                       value.stderr)
        raise AssertionError(f"no answer in the table for: {line}")

    _fakes.append(answer)
    try:
        yield calls
    finally:
        _fakes.remove(answer)


def times_out(argv: tuple[str, ...]) -> Result:
    """A table answer for ``fake``: the command hangs until ``run``'s timeout stops it."""
    raise subprocess.TimeoutExpired(list(argv), 0)


def not_installed(argv: tuple[str, ...]) -> Result:
    """A table answer for ``fake``: the command's program is not there."""
    raise FileNotFoundError(2, "No such file or directory", argv[0])
