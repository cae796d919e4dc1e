"""What the benchmarks share: where the stack is, timing a command, MariaDB accounts, a free port.

A benchmark runs as `python bench/NAME.py` (or `bench/NAME.py`) from the repo root, with the
stack built (`make build`); this module is found because a script's own directory is first
on sys.path. The MariaDB account and the free port come from the tests' own helpers
(tests/mariadb.py, tests/support.py), which import no pytest when it is not installed.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
STACK_BIN = CHECKOUT / ".venv" / "bin"
INV = STACK_BIN / "inv"

for path in (CHECKOUT, CHECKOUT / "tests"):  # crdsops, and the helpers the tests use too
    if str(path) not in sys.path:
        sys.path.insert(1, str(path))

from mariadb import MYSQL_MISSING, Account, root_sql  # noqa: E402,F401 - shared with the tests
from support import free_port  # noqa: E402,F401


def web_option_file(path: Path, account: Account) -> Path:
    """The account's option file, owned by www-data when we are root (Apache reads it as that user)."""
    import os

    from crdsops.db import mysql

    option_file = mysql.write_option_file(path, account.user, account.password)
    if os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam("www-data")
        os.chown(option_file, entry.pw_uid, entry.pw_gid)
    return option_file


def mariadb_missing() -> str | None:
    """Why the MariaDB benchmarks cannot run here, or None."""
    return MYSQL_MISSING


def timed(argv, env=None, check: bool = True, **kwargs) -> float:
    """Seconds one command takes, as a whole process; RuntimeError with its output if it fails."""
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=CHECKOUT, env=env, capture_output=True, text=True, **kwargs)
    elapsed = time.perf_counter() - start
    if check and result.returncode != 0:
        shown = argv if isinstance(argv, str) else " ".join(map(str, argv))
        raise RuntimeError(f"{shown} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def figure(name: str, value: float, target: str, digits: int = 2) -> None:
    """The one line per figure that DESIGN.md's benchmarks print: ``NAME = VALUE (target OP N)``."""
    print(f"{name} = {value:.{digits}f} (target {target})", flush=True)


def ratio_of_medians(ours: list[float], plain: list[float]) -> float:
    return statistics.median(ours) / statistics.median(plain)


def note(text: str) -> None:
    print(f"# {text}", flush=True)


def missing_prerequisite(*tools: str) -> str | None:
    """Why the bench cannot measure here (a tool not on PATH, no stack), or None."""
    for tool in tools:
        if not shutil.which(tool):
            return f"`{tool}` is not installed"
    if not INV.exists():
        return f"{INV} missing; run `make build`"
    return None
