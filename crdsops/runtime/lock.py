"""One changing task at a time per server: a lock directory under the server root.

The lock is ``<root>/run/crdsops.lock/`` (``Layout.lock``); inside it, ``holder.json`` says
who holds it (user, host, pid, the pid's start time, task, since). A taker writes its holder
record into a private directory first and then renames that directory into place, so a lock
is never visible without its holder: a second taker always finds a name to give. The rename
fails while a lock exists (its directory is not empty), which is what makes it exclusive.

A lock whose holder process is gone (same host, pid dead or reused) is taken over with a
warning; so is a lock directory with no holder record at all (left by a release cut short).
Only the holder releases it, by renaming it aside first so no one else's lock is removed.

The lock is re-entrant inside one process: ``inv restore`` holds it and takes a safety
backup, which asks for it again; ``inv mirror`` holds it around a restore.

    with server_lock(config, "backup"):
        ...
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import getpass
import json
import logging
import os
import secrets
import shutil
import socket
from pathlib import Path

from crdsops import interrupts
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, write_atomic
from crdsops.runtime.backends.base import start_time

log = logging.getLogger(__name__)

HOLDER = "holder.json"
_held: dict[str, dict] = {}  # lock path -> our holder record, for re-entry and release


class LockHeld(CrdsOpsError):
    """Another process holds the server's lock."""


def lock_path(config: ServerConfig) -> Path:
    return config.layout.lock


def _record(task: str) -> dict:
    pid = os.getpid()
    return {
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": start_time(pid),
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


def _gone(holder: dict | None) -> bool:
    """Whether the process a holder record names is certainly gone."""
    if holder is None:
        return True  # holders are written before a lock is visible: nobody is writing this one
    if holder.get("host") != socket.gethostname():
        return False  # cannot see that machine's processes; never guess
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return True
    started = start_time(pid)
    return started is None or (holder.get("pid_start") is not None and started != holder.get("pid_start"))


def acquire(config: ServerConfig, task: str) -> dict:
    """Take the lock or raise LockHeld naming the holder; return our holder record."""
    path = lock_path(config)
    ensure_dir(path.parent)
    _sweep_unfinished(path)
    record = _record(task)
    for _attempt in range(5):
        staging = path.with_name(f".{path.name}.new-{record['pid']}-{record['token']}")
        ensure_dir(staging)
        try:
            write_atomic(staging / HOLDER, json.dumps(record, indent=2) + "\n")
            os.rename(staging, path)  # fails while a lock (a non-empty directory) is there
        except OSError as err:
            shutil.rmtree(staging, ignore_errors=True)
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise CrdsOpsError(f"cannot take the lock {path} ({err.strerror}); check {path.parent}") from None
        else:
            _held[str(path)] = record
            return record
        holder = read_holder(path)
        if holder is None and not path.exists():
            continue  # released meanwhile: try again
        if not _gone(holder):
            raise LockHeld(
                f"{config.name} is busy: {describe(holder)} holds {path}; wait for it to finish "
                "(or, if that process is gone on another host, remove the directory)"
            )
        # Move the stale lock aside atomically: of several takers, exactly one wins the rename.
        aside = path.with_name(f".{path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(path, aside)
        except OSError:
            continue
        log.warning(f"took over a stale lock of {config.name}: {describe(holder)} is gone")
        shutil.rmtree(aside, ignore_errors=True)
    raise LockHeld(f"could not take the lock {path} (others kept racing for it); try again")


def _sweep_unfinished(path: Path) -> None:
    """Remove staging directories of takers that died before their rename (``.<lock>.new-PID-TOKEN``)."""
    for leftover in path.parent.glob(f".{path.name}.new-*"):
        pid = leftover.name.rsplit("-", 2)[-2]
        if not pid.isdigit() or start_time(int(pid)) is None:
            shutil.rmtree(leftover, ignore_errors=True)


def release(config: ServerConfig, record: dict) -> None:
    """Release the lock if, and only if, ``record`` still holds it."""
    path = lock_path(config)
    _held.pop(str(path), None)
    holder = read_holder(path)
    if holder is None or holder.get("token") != record.get("token"):
        return  # someone took it over (we were presumed dead): it is theirs now
    aside = path.with_name(f".{path.name}.released-{record['token']}")
    try:
        os.rename(path, aside)  # atomic: from here on, a new taker can take it
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def held_here(config: ServerConfig) -> bool:
    return str(lock_path(config)) in _held


@contextlib.contextmanager
def server_lock(config: ServerConfig, task: str):
    """Hold the server's lock for the block (re-entrant within this process)."""
    if held_here(config):
        yield _held[str(lock_path(config))]
        return
    with interrupts.shielded():  # taken and recorded, or not taken: never half
        record = acquire(config, task)
    try:
        yield record
    finally:
        with interrupts.shielded():
            release(config, record)
