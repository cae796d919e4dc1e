"""The releases of a server's code: one git revision each, beside each other under the root.

    <root>/releases/<UTC time>-<short sha>/   the checkout at that revision (``git archive``):
                                              server/, the crdsops package, configs, conda-lock.yml,
                                              and release.json (``Release``)
    <root>/current -> releases/<name>         the one that serves; switched by renaming a new link
                                              over it (atomic: a reader sees the old or the new)
    <root>/stacks/<lock sha256[:12]>/         a release's stack when its lock differs from the
                                              stack at ``stack.prefix`` (same lock: shared)

Before the first ``inv upgrade`` there is no ``current``: the checkout's ``server/`` serves
(``Code.of``). The first upgrade adopts that code as the first release, so that rolling back
to it is possible, without stopping the server: the reload that follows runs the same code.

The server's processes run the release's resolved directory, not the ``current`` link: a
worker that imports a module lazily while the link is switched must not mix two releases.
``env.sh`` names the resolved directory too and is rewritten on each switch.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import getpass
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from crdsops import commands
from crdsops.config.model import CHECKOUT, ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, write_atomic
from crdsops.records import Record

log = logging.getLogger(__name__)

RELEASE_FILE = "release.json"
LOCK_FILE = "conda-lock.yml"
STACK_STAMP = "crdsops-stack.json"  # crdsops.stack.build.STAMP
# What a release holds of the checkout: the server, the package it is operated with, the
# configs and the lock its stack comes from (the rest, tests and benchmarks, stays in git).
RELEASE_PATHS = ("server", "crdsops", "configs", "tasks.py", "fabfile.py", LOCK_FILE, "environment.yml",
                 "environment-dev.yml", "environment-vm.yml", "Makefile", "bin", "system-packages.txt")


@dataclass(frozen=True)
class Code:
    """Which server code runs, with which stack: a release's, or the checkout's."""

    server_dir: Path
    stack: Path  # the stack's prefix
    release: str = ""  # the release's name ("" for the checkout)

    @property
    def python(self) -> Path:
        return self.stack / "bin" / "python"

    @property
    def manage_py(self) -> Path:
        return self.server_dir / "manage.py"

    @staticmethod
    def checkout(config: ServerConfig) -> Code:
        return Code(CHECKOUT / "server", config.stack.prefix)


@dataclass(frozen=True)
class Release(Record):
    """One release, as its release.json records it."""

    name: str
    revision: str  # the full git sha
    ref: str = ""  # what was asked for (a tag, a branch, HEAD)
    subject: str = ""  # the commit's first line
    lock_sha256: str = ""
    stack: str = ""  # the stack's prefix it runs with
    created: str = ""  # ISO time, UTC
    created_by: str = ""
    adopted: bool = False  # made from the code that served before the first upgrade
    dirty: bool = False  # adopted from a checkout with uncommitted changes

    @property
    def short(self) -> str:
        return self.revision[:7]

    def code(self, config: ServerConfig) -> Code:
        return Code(config.layout.releases / self.name / "server", Path(self.stack) if self.stack
                    else config.stack.prefix, self.name)

    def describe(self) -> str:
        what = f"{self.name} ({self.short}{', modified' if self.dirty else ''}"
        return what + (f": {self.subject})" if self.subject else ")")


_override: contextvars.ContextVar[Code | None] = contextvars.ContextVar("crdsops_code", default=None)


def serving_code(config: ServerConfig) -> Code:
    """The code the server runs: a release being tried (``trying``), else ``current``, else the checkout."""
    code = _override.get()
    if code is not None:
        return code
    release = current(config)
    return release.code(config) if release else Code.checkout(config)


@contextlib.contextmanager
def trying(code: Code):
    """Every manage.py and server process started in the block runs ``code`` (a preflight)."""
    token = _override.set(code)
    try:
        yield
    finally:
        _override.reset(token)


# --- reading ---------------------------------------------------------------------------

def read(path: Path) -> Release | None:
    try:
        return Release.from_dict(json.loads((path / RELEASE_FILE).read_text()), where=str(path))
    except (OSError, ValueError, CrdsOpsError):
        return None


def all_releases(config: ServerConfig) -> list[Release]:
    """Every complete release, oldest first (their names start with the time they were made)."""
    root = config.layout.releases
    if not root.is_dir():
        return []
    found = (read(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith("."))
    return [r for r in found if r is not None]


def current(config: ServerConfig) -> Release | None:
    link = config.layout.current
    if not link.is_symlink():
        return None
    return read(config.layout.releases / os.readlink(link).rstrip("/").split("/")[-1])


def find(config: ServerConfig, name: str) -> Release:
    releases = all_releases(config)
    match = [r for r in releases if r.name == name or r.name.endswith(name) or r.revision.startswith(name)]
    if len(match) != 1:
        names = ", ".join(r.name for r in releases) or "none"
        why = "matches no release" if not match else "matches more than one release"
        raise CrdsOpsError(f"{name!r} {why} of {config.name} (releases: {names})")
    return match[0]


# --- git --------------------------------------------------------------------------------

def repository(config: ServerConfig) -> Path:
    return config.upgrade.repository or CHECKOUT


def _git(repo: Path, *args: str, what: str = "git") -> commands.Result:
    result = commands.run(["git", "-C", str(repo), *args], what=what, check=False, timeout=120)
    if not result.ok:
        raise CrdsOpsError(f"{what} in {repo} failed: {result.last_error_line()}")
    return result


def resolve(config: ServerConfig, ref: str) -> tuple[str, str]:
    """(full sha, subject) of ``ref`` in the repository; one line naming it when git does not know it."""
    repo = repository(config)
    result = commands.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          what="git rev-parse", check=False, timeout=30)
    if not result.ok or not result.stdout.strip():
        raise CrdsOpsError(f"{ref!r} is not a commit, tag or branch that the git repository {repo} knows "
                           "(`git fetch` there first?)")
    sha = result.stdout.strip()
    subject = _git(repo, "log", "-1", "--format=%s", sha, what="git log").stdout.strip()
    return sha, subject


def lock_sha256_at(config: ServerConfig, sha: str) -> str:
    blob = commands.run(["git", "-C", str(repository(config)), "show", f"{sha}:{LOCK_FILE}"], what="git show",
                        check=False, timeout=60, text=False)
    if not blob.ok:
        raise CrdsOpsError(f"revision {sha[:7]} has no {LOCK_FILE}; it cannot be a release")
    return hashlib.sha256(blob.stdout).hexdigest()


def stack_for(config: ServerConfig, lock_sha256: str) -> tuple[Path, bool]:
    """(the stack a release of this lock runs with, whether it must be built first)."""
    if _stamped_lock(config.stack.prefix) == lock_sha256:
        return config.stack.prefix, False
    prefix = config.layout.stacks / lock_sha256[:12]
    return prefix, _stamped_lock(prefix) != lock_sha256


def _stamped_lock(prefix: Path) -> str:
    """The lock sha256 the stack at ``prefix`` was built from (its build stamp; the stack builder
    stands apart from the layers, so its file is read here rather than imported)."""
    try:
        return str(json.loads((prefix / STACK_STAMP).read_text()).get("lock_sha256", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def build_stack(config: ServerConfig, release: Release) -> None:
    """Build ``release``'s stack with the release's own stack builder and lock (``python -m crdsops.stack``)."""
    argv = [str(config.stack.python), "-m", "crdsops.stack", "build", "--prefix", release.stack]
    if config.web.server == "mod_wsgi" or config.database.is_mysql:
        argv.append("--vm")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "STACK")}
    result = commands.run(argv, what=f"building the stack of {release.name}", cwd=config.layout.releases /
                          release.name, env=env, check=False, timeout=3600, capture=False)
    if not result.ok:
        raise CrdsOpsError(f"building the stack of {release.name} in {release.stack} failed (exit "
                           f"{result.returncode}); see the output above")


TIME_FORMAT = "%Y%m%dT%H%M%SZ"


def new_name(config: ServerConfig, sha: str) -> str:
    """``<UTC time>-<short sha>``, later than every release's name: names sort as releases were made."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)
    for release in all_releases(config):
        try:
            made = datetime.datetime.strptime(release.name.split("-")[0], TIME_FORMAT)
        except ValueError:
            continue
        now = max(now, made + datetime.timedelta(seconds=1))
    return f"{now:{TIME_FORMAT}}-{sha[:7]}"


