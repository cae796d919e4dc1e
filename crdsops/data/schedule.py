"""The nightly cron line that runs ``inv backup`` for the installed server.

One line per server, recognised by its trailing marker ``# crdsops backup <obs>.<kind>``;
installing again replaces it (idempotent), ``remove`` deletes it. Output goes to
``<root>/logs/backup.log``. The ``crontab`` command is ``crontab`` (or ``CRDSOPS_CRONTAB``,
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


def marker(config: ServerConfig) -> str:
    return f"# crdsops backup {config.name}"


def crontab_cmd() -> list[str]:
    return shlex.split(os.environ.get("CRDSOPS_CRONTAB", "crontab"))


def cron_line(config: ServerConfig, at: str = "03:17") -> str:
    match = _TIME.match(at)
    if not match:
        raise CrdsOpsError(f"--at {at!r} is not a time of day; give HH:MM, e.g. 03:17")
    hour, minute = int(match.group(1)), int(match.group(2))
    inv = Path(sys.executable).parent / "inv"
    env = [f"{k}={shlex.quote(os.environ[k])}" for k in ("CRDSOPS_CONFIGS", "CRDSOPS_STATE") if os.environ.get(k)]
    log = config.layout.backup_log
    # umask 077: the log the shell's `>>` creates holds the backup's output, so it is 0600 like the rest
    command = " ".join([f"cd {shlex.quote(str(CHECKOUT))} && umask 077 &&", *env, shlex.quote(str(inv)), "backup",
                        ">>", shlex.quote(str(log)), "2>&1"])
    line = f"{minute} {hour} * * * {command} {marker(config)}"
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


def install(config: ServerConfig, at: str = "03:17") -> tuple[str, bool]:
    """Install (or replace) this server's line; return (line, whether the crontab changed)."""
    line = cron_line(config, at)
    current = read_crontab()
    mine = marker(config)
    others = [each for each in current if not each.rstrip().endswith(mine)]
    wanted = others + [line]
    if wanted == current:
        return line, False
    write_crontab(wanted)
    return line, True


def remove(config: ServerConfig) -> list[str]:
    """Remove this server's line(s); return what was removed."""
    current = read_crontab()
    mine = marker(config)
    gone = [each for each in current if each.rstrip().endswith(mine)]
    if gone:
        write_crontab([each for each in current if each not in gone])
    return gone


def installed_line(config: ServerConfig) -> str | None:
    mine = marker(config)
    return next((each for each in read_crontab() if each.rstrip().endswith(mine)), None)
