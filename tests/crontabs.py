"""The machine's real crontab in tests: read it, and put it back as it was afterwards."""

from __future__ import annotations

import contextlib
import subprocess


def crontab_lines() -> list[str]:
    out = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return out.stdout.splitlines() if out.returncode == 0 else []


@contextlib.contextmanager
def kept_crontab():
    """The user's crontab as it was, put back afterwards whatever the block did."""
    before = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    try:
        yield
    finally:
        if before.returncode == 0:
            subprocess.run(["crontab", "-"], input=before.stdout, text=True, check=True)
        else:
            subprocess.run(["crontab", "-r"], capture_output=True)