# --- making, switching, pruning -------------------------------------------------------------

def make(config: ServerConfig, sha: str, ref: str, subject: str, lock_sha256: str, stack: Path) -> Release:
    """Export ``sha`` into a new release (complete or absent)."""
    release = Release(new_name(config, sha), sha, ref, subject, lock_sha256, str(stack), _now(), _who())
    with _building(config, release) as tmp:
        archive = commands.run(["git", "-C", str(repository(config)), "archive", "--format=tar", sha, "--",
                                *_present(config, sha)], what="git archive", check=False, timeout=300, text=False)
        if not archive.ok:
            raise CrdsOpsError(f"git archive {sha[:7]} failed: {archive.stderr.decode(errors='replace').strip()}")
        untar = commands.run(["tar", "-x", "--no-same-owner", "-C", str(tmp)], input=archive.stdout,
                             what="tar -x", check=False, timeout=300, text=False)
        if not untar.ok:
            raise CrdsOpsError(f"unpacking {sha[:7]} failed: {untar.stderr.decode(errors='replace').strip()}")
        _readable(tmp)
    return release


@contextlib.contextmanager
def _building(config: ServerConfig, release: Release):
    """A hidden directory to fill (the block), then its release.json, renamed to the release's name:
    the listing never shows half a release; on any failure it is removed."""
    releases = config.layout.releases
    ensure_dir(releases, 0o755)
    tmp = releases / f".{release.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(mode=0o755)
        yield tmp
        _write_record(tmp, release)
        os.rename(tmp, releases / release.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _present(config: ServerConfig, sha: str) -> list[str]:
    listed = _git(repository(config), "ls-tree", "--name-only", sha, what="git ls-tree").stdout.split()
    return [p for p in RELEASE_PATHS if p in listed]


def _readable(into: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(into):  # readable by the web user whatever our umask
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            path = os.path.join(dirpath, f)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.access(path, os.X_OK) else 0o644)


def adopt(config: ServerConfig) -> Release:
    """The code serving now (the checkout's, no release yet) as the first release: copied, not exported,
    so that it is byte for byte what serves (uncommitted changes included, and said)."""
    sha = _git(CHECKOUT, "rev-parse", "HEAD", what="git rev-parse").stdout.strip()
    subject = _git(CHECKOUT, "log", "-1", "--format=%s", what="git log").stdout.strip()
    dirty = bool(_git(CHECKOUT, "status", "--porcelain", "--untracked-files=no", "--", "server",
                      what="git status").stdout.strip())
    lock = hashlib.sha256((CHECKOUT / LOCK_FILE).read_bytes()).hexdigest()
    release = Release(new_name(config, sha), sha, "HEAD", subject, lock, str(config.stack.prefix), _now(), _who(),
                      adopted=True, dirty=dirty)
    with _building(config, release) as tmp:
        for part in RELEASE_PATHS:
            source = CHECKOUT / part
            if source.is_dir():
                shutil.copytree(source, tmp / part, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif source.exists():
                shutil.copy2(source, tmp / part)
    return release


def remove(config: ServerConfig, release: Release) -> None:
    """Drop a release that never served (a refused upgrade) or one pruned."""
    path = config.layout.releases / release.name
    gone = config.layout.releases / f".{release.name}.removing"
    if path.exists():
        os.rename(path, gone)  # atomically out of the listing, then deleted
        shutil.rmtree(gone, ignore_errors=True)


def switch(config: ServerConfig, release: Release) -> None:
    """Point ``current`` at ``release``: a new link renamed over the old one (atomic)."""
    link = config.layout.current
    tmp = link.with_name(f".current.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(f"releases/{release.name}", tmp)
    os.replace(tmp, link)


def unswitch(config: ServerConfig) -> None:
    """Remove ``current`` (the checkout serves again): the undo of adopting the first release."""
    config.layout.current.unlink(missing_ok=True)


def prune(config: ServerConfig, keep: int, protect: tuple[str, ...] = ()) -> list[str]:
    """Remove all but the newest ``keep`` releases; never one named in ``protect``; return the removed."""
    releases = all_releases(config)
    kept = {r.name for r in releases[-max(keep, 1):]} | set(protect)
    removed = []
    for release in releases:
        if release.name not in kept:
            remove(config, release)
            removed.append(release.name)
    return removed


def _write_record(directory: Path, release: Release) -> None:
    write_atomic(directory / RELEASE_FILE, json.dumps(release.as_dict(), indent=2) + "\n", mode=0o644)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _who() -> str:
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
