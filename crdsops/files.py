"""File helpers that keep the safety rules: atomic writes, private modes; and file digests.

Standard library only: the stack builder (run by a bare python3) uses it too.
"""

from __future__ import annotations

import errno
import functools
import getpass
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from crdsops.errors import CrdsOpsError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

# The errors that say a directory is in the way or out of reach (ENOSPC and the like are the
# disk's, not the path's: they pass through as they are, for the callers that name the disk).
_PATH_ERRNOS = {errno.EEXIST, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ELOOP,
                errno.ENAMETOOLONG}


class DirectoryError(CrdsOpsError, OSError):
    """A directory crdsops needs cannot be made or written: something is in the way, or out of reach.

    Its message is one line: the path (named by its config key when ``name_directories`` was
    told it), what is there, and how to fix it. It is still the ``OSError`` it replaces (same
    errno; the message as ``strerror``), so code that copes with an ``OSError`` there still does.
    """

    def __init__(self, path: Path, obstacle: Path, problem: str, remedy: str, error: int | None = None):
        self.path, self.obstacle, self.problem, self.remedy = Path(path), Path(obstacle), problem, remedy
        OSError.__init__(self, error, _directory_message(self.path, self.obstacle, problem, remedy))

    def __str__(self) -> str:
        return self.strerror


# (key, directory, how to point the key elsewhere): the directories of the server this process
# acts on, by the config key they come from (crdsops.config.installed.resolve tells them).
_named: tuple[tuple[str, Path, str], ...] = ()


def name_directories(entries: Iterable[tuple[str, Path, str]]) -> None:
    """Name directories after their config keys in ``DirectoryError`` messages.

    ``entries``: (key, directory, fix), e.g. ``("backups.private_dir", Path("/x/backups"), "point
    backups.private_dir at a directory")``. A path under a named directory is named by the
    nearest one. Only the server this process acts on is named: a mirror's source (whose paths
    are on another host) never is.
    """
    global _named
    _named = tuple((key, Path(os.path.abspath(path)), fix) for key, path, fix in entries)


def _key_of(path: Path) -> tuple[str, Path, str] | None:
    """The named directory that is ``path`` or holds it, the nearest one."""
    best = None
    for key, where, fix in _named:
        if (where == path or where in path.parents) and (best is None or len(where.parts) > len(best[1].parts)):
            best = (key, where, fix)
    return best


def _directory_message(path: Path, obstacle: Path, problem: str, remedy: str) -> str:
    named = _key_of(path)
    if named is None:
        if obstacle == path:
            return f"{path} {problem}; {remedy} (or use another path)"
        return f"directory {path} cannot be made: {obstacle} {problem}; {remedy} (or use another path)"
    key, where, fix = named
    if obstacle == where:
        return f"{key} {where} {problem}; {fix} (or {remedy})"
    if where in obstacle.parents:  # a directory crdsops keeps under the named one
        return f"{obstacle} (under {key} {where}) {problem}; {remedy}"
    return f"{key} {where} cannot be made: {obstacle} {problem}; {fix} (or {remedy})"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - a name for a message; the uid will do
        return f"uid {os.geteuid()}"


def _directory_error(path: Path, err: OSError) -> DirectoryError:
    """What is in the way of directory ``path`` (``err`` came from making or using it)."""
    error = functools.partial(DirectoryError, error=err.errno)
    path = Path(os.path.abspath(path))
    obstacle = path
    while not os.path.lexists(obstacle) and obstacle.parent != obstacle:
        obstacle = obstacle.parent
    if os.path.islink(obstacle) and not os.path.exists(obstacle):
        return error(path, obstacle, f"is a symbolic link to {os.readlink(obstacle)}, which does not exist",
                              "create its target or remove that link")
    try:
        mode = os.stat(obstacle).st_mode
    except OSError as inner:
        return error(path, obstacle, f"cannot be read ({inner.strerror})",
                              f"give user {_user()} access to it")
    if not stat.S_ISDIR(mode):
        what = "a file" if stat.S_ISREG(mode) else "not a directory (a special file)"
        return error(path, obstacle, f"is {what}, not a directory",
                              "move that file" if stat.S_ISREG(mode) else "move it")
    if err.errno == errno.EROFS:
        return error(path, obstacle, "is on a read-only file system", "mount it read-write")
    if err.errno == errno.EPERM and obstacle == path:  # our chmod of a directory someone else owns
        return error(path, obstacle, f"belongs to uid {os.stat(obstacle).st_uid}, not to user {_user()}, "
                              "who must set its mode", f"give it to user {_user()} (chown)")
    if err.errno in (errno.EACCES, errno.EPERM):
        return error(path, obstacle, f"is not writable by user {_user()}",
                              f"give user {_user()} write access to it")
    return error(path, obstacle, f"cannot hold directory {path} ({err.strerror})", "fix that path")


def staged_beside(target: Path) -> Path:
    """Where a swap stages the new state of the file or directory ``target`` (restore, mirror)."""
    return target.with_name(target.name + ".crdsops-new")


def kept_beside(target: Path) -> Path:
    """Where a swap keeps the old state of ``target`` until the safety backup of it verifies."""
    return target.with_name(target.name + ".crdsops-old")


def make_dirs(path: Path) -> None:
    """``mkdir -p path``; what is in the way is a ``DirectoryError`` (one line, the config key named)."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno not in _PATH_ERRNOS:
            raise
        raise _directory_error(path, err) from None


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
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        if err.errno not in _PATH_ERRNOS:
            raise
        raise _directory_error(path.parent, err) from None
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


_RENAME_EXCHANGE = 2  # linux/fs.h


@functools.cache
def _renameat2():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    call = libc.renameat2  # glibc 2.28+
    call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return call


def exchange(a: Path, b: Path) -> None:
    """Swap two existing paths in one step (``renameat2(RENAME_EXCHANGE)``): at no moment is either name missing.

    Where the kernel or file system cannot (ENOSYS, EINVAL), two renames through a temporary
    name, with the moment between them.
    """
    try:
        call = _renameat2()
    except AttributeError:
        call = None
    if call is not None:
        at_cwd = -100  # AT_FDCWD
        if call(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")
    between = Path(f"{b}.crdsops-exchange")
    os.rename(b, between)
    os.rename(a, b)
    os.rename(between, a)


def ctypes_errno() -> int:
    import ctypes

    return ctypes.get_errno()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file inside ``path`` durable (the directory entry itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_dir(path: Path) -> list[Path]:
    """The entries of directory ``path``; what is there instead is a ``DirectoryError``."""
    try:
        return list(Path(path).iterdir())
    except OSError as err:
        if err.errno not in _PATH_ERRNOS:
            raise
        raise _directory_error(path, err) from None


def ensure_dir(path: Path, mode: int = PRIVATE_DIR) -> bool:
    """Create ``path`` (and parents) if missing and set its mode; return whether it was created.

    A file (or anything else) in the way, or a directory out of reach, is a ``DirectoryError``.
    """
    path = Path(path)
    created = not path.exists()
    make_dirs(path)
    try:
        if (path.stat().st_mode & 0o777) != mode:
            os.chmod(path, mode)
    except OSError as err:
        if err.errno not in _PATH_ERRNOS:
            raise
        raise _directory_error(path, err) from None
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


def human(size: float) -> str:
    """A size in bytes for a person: ``2.9 KB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"
