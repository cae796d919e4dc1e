"""Fetch missing or damaged cache files again from a source server, over the mirror's SSH and rsync.

The source is named by its kind (``--src test``) and configured as a mirror's is
(``crdsops.remote.mirror.source_config``: same observatory, not this server; its host, user,
key, known_hosts and checkout from its config). Its identity and where its cache lives are
read over SSH (its ``inv config --json``), as the mirror does. Then one
``rsync -a --ignore-times --files-from=LIST`` brings exactly the listed files: rsync writes each
one under a temporary name in its directory and renames it into place, so the server never
serves half a file; ``--ignore-times`` because a damaged file may have the right size and
mtime. The caller checks every fetched file against the catalog afterwards.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.remote import mirror, ssh
from crdsops.remote.rsync import RSYNC_CODES


@dataclass
class Source:
    config: ServerConfig
    target: ssh.Target
    cache: str  # the source's cache directory, on its host


def source(dest: ServerConfig, src_kind: str, src_host: str | None = None, say=print) -> Source:
    """The source server, its identity checked over SSH (read-only; also under --dry-run)."""
    src = mirror.source_config(dest, dest.observatory, src_kind)
    target = ssh.target_for(src, host=src_host)
    say(f"checking {src.name} over SSH at {target.where} ...")
    conn = ssh.connection(target)
    try:
        facts = mirror.source_facts(conn, target, src)
    finally:
        conn.close()
    return Source(src, target, facts.cache)


def fetch(dest: ServerConfig, src: Source, files: list[tuple[str, str]], say=print) -> float:
    """rsync ``(tree, name)`` files from the source's cache into this one; return the seconds it took.

    A file the source lacks is not an error here (rsync exit 23/24): the re-check names it.
    """
    obs = dest.observatory
    lines = sorted({f"{tree}/{obs}/{name}" for tree, name in files})
    ssh_cmd = " ".join(shlex.quote(a) for a in ssh.ssh_argv(src.target))
    fd, listing = tempfile.mkstemp(prefix=".crdsops-repair-", suffix=".list", dir=dest.layout.run)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        argv = ["rsync", "-a", "--ignore-times", "--protect-args", f"--files-from={listing}", "-e", ssh_cmd,
                f"{src.target.host}:{src.cache.rstrip('/')}/", str(dest.cache) + "/"]
        say(f"fetching {len(lines)} file(s) from {src.config.name} ({src.target.where}:{src.cache}) ...")
        start = time.monotonic()
        res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    finally:
        Path(listing).unlink(missing_ok=True)
    if res.returncode not in (0, 23, 24):
        last_err = (res.stderr.strip().splitlines() or [""])[-1]
        raise CrdsOpsError(
            f"fetching from {src.target.where} failed (rsync exit {res.returncode}: "
            f"{RSYNC_CODES.get(res.returncode, 'error')}; {last_err}); files already in place were not touched")
    if res.returncode:
        say(f"warning: the source could not send every file (rsync exit {res.returncode}: "
            f"{RSYNC_CODES[res.returncode]})")
    return time.monotonic() - start
