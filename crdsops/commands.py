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

Standard library only: the stack builder (run by a bare python3) uses it too.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from crdsops.errors import CrdsOpsError


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


_fakes: list[Callable[[tuple[str, ...]], Result | None]] = []


def run(argv: Sequence[str], *, what: str = "", timeout: float | None = None, input: str | bytes | None = None,
        env: dict | None = None, cwd=None, check: bool = True, text: bool = True, capture: bool = True,
        ok_codes: tuple[int, ...] = (0,), codes: dict[int, str] | None = None) -> Result:
    """Run ``argv`` to its end and return what it said; ``check``: raise CommandFailed unless its exit is in ``ok_codes``.

    ``capture=False``: the command talks to this process's terminal (``inv manage -- shell``);
    its Result then holds no output.
    """
    argv = tuple(str(a) for a in argv)
    what = what or argv[0]
    for fake in reversed(_fakes):
        result = fake(argv)
        if result is not None:
            break
    else:
        result = _real(argv, what, timeout, input, env, cwd, text, capture)
    if check and result.returncode not in ok_codes:
        raise CommandFailed(failure_line(what, result, codes), result)
    return result


def _real(argv, what, timeout, input, env, cwd, text, capture) -> Result:
    quiet_stdin = input is None and capture  # a captured command never waits on the terminal
    try:
        done = subprocess.run(argv, input=input, capture_output=capture, text=text, timeout=timeout, env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL if quiet_stdin else None, errors="replace" if text else None)
    except FileNotFoundError:
        raise CommandFailed(f"{what}: {argv[0]} is not installed (not on PATH)") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{what} did not finish within {timeout:g}s; it was stopped") from None
    return Result(argv, done.returncode, done.stdout or "", done.stderr or "")


def start(argv: Sequence[str], *, what: str = "", **popen) -> subprocess.Popen:
    """Start ``argv`` (stdin from nothing unless given); CommandFailed when it is not installed."""
    argv = [str(a) for a in argv]
    popen.setdefault("stdin", subprocess.DEVNULL)
    try:
        return subprocess.Popen(argv, **popen)
    except FileNotFoundError:
        raise CommandFailed(f"{what or argv[0]}: {argv[0]} is not installed (not on PATH)") from None


@contextlib.contextmanager
def fake(table: dict[str, Result | Callable[[tuple[str, ...]], Result]]) -> Iterator[list[tuple[str, ...]]]:
    """Answer ``run`` from ``table`` (a regex on the shell-quoted argv -> a Result, or a function of the argv).

    Yields the list of every argv ``run`` was given, in order. A command no pattern matches fails
    the test with AssertionError: a table says every command the code under test may run.
    """
    calls: list[tuple[str, ...]] = []
    compiled = [(re.compile(pattern), answer) for pattern, answer in table.items()]

    def answer(argv: tuple[str, ...]) -> Result:
        calls.append(argv)
        line = shown(argv)
        for pattern, value in compiled:
            if pattern.search(line):
                return value(argv) if callable(value) else Result(argv, value.returncode, value.stdout, value.stderr)
        raise AssertionError(f"no answer in the table for: {line}")

    _fakes.append(answer)
    try:
        yield calls
    finally:
        _fakes.remove(answer)
