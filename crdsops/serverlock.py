"""One changing task at a time per server: a lock directory under the server root.

The lock is ``<root>/run/crdsops.lock/``, created with an atomic ``mkdir``; inside it,
``holder.json`` says who holds it (user, host, pid, the pid's start time, task, since).
A second taker refuses and names the holder. A lock whose holder process is gone (same
host, pid dead or reused) is taken over with a warning. Only the holder releases it.

The lock is re-entrant inside one process: ``inv restore`` holds it and takes a safety
backup, which asks for it again; ``inv mirror`` holds it around a restore.

    with server_lock(config, "backup"):
        ...
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import json
import os
import secrets
import socket
import time
from pathlib import Path

from crdsops.config import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, write_atomic

HOLDER = "holder.json"
_held: dict[str, dict] = {}  # lock path -> our holder record, for re-entry and release
_UNWRITTEN_GRACE = 30.0  # seconds a lock dir may exist without its holder file (being taken)


class LockHeld(CrdsOpsError):
    """Another process holds the server's lock."""


def lock_path(config: ServerConfig) -> Path:
    return config.root / "run" / "crdsops.lock"


def _proc_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (tells a reused pid apart)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _record(task: str) -> dict:
    pid = os.getpid()
    return {
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": _proc_start(pid),
        "task": task,
        "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "token": secrets.token_hex(8),
    }


def read_holder(path: Path) -> dict | None:
    try:
        return json.loads((path / HOLDER).read_text())
    except (OSError, ValueError):
        return None


def describe(holder: dict | None) -> str:
    if not holder:
        return "an unknown process (no holder file)"
    return (f"`{holder.get('task', '?')}` run by {holder.get('user', '?')} on {holder.get('host', '?')} "
            f"(pid {holder.get('pid', '?')}) since {holder.get('since', '?')}")


def _is_stale(path: Path, holder: dict | None) -> bool:
    if holder is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > _UNWRITTEN_GRACE
    if holder.get("host") != socket.gethostname():
        return False  # cannot see that machine's processes; never guess
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True
    start = _proc_start(pid)
    return start is None or (holder.get("pid_start") is not None and start != holder.get("pid_start"))


def acquire(config: ServerConfig, task: str, say=print) -> dict:
    """Take the lock or raise LockHeld naming the holder; return our holder record."""
    path = lock_path(config)
    ensure_dir(path.parent)
    for _attempt in range(3):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            holder = read_holder(path)
            if not _is_stale(path, holder):
                raise LockHeld(
                    f"{config.name} is busy: {describe(holder)} holds {path}; wait for it to finish "
                    "(or, if that process is gone on another host, remove the directory)"
                ) from None
            # Move the stale lock aside atomically: of several takers, exactly one wins the rename.
            aside = path.with_name(f"{path.name}.stale-{secrets.token_hex(4)}")
            try:
                os.rename(path, aside)
            except (FileNotFoundError, OSError):
                continue
            say(f"warning: took over a stale lock of {config.name}: {describe(holder)} is gone")
            _remove_dir(aside)
            continue
        record = _record(task)
        write_atomic(path / HOLDER, json.dumps(record, indent=2) + "\n")
        _held[str(path)] = record
        return record
    raise LockHeld(f"could not take the lock {path} (others kept racing for it); try again")


def release(config: ServerConfig, record: dict) -> None:
    """Release the lock if, and only if, ``record`` still holds it."""
    path = lock_path(config)
    holder = read_holder(path)
    if holder is None or holder.get("token") != record.get("token"):
        _held.pop(str(path), None)
        return  # someone took it over (we were presumed dead): it is theirs now
    (path / HOLDER).unlink(missing_ok=True)
    _remove_dir(path)
    _held.pop(str(path), None)


def held_here(config: ServerConfig) -> bool:
    return str(lock_path(config)) in _held


@contextlib.contextmanager
def server_lock(config: ServerConfig, task: str, say=print):
    """Hold the server's lock for the block (re-entrant within this process)."""
    if held_here(config):
        yield _held[str(lock_path(config))]
        return
    record = acquire(config, task, say=say)
    try:
        yield record
    finally:
        release(config, record)


def _remove_dir(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


hold = server_lock  # the name other modules may look for
