"""File helpers that keep the safety rules: atomic writes, private modes; and file digests.

Standard library only: the stack builder (run by a bare python3) uses it too.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def write_atomic(path: Path, content: str | bytes, mode: int = PRIVATE_FILE) -> bool:
    """Write ``content`` to ``path`` through a temporary name; return whether it changed.

    An unchanged file is left alone (its mtime too), so running a task twice changes nothing.
    """
    path = Path(path)
    data = content.encode() if isinstance(content, str) else content
    try:
        if path.read_bytes() == data:
            if (path.stat().st_mode & 0o777) != mode:
                os.chmod(path, mode)
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's content (read in large blocks, the GIL released while hashing)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, algorithm).hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file inside ``path`` durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path: Path, mode: int = PRIVATE_DIR) -> bool:
    """Create ``path`` (and parents) if missing and set its mode; return whether it was created."""
    path = Path(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    if (path.stat().st_mode & 0o777) != mode:
        os.chmod(path, mode)
    return created


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages; empty when there is none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
