"""The nightly cron lines that run ``inv backup`` (and the sample cache check) for the installed server.

One line per server and job, recognised by its trailing marker ``# crdsops backup <obs>.<kind>``
(``# crdsops check-cache <obs>.<kind>`` for ``inv check-cache --sha1 --sample auto/N``: each
night hashes the slice of that day, so N nights cover every file once); installing again
replaces it (idempotent), ``remove`` deletes it. Output goes to ``<root>/logs/backup.log``
(``check-cache.log``). The ``crontab`` command is ``crontab`` (or ``CRDSOPS_CRONTAB``,
for tests and for machines where it lives elsewhere).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from crdsops.config.model import CHECKOUT, ServerConfig
from crdsops.errors import CrdsOpsError

_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


JOBS = ("backup", "check-cache")
DEFAULT_AT = {"backup": "03:17", "check-cache": "04:47"}


def marker(config: ServerConfig, job: str = "backup") -> str:
    return f"# crdsops {job} {config.name}"


def crontab_cmd() -> list[str]:
    return shlex.split(os.environ.get("CRDSOPS_CRONTAB", "crontab"))


def cron_line(config: ServerConfig, at: str = "03:17", job: str = "backup", slices: int = 7) -> str:
    match = _TIME.match(at)
    if not match:
        raise CrdsOpsError(f"--at {at!r} is not a time of day; give HH:MM, e.g. 03:17")
    hour, minute = int(match.group(1)), int(match.group(2))
    inv = Path(sys.executable).parent / "inv"
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in ("CRDSOPS_CONFIGS", "CRDSOPS_STATE") if os.environ.get(k)]
    if job == "backup":
        log, words = config.layout.backup_log, ["backup"]
    else:
        if slices < 1:
            raise CrdsOpsError(f"--slices {slices}: give the number of nights a full sha1 pass is spread over (>= 1)")
        log, words = config.layout.check_cache_log, ["check-cache", "--sha1", "--sample", f"auto/{slices}"]
    # umask 077: the log the shell's `>>` creates holds the task's output, so it is 0600 like the rest
    command = " ".join([f"cd {shlex.quote(str(CHECKOUT))} && umask 077 &&", *env, shlex.quote(str(inv)), *words,
                        ">>", shlex.quote(str(log)), "2>&1"])
    line = f"{minute} {hour} * * * {command} {marker(config, job)}"
    if "%" in line:
        raise CrdsOpsError("a path in the cron line contains '%', which cron treats as a newline; move it")
    return line


def read_crontab() -> list[str]:
    try:
        result = subprocess.run([*crontab_cmd(), "-l"], capture_output=True, text=True)
    except FileNotFoundError:
        raise CrdsOpsError("no `crontab` command on this machine; install cron (Debian: apt-get install cron)") from None
    if result.returncode != 0:
        if "no crontab" in (result.stderr + result.stdout).lower():
            return []
        raise CrdsOpsError(f"crontab -l failed: {result.stderr.strip()}")
    return result.stdout.splitlines()


def write_crontab(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n" if lines else ""
    result = subprocess.run([*crontab_cmd(), "-"], input=text, capture_output=True, text=True)
    if result.returncode != 0:
        raise CrdsOpsError(f"installing the crontab failed: {result.stderr.strip()}")


def install(config: ServerConfig, at: str = "03:17", job: str = "backup", slices: int = 7) -> tuple[str, bool]:
    """Install (or replace) this server's line for ``job``; return (line, whether the crontab changed)."""
    line = cron_line(config, at, job, slices)
    current = read_crontab()
    mine = marker(config, job)
    others = [each for each in current if not each.rstrip().endswith(mine)]
    wanted = others + [line]
    if wanted == current:
        return line, False
    write_crontab(wanted)
    return line, True


def remove(config: ServerConfig, job: str = "backup") -> list[str]:
    """Remove this server's line(s) for ``job``; return what was removed."""
    current = read_crontab()
    mine = marker(config, job)
    gone = [each for each in current if each.rstrip().endswith(mine)]
    if gone:
        write_crontab([each for each in current if each not in gone])
    return gone


def installed_line(config: ServerConfig, job: str = "backup") -> str | None:
    mine = marker(config, job)
    return next((each for each in read_crontab() if each.rstrip().endswith(mine)), None)
