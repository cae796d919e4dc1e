"""Commands whose output streams into a log file while they run: the build's venv, conda and pip
steps and bin/bootstrap's apt-get. They start through ``crdsops.commands.start``; the operator
reads one line about them, the log file holds all they said.

Standard library and the core's ``commands`` only (a bare python3 runs the stack builder).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import TextIO

from crdsops import commands


def run(argv: Sequence[str], log: TextIO, *, what: str, env: dict | None = None) -> tuple[int, str]:
    """Run ARGV to its end, its stdout and stderr streamed into LOG (an open file) after a ``$ ARGV`` line.

    Returns its exit code and what it wrote. When this process is interrupted (or anything
    else is raised while it waits) the command is killed first, as ``subprocess.run`` does:
    nothing is left running.
    """
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    start = os.lseek(log.fileno(), 0, os.SEEK_CUR)
    proc = commands.start(argv, what=what, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    with open(log.name, "rb") as written:
        written.seek(start)
        return code, written.read().decode(errors="replace")
