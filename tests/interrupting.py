"""Interrupt a real `inv` run, at a named failpoint or at a random moment, and look at what it left.

A run interrupted at a failpoint signals itself there (``CRDSOPS_FAILPOINT=NAME=sigint``).
A run interrupted at a random moment is started in a session of its own; once it holds the
server's lock (the task has begun), the test waits a random delay and sends the signal
either to `inv` alone (``kill``) or to its whole process group, as Ctrl-C in a terminal
does (its mysqldump, tar and zstd children get it too; the web server runs in a session of
its own and does not).

A random moment past the run's end interrupts nothing, and ``check`` lets such a run pass;
``assert_mostly_interrupted`` makes a loop of random moments say how many really cut a run
short, so a delay range that outgrew the task (or a task that got faster) shows up as a
failure instead of runs that test nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from clientload import ClientLoad
from support import CHECKOUT, INV

SIGNALS = {"sigint": signal.SIGINT, "sigterm": signal.SIGTERM}
INTERRUPTED_LINE = re.compile(r"^error: interrupted during .+; .+$")


@dataclass
class Interrupted:
    returncode: int
    stdout: str
    stderr: str
    signal: int
    delay: float | None = None  # at_moment: seconds after the lock appeared that the signal was due
    lasted: float | None = None  # at_moment: seconds from the lock appearing to the run's end

    @property
    def finished_first(self) -> bool:
        """The run ended before the signal reached it (a random moment past its end)."""
        return self.returncode == 0

    def check(self) -> None:
        """Interrupted runs end with exit 128 + signal and one `error: interrupted during ...` line."""
        if self.finished_first:
            return
        last = self.stderr.strip().splitlines()[-1] if self.stderr.strip() else ""
        assert self.returncode == 128 + self.signal, self.describe()
        assert INTERRUPTED_LINE.match(last), self.describe()

    def describe(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def at_failpoint(args: list[str], env: dict, point: str, sig: str, timeout: float = 300) -> Interrupted:
    env = dict(env, CRDSOPS_FAILPOINT=f"{point}={sig}")
    proc = subprocess.run([INV, *args], cwd=CHECKOUT, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)
    return Interrupted(proc.returncode, proc.stdout, proc.stderr, SIGNALS[sig])


def at_moment(args: list[str], env: dict, lock: Path, delay: float, sig: str, group: bool,
              timeout: float = 300) -> Interrupted:
    proc = subprocess.Popen([INV, *args], cwd=CHECKOUT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    locked = time.monotonic()
    due = locked + delay
    while proc.poll() is None and time.monotonic() < due:  # a run that ends first is seen ending
        time.sleep(max(0.0, min(0.005, due - time.monotonic())))
    ended = time.monotonic() if proc.returncode is not None else None
    if proc.poll() is None:
        try:
            (os.killpg if group else os.kill)(proc.pid, SIGNALS[sig])
        except ProcessLookupError:
            pass
    out, err = proc.communicate(timeout=timeout)
    return Interrupted(proc.returncode, out, err, SIGNALS[sig], delay, (ended or time.monotonic()) - locked)


def moments_within(args: list[str], env: dict, lock: Path, share: float = 0.6) -> tuple[float, float]:
    """The range of random moments for ``args``: the first ``share`` of a whole run timed here, now,
    from the lock appearing to the run's end (a fixed range outgrows a task that got faster); the
    shorter of two runs, so that one slow run (a first import, a busy moment) does not stretch it."""
    lasted = []
    for _ in range(2):
        run = at_moment(args, env, lock, 600.0, "sigterm", group=False)  # never due: it finishes first
        assert run.finished_first, run.describe()
        lasted.append(run.lasted)
    return 0.0, share * min(lasted)


def assert_mostly_interrupted(runs: list[Interrupted], what: str, at_least: float = 0.5) -> None:
    """At least ``at_least`` of the random-moment ``runs`` were cut short (not finished before the signal)."""
    first = [run for run in runs if run.finished_first]
    cut = len(runs) - len(first)
    shown = "; ".join(f"ended at {run.lasted:.2f} s, signal due at {run.delay:.2f} s" for run in first)
    print(f"{what}: {cut} of {len(runs)} random-moment runs interrupted" + (f"; finished first: {shown}" if first else ""))
    assert cut >= at_least * len(runs), (
        f"{what}: only {cut} of {len(runs)} random-moment runs were interrupted, fewer than {at_least:.0%}; "
        f"the others finished first (times from the lock: {shown}); the delays must fall within the task's run")


def leftovers(cfg, mysql_schema: str | None = None) -> list[str]:
    """Staging and temporary files a task may create, and the lock: none may be left."""
    from mariadb import root_sql

    found = []
    bases = {cfg.root, cfg.cache, cfg.server_files, cfg.backups.private_dir, cfg.backups.shared_dir}
    if cfg.database.engine == "sqlite":
        bases.add(Path(cfg.database.name).parent)
    for base in bases:
        if not base.exists():
            continue
        for path in base.rglob("*"):
            name = path.name
            if name.endswith(".crdsops-new") or name.startswith(".tmp-") or ".tmp-" in name \
                    or name.startswith(".crdsops.lock.") or name == "crdsops.lock":
                found.append(str(path))
    if mysql_schema:
        pattern = mysql_schema.replace("_", "\\_") + "\\_crdsops\\_new"
        found += [f"mysql:{n}" for n in root_sql(f"SHOW DATABASES LIKE '{pattern}';").split()]
    return sorted(found)


@contextlib.contextmanager
def kept_answering(url: str, obs: str):
    """A light client load (the real client's calls and downloads) for the whole block: not one
    request may fail, whatever the interrupts did (the server is never stopped for a swap)."""
    with ClientLoad(url, obs, threads=2, rate=20.0) as load:
        yield load
    assert load.failed == 0, f"clients saw failures while the runs were interrupted: {load.describe()}"
