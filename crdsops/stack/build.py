"""The server's Python stack: lock it (conda-lock) and build it from the lock.

Two worlds, one lock (`conda-lock.yml`, made from `environment.yml` +
`environment-dev.yml` + `environment-vm.yml` by `lock`). Its categories: main (the
default django server: wheels only, no compiler), dev (test and lock tools) and vm
(mysqlclient and mod_wsgi, built from their sdists, for the VM kinds):

* conda: a machine with a conda executable (conda, mamba, micromamba) whose lock came
  from real conda channels. `build` installs the lock's conda packages (an @EXPLICIT
  list, every URL with its md5) with `conda create --file`, then the lock's pip layer.
* system: a machine with no conda and no conda channel (CI, a laptop, a fresh VM).
  `build` makes a venv from the system Python, which must match the lock's python
  version, and installs the lock's pip layer into it.

In both, the pip layer is `pip install --no-deps --require-hashes` of the lock's exact
URLs and sha256s. The build moves the previous stack aside, builds in its place, puts it
back if anything fails, and records what it installed in `<prefix>/crdsops-packages.txt`
(pip-freeze format; conda packages as comments) and `<prefix>/crdsops-stack.json` (the
stamp that makes an unchanged rebuild a no-op).

A build is probe, steps, carry out: ``probe(prefix, BuildOptions) -> StackFacts`` (read-only,
frozen: the lock, the categories, the mode, whether the stack is up to date), ``steps(facts)``
(the ``crdsops.steps.Plan`` that `inv build` shows and runs through the one lifecycle), and
``carry_out(facts)``. What it says goes through ``logging``; its commands through
``crdsops.commands``, the long ones streamed into the build's log file (``crdsops.stack.logged``).

This module needs only the standard library on the `build` path, so `bin/bootstrap` can
run it with a bare Debian python3: ``python3 -m crdsops.stack build --prefix .venv``.
`lock` needs conda-lock (and py-rattler where no conda exists): the dev category.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import hashlib
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time

from crdsops import commands
from crdsops import steps as steps_mod
from crdsops.errors import CrdsOpsError
from crdsops.stack import logged

CHECKOUT = pathlib.Path(__file__).resolve().parents[2]
ENV_FILES = ("environment.yml", "environment-dev.yml", "environment-vm.yml")
CATEGORIES = ("main", "dev", "vm")  # the order a stamp records them in
LOCK_FILE = "conda-lock.yml"
PACKAGE_LIST = "crdsops-packages.txt"
STAMP = "crdsops-stack.json"
DEFAULT_PYTHON = "/usr/bin/python3"
PYPI_TO_CONDA = pathlib.Path(__file__).with_name("pypi_to_conda.json")
LOCK_TIMEOUT = 1800  # seconds: conda-lock is killed after this, never left hanging

log = logging.getLogger(__name__)


def env_paths(root: pathlib.Path = CHECKOUT) -> list[pathlib.Path]:
    return [root / name for name in ENV_FILES]


def _sha256(path: pathlib.Path, fix: str = "restore it from git") -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise CrdsOpsError(f"{path} not found; {fix}") from None
    except OSError as err:
        raise CrdsOpsError(f"cannot read {path} ({err.strerror}); check its permissions") from None


# --- conda executables ----------------------------------------------------------------

def find_conda(explicit: str | None = None) -> str | None:
    """A conda-compatible executable: EXPLICIT, $CRDSOPS_CONDA, then conda/mamba/micromamba on PATH."""
    for candidate in (explicit, os.environ.get("CRDSOPS_CONDA")):
        if candidate:
            found = shutil.which(candidate) or (candidate if os.access(candidate, os.X_OK) else None)
            if not found:
                raise CrdsOpsError(f"conda executable {candidate} not found or not executable; fix --conda / CRDSOPS_CONDA")
            return found
    for name in ("micromamba", "mamba", "conda"):
        found = shutil.which(name)
        if found:
            return found
    return None


def rattler_conda_exe(directory: pathlib.Path) -> pathlib.Path:
    """Write an executable that runs crdsops.stack.rattler (conda on py-rattler)."""
    try:
        import rattler  # noqa: F401
    except ImportError:
        raise CrdsOpsError(
            "no conda executable here and py-rattler is not installed to stand in for one; "
            "install the dev tools (`bin/bootstrap --dev`) or pass --conda PATH"
        ) from None
    exe = directory / "conda"
    exe.write_text(
        f"#!/bin/sh\nPYTHONPATH={CHECKOUT}${{PYTHONPATH:+:$PYTHONPATH}} "
        f'exec {sys.executable} -m crdsops.stack.rattler "$@"\n'
    )
    exe.chmod(0o755)
    return exe


# --- lock -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LockOptions:
    """What `inv lock` was asked for (None or empty: the default)."""

    env_files: tuple[pathlib.Path, ...] = ()  # default: ENV_FILES in the checkout
    lock_path: pathlib.Path | None = None  # default: conda-lock.yml in the checkout
    channels: tuple[str, ...] = ()  # replace the environment's (default: CRDSOPS_CONDA_CHANNEL, then theirs)
    conda: str | None = None  # conda executable (default: find_conda, else the py-rattler front end)
    python: str | None = None  # the system Python a local channel describes (default DEFAULT_PYTHON)
    mapping: pathlib.Path | None = None  # conda-lock's pypi-to-conda lookup file (default PYPI_TO_CONDA)
    timeout: float = LOCK_TIMEOUT


def lock(options: LockOptions = LockOptions()) -> pathlib.Path:
    """Run conda-lock for linux-64 on the environment files and write the lock; return its path.

    ``options.channels`` replace the environment's channels (conda-lock ``--channel``). With no
    conda executable, conda-lock drives the py-rattler front end; with no channel given either,
    the conda layer is solved against a local channel describing ``options.python``.
    """
    from crdsops.stack import condalock

    env_files = list(options.env_files) or env_paths()
    lock_path = options.lock_path or CHECKOUT / LOCK_FILE
    for env in env_files:
        condalock.check_env_file(env)
    channels = list(options.channels)
    if not channels and os.environ.get("CRDSOPS_CONDA_CHANNEL"):
        channels = os.environ["CRDSOPS_CONDA_CHANNEL"].replace(",", " ").split()
    conda_lock_cmd = _conda_lock_command()
    with tempfile.TemporaryDirectory(prefix="crdsops-lock-") as tmp:
        tmpdir = pathlib.Path(tmp)
        conda_exe, channels = _conda_for_lock(tmpdir, options, channels)
        argv = [*conda_lock_cmd, "lock", "--conda", conda_exe,
                "--pypi_to_conda_lookup_file", str(options.mapping or PYPI_TO_CONDA), "-p", "linux-64",
                "--lockfile", lock_path.name, "--md", "input_sha", "--md", "input_md5"]
        for env in env_files:
            argv += ["-f", os.path.relpath(env, lock_path.parent)]
        for channel in channels:
            argv += ["--channel", channel]
        made = _lock_in_place(argv, lock_path, env_files, tmpdir, options.timeout)
    log.info(f"wrote {lock_path}: {len(made.select('conda', made.categories))} conda + "
             f"{len(made.select('pip', made.categories))} pip packages, categories {', '.join(sorted(made.categories))}")
    return lock_path


def _conda_for_lock(tmpdir: pathlib.Path, options: LockOptions, channels: list[str]) -> tuple[str, list[str]]:
    """The conda executable conda-lock drives and the channels it solves against.

    With no conda here: the py-rattler front end (written into TMPDIR) and, with no channel
    either, a local channel in var/conda-channel that describes the system Python.
    """
    from crdsops.stack import channel as stack_channel

    conda_exe = find_conda(options.conda)
    if conda_exe is not None:
        log.info(f"conda: {conda_exe}")
        return conda_exe, channels
    conda_exe = str(rattler_conda_exe(tmpdir))  # first: it says what to install when py-rattler is missing
    if not channels:
        python = options.python or DEFAULT_PYTHON
        channel = CHECKOUT / "var" / "conda-channel"
        shutil.rmtree(channel, ignore_errors=True)
        facts = stack_channel.system_channel(channel, python)
        channels = [channel.as_uri()]
        log.info(f"no conda executable: solving the conda layer against {channel} "
                 f"(python {facts['python']} = {python}, pip {facts['pip']})")
    log.info("conda: crdsops py-rattler front end")
    return conda_exe, channels


def _lock_in_place(argv: list[str], lock_path: pathlib.Path, env_files: list[pathlib.Path],
                   tmpdir: pathlib.Path, timeout: float):
    """Run conda-lock (ARGV), which writes LOCK_PATH itself (its header and `sources` name that path).

    The previous lock waits beside it and comes back unless conda-lock succeeded and its lock
    reads as fresh for ENV_FILES. Returns the new lock (``condalock.Lock``).
    """
    from crdsops.stack import condalock

    previous = lock_path.with_name(f".{lock_path.name}.previous")
    if lock_path.exists():
        os.replace(lock_path, previous)
    try:
        _run_conda_lock(argv, lock_path, tmpdir, timeout)
        made = condalock.read_lock(lock_path)
        condalock.check_fresh(made, env_files)
    except BaseException:
        lock_path.unlink(missing_ok=True)
        if previous.exists():
            os.replace(previous, lock_path)
        raise
    previous.unlink(missing_ok=True)
    return made


def _run_conda_lock(argv: list[str], lock_path: pathlib.Path, tmpdir: pathlib.Path, timeout: float) -> None:
    # PYTHONHASHSEED: conda-lock's header lists a set; keep the lock byte-reproducible
    env = dict(os.environ, CONDA_PKGS_DIRS=str(tmpdir / "pkgs"), PYTHONHASHSEED="0")
    log.info("running " + " ".join(a if " " not in a else repr(a) for a in argv))
    try:
        result = commands.run(argv, what="conda-lock", cwd=lock_path.parent, env=env, timeout=timeout, check=False)
    except commands.CommandFailed as err:
        if err.result is None and "did not finish" in str(err):  # the seam's timeout: say what usually hangs it
            raise CrdsOpsError(f"conda-lock did not finish within {timeout:.0f}s; "
                               "check network access to the pip index") from None
        raise
    if result.ok and lock_path.exists():
        return
    output = "\n".join(x for x in (result.stdout, result.stderr) if x)  # stderr last: _last_error looks there first
    saved = tmpdir.parent / f"crdsops-lock-{os.getpid()}.log"
    saved.write_text(output)
    raise CrdsOpsError(f"conda-lock failed ({_last_error(output)}); full output: {saved}")


def _conda_lock_command() -> list[str]:
    try:
        import conda_lock  # noqa: F401

        return [sys.executable, "-m", "conda_lock"]
    except ImportError:
        found = shutil.which("conda-lock")
        if found:
            return [found]
    raise CrdsOpsError("conda-lock is not installed; install the dev tools (`bin/bootstrap --dev`) or `pip install conda-lock`")


def _last_error(output: str) -> str:
    lines = [text.strip() for text in output.splitlines() if text.strip()]
    for line in reversed(lines):
        if any(w in line for w in ("Error", "error", "ERROR", "not found", "Could not")):
            return line[:300]
    return (lines[-1] if lines else "no output")[:300]


# --- build: probe, steps, carry out ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What `inv build` was asked for (None: as the current stack has it, or the default)."""

    lock_path: pathlib.Path | None = None  # default: conda-lock.yml in the checkout
    dev: bool | None = None
    vm: bool | None = None
    mode: str | None = None  # auto (None), conda or system
    python: str | None = None  # the system Python of --mode system
    conda: str | None = None  # the conda executable of --mode conda
    force: bool = False


@dataclasses.dataclass(frozen=True)
class StackFacts:
    """What a probe of a stack prefix found (read-only): the lock and its sources, the categories
    wanted, whether the stack there is up to date with them, and else how a build would make it."""

    prefix: pathlib.Path
    lock_path: pathlib.Path
    env_files: tuple[pathlib.Path, ...]
    categories: tuple[str, ...]  # in CATEGORIES order
    lock_sha256: str
    env_sha256: dict[str, str]  # environment file name -> sha256, as the stamp records it
    up_to_date: bool = False
    restamp: bool = False  # up to date, but the environment files' bytes changed: the stamp is rewritten
    reason: str = ""
    freshness: str = ""  # how the lock was found fresh (condalock.check_fresh)
    mode: str = ""  # conda | system
    python: str = ""  # the system Python (mode system)
    python_version: str = ""
    conda: str | None = None  # the conda executable (mode conda)
    conda_packages: tuple = ()  # condalock.LockedPackage
    pip_packages: tuple = ()

    def describe(self) -> str:
        if self.up_to_date:
            return f"stack at {self.prefix} is up to date with {self.lock_path.name} ({self.reason})"
        where = f"python {self.python_version} ({self.python})" if self.mode == "system" else f"conda {self.conda}"
        return (f"build {self.prefix} [{self.mode}, {where}] from {self.lock_path.name} "
                f"(categories {','.join(self.categories)}: {len(self.conda_packages)} conda, "
                f"{len(self.pip_packages)} pip packages, hash-checked); reason: {self.reason}")


def read_stamp(prefix: pathlib.Path) -> dict:
    try:
        return json.loads((prefix / STAMP).read_text())
    except (OSError, ValueError):
        return {}


def probe(prefix: pathlib.Path, options: BuildOptions = BuildOptions()) -> StackFacts:
    """What a build of PREFIX would do; read-only. A no-op probe reads nothing but the stamp and two hashes."""
    prefix = pathlib.Path(prefix)
    if not prefix.is_absolute():
        prefix = CHECKOUT / prefix
    lock_path = pathlib.Path(options.lock_path or CHECKOUT / LOCK_FILE)
    # the sources conda-lock records are relative to the lock: look for them beside it
    env_files = tuple(e for e in env_paths(lock_path.parent) if e.name == ENV_FILES[0] or e.exists())
    stamp = read_stamp(prefix)
    known = StackFacts(prefix, lock_path, env_files, _categories(options, stamp),
                       lock_sha256=_sha256(lock_path, "run `inv lock` to make it from environment.yml"),
                       env_sha256={e.name: _sha256(e) for e in env_files})
    # the fast path: same lock, same sources, same categories as the last good build
    if not options.force and _as_stamped(stamp, known, options.mode) and stamp.get("env_sha256") == known.env_sha256:
        return dataclasses.replace(known, up_to_date=True, mode=stamp.get("mode", ""),
                                   reason=f"lock sha256 {known.lock_sha256[:12]}, {','.join(known.categories)}")
    from crdsops.stack import condalock

    lk = condalock.read_lock(lock_path)
    freshness = condalock.check_fresh(lk, list(env_files))
    missing = [c for c in known.categories if c not in lk.categories]
    if missing:
        files = ", ".join(f"environment-{c}.yml" for c in missing)
        raise CrdsOpsError(f"{lock_path.name} has no {'/'.join(missing)} packages; add {files} and run `inv lock`")
    if not options.force and _as_stamped(stamp, known, options.mode):
        # the environment files' bytes changed, not what was locked: nothing to rebuild
        return dataclasses.replace(known, up_to_date=True, restamp=True, mode=stamp.get("mode", ""), freshness=freshness,
                                   reason=f"lock sha256 {known.lock_sha256[:12]}; environment files changed, "
                                          f"not their spec ({freshness})")
    wanted = set(known.categories)
    to_build = dataclasses.replace(
        known, freshness=freshness, reason=_reason(stamp, known, options.force),
        conda_packages=tuple(x for x in lk.select("conda", wanted) if not x.name.startswith("__")),
        pip_packages=tuple(lk.select("pip", wanted)))
    return _with_interpreter(to_build, lk, options)


def _categories(options: BuildOptions, stamp: dict) -> tuple[str, ...]:
    """main, plus dev and vm as asked, else as the stamp (the current stack) has them, else as the environment says."""
    def wanted(category: str, asked: bool | None) -> bool:
        if asked is not None:
            return asked
        return (category in stamp.get("categories", [])
                or os.environ.get(f"CRDSOPS_STACK_{category.upper()}", "") in ("1", "yes", "true"))

    dev, vm = wanted("dev", options.dev), wanted("vm", options.vm)
    return tuple(c for c in CATEGORIES if c == "main" or (c == "dev" and dev) or (c == "vm" and vm))


def _as_stamped(stamp: dict, facts: StackFacts, mode: str | None) -> bool:
    """The last good build (STAMP) was of the same lock, the same categories and (when asked) the same mode."""
    return bool(stamp) and (stamp.get("lock_sha256") == facts.lock_sha256
                            and stamp.get("categories") == list(facts.categories)
                            and (mode in (None, "auto") or stamp.get("mode") == mode))


def _reason(stamp: dict, facts: StackFacts, force: bool) -> str:
    """Why the stack at facts.prefix must be built."""
    if force:
        return "--force"
    if not stamp:
        return "no stack yet" if not facts.prefix.exists() else f"{facts.prefix} has no crdsops stamp"
    if stamp.get("lock_sha256") != facts.lock_sha256:
        return "the lock changed"
    if stamp.get("categories") != list(facts.categories):
        return f"categories {','.join(stamp.get('categories', []))} -> {','.join(facts.categories)}"
    return "sources or mode changed"


def _with_interpreter(facts: StackFacts, lk, options: BuildOptions) -> StackFacts:
    """FACTS with the mode of the build and what it builds with: the conda executable, or the system
    Python, which must be the lock's python version."""
    mode = _choose_mode(lk, options.mode, options.conda)
    if mode == "conda":
        conda = find_conda(options.conda)
        if conda is None:
            raise CrdsOpsError("--mode conda needs a conda executable; pass --conda PATH or use --mode system")
        return dataclasses.replace(facts, mode=mode, conda=conda, python_version=lk.python.version if lk.python else "")
    python = options.python or os.environ.get("CRDSOPS_STACK_PYTHON") or DEFAULT_PYTHON
    version = _python_version(python)
    locked = lk.python
    if locked is None:
        raise CrdsOpsError(f"{facts.lock_path.name} pins no python; add python to environment.yml and run `inv lock`")
    if version.split(".")[:2] != locked.version.split(".")[:2]:
        raise CrdsOpsError(
            f"{python} is Python {version} but {facts.lock_path.name} pins python {locked.version}; "
            f"build with a matching interpreter (--python) or re-lock with `inv lock` on this machine"
        )
    return dataclasses.replace(facts, mode=mode, python=python, python_version=version)


def _choose_mode(lk, mode: str | None, conda: str | None) -> str:
    if mode in ("conda", "system"):
        return mode
    if mode not in (None, "auto"):
        raise CrdsOpsError(f"unknown --mode {mode!r}; use auto, conda or system")
    python = lk.python
    if python is not None and python.build.startswith("system"):
        return "system"  # the lock's conda layer describes a system Python (made with no conda)
    return "conda" if find_conda(conda) else "system"


def _python_version(python: str) -> str:
    if not shutil.which(python):  # say it as the operating system would, before the seam says "not installed"
        why = os.strerror(errno.EACCES if os.path.exists(python) else errno.ENOENT)
        raise CrdsOpsError(f"cannot run {python} ({why}); install Debian's python3 or pass --python")
    result = commands.run([python, "-c", "import platform; print(platform.python_version())"],
                          what=python, timeout=60, check=False)
    if not result.ok:
        raise CrdsOpsError(f"{python} does not run ({result.stderr.strip()[-200:]}); pass another --python")
    return result.stdout.strip()


def _check_writable(prefix: pathlib.Path) -> None:
    parent = prefix.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{prefix.name}.probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CrdsOpsError(
            f"cannot write in {parent} ({err.strerror}); the stack prefix {prefix} must be in a writable "
            "directory: fix permissions or set stack.prefix / --prefix"
        ) from None
    if prefix.exists() and not prefix.is_dir():
        raise CrdsOpsError(f"{prefix} exists and is not a directory; move it away or choose another --prefix")


def steps(facts: StackFacts) -> steps_mod.Plan:
    """The one step of a build, as the lifecycle shows and runs it (no action: up to date, nothing to do)."""
    plan = steps_mod.Plan(f"the stack {facts.prefix}")
    plan.add(facts.describe(), (lambda: carry_out(facts)) if (facts.restamp or not facts.up_to_date) else None,
             name="building the stack")
    return plan


def carry_out(facts: StackFacts) -> None:
    """Rewrite the stamp of an up-to-date stack whose environment files changed, or build the stack."""
    if facts.restamp:
        stamp = dict(read_stamp(facts.prefix), env_sha256=facts.env_sha256, freshness=facts.freshness)
        _write_atomic(facts.prefix / STAMP, json.dumps(stamp, indent=2) + "\n")
    if facts.up_to_date:
        return
    _check_writable(facts.prefix)
    log.info(facts.describe())
    with _build_lock(facts.prefix):
        _replace_stack(facts)


class _build_lock:
    """One build per prefix at a time (flock on a file beside the prefix)."""

    def __init__(self, prefix: pathlib.Path):
        self.prefix = prefix
        self.path = prefix.with_name(f".{prefix.name}.build-lock")

    def __enter__(self):
        import fcntl

        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise CrdsOpsError(f"another stack build is running on {self.prefix} ({holder}); wait for it") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()} since {_now()}\n")
        self.fh.flush()
        return self

    def __exit__(self, *exc):
        self.fh.close()
        self.path.unlink(missing_ok=True)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _replace_stack(facts: StackFacts) -> None:
    """Move the old stack aside, build the new one in its place, restore the old on failure.

    The old stack may hold the very interpreter running this code (`inv build` from
    .venv): renaming its directory keeps the running process's open files valid, and
    nothing below imports from it after the rename (stdlib lives outside a venv).
    """
    aside = _move_aside(facts.prefix)
    build_log = pathlib.Path(tempfile.gettempdir()) / f"crdsops-build-{os.getpid()}.log"
    started = time.monotonic()
    try:
        with open(build_log, "w") as logfh:
            _build_into(facts, logfh)
    except BaseException as err:
        restored = _put_back(facts.prefix, aside)
        if isinstance(err, CrdsOpsError):
            raise CrdsOpsError(f"stack build failed: {err}{restored}; full log: {build_log}") from None
        if isinstance(err, KeyboardInterrupt):  # the task boundary says where; this says what was put back
            log.info(f"stack build interrupted{restored}")
            raise
        raise CrdsOpsError(f"stack build failed: {type(err).__name__}: {err}{restored}; full log: {build_log}") from None
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    build_log.unlink(missing_ok=True)
    log.info(f"built {facts.prefix} in {time.monotonic() - started:.0f}s; "
             f"installed packages listed in {facts.prefix / PACKAGE_LIST}")


def _move_aside(prefix: pathlib.Path) -> pathlib.Path | None:
    """Rename the stack at PREFIX to a name beside it; return that name (None: there was none)."""
    if not prefix.exists():
        return None
    aside = prefix.with_name(f".{prefix.name}.previous-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(prefix, aside)
    except OSError as err:
        raise CrdsOpsError(f"cannot move {prefix} aside ({err.strerror}); fix permissions on {prefix.parent}") from None
    return aside


def _put_back(prefix: pathlib.Path, aside: pathlib.Path | None) -> str:
    """Remove the failed build at PREFIX and rename the old stack back; return what to say about it."""
    shutil.rmtree(prefix, ignore_errors=True)
    if aside is None:
        return f"; nothing was at {prefix} before"
    try:
        os.rename(aside, prefix)
    except OSError as err:
        return f"; could not restore the previous stack from {aside} ({err.strerror}): move it back by hand"
    return f"; previous stack restored at {prefix}"


def _build_into(facts: StackFacts, logfh) -> None:
    """The conda layer (or a venv of the system Python), the pip layer, then the record of what is there."""
    if facts.mode == "conda":
        _install_conda_layer(facts, logfh)
    else:
        _check_venv_module(facts.python)
        _run([facts.python, "-m", "venv", str(facts.prefix)], logfh, "python -m venv")
    if facts.pip_packages:
        _install_pip_layer(facts, logfh)
    _record(facts)


def _run(argv: list[str], logfh, what: str, env: dict | None = None) -> None:
    """Run ARGV with its output streamed into the build log; CrdsOpsError naming WHAT when it fails."""
    code, output = logged.run(argv, logfh, what=what, env=env)
    if code != 0:
        raise CrdsOpsError(f"{what} exited {code} ({_last_error(output)})")


def _check_venv_module(python: str) -> None:
    """Debian's python3 makes no venv without python3-venv (ensurepip): say so, not "exited 1"."""
    if not commands.run([python, "-c", "import ensurepip, venv"], what=python, check=False).ok:
        raise CrdsOpsError(f"{python} cannot make a venv (its venv/ensurepip module is missing); "
                           "install python3-venv: apt-get install python3-venv")


def _check_can_compile(pkg) -> None:
    """Building an sdist (the vm category's mysqlclient, mod_wsgi) needs the vm system packages."""
    from crdsops.stack import system

    vm = system.wanted(["vm"])
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        line = system.apt_line(system.packages_of([p for p in vm if p.name == "vm"]), sudo=os.geteuid() != 0)
        raise CrdsOpsError(f"building {pkg.name} {pkg.version} from its sdist needs a C compiler and there is "
                           f"none on PATH (cc, gcc); install the vm packages: `{line}`")
    system.require(["vm"])


def _install_conda_layer(facts: StackFacts, logfh) -> None:
    with tempfile.TemporaryDirectory(prefix="crdsops-explicit-") as tmp:
        explicit = pathlib.Path(tmp) / "explicit.txt"
        lines = ["# conda packages of " + str(facts.lock_path), "@EXPLICIT"]
        lines += [f"{x.url}#{x.md5}" if x.md5 else x.url for x in facts.conda_packages]
        explicit.write_text("\n".join(lines) + "\n")
        _run([facts.conda, "create", "--quiet", "--yes", "--prefix", str(facts.prefix), "--file", str(explicit)],
             logfh, f"{pathlib.Path(facts.conda).name} create")
    if facts.pip_packages and not (facts.prefix / "bin" / "python").exists():
        raise CrdsOpsError("the conda layer has no bin/python to install the pip layer with; add python to environment.yml")


def files_cache() -> pathlib.Path:
    """Where locked pip files are kept, by sha256 (CRDSOPS_STACK_CACHE, else ~/.cache/crdsops)."""
    return pathlib.Path(os.environ.get("CRDSOPS_STACK_CACHE")
                        or pathlib.Path.home() / ".cache" / "crdsops" / "stack-files")


def fetch(packages, cache: pathlib.Path | None = None, workers: int = 8) -> dict[str, pathlib.Path]:
    """Download each locked pip file once (in parallel) into CACHE/<sha256>/, checking its sha256.

    A file already there is re-hashed, not re-downloaded, so an unchanged lock rebuilds
    without the network (like build_conda3's installer directory, but content-addressed).
    """
    import concurrent.futures
    import urllib.parse
    import urllib.request

    cache = cache or files_cache()

    def one(pkg) -> pathlib.Path:
        name = urllib.parse.unquote(pkg.url.rsplit("/", 1)[-1].split("#", 1)[0])
        dest = cache / pkg.sha256 / name
        if dest.is_file() and _sha256(dest) == pkg.sha256:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{name}.{os.getpid()}.part")
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(pkg.url, timeout=120) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise CrdsOpsError(f"cannot download {pkg.url} ({err}); check network access to the pip index") from None
        if digest.hexdigest() != pkg.sha256:
            tmp.unlink(missing_ok=True)
            raise CrdsOpsError(f"hash mismatch: {name} has sha256 {digest.hexdigest()}, the lock says {pkg.sha256}")
        os.replace(tmp, dest)
        return dest

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return {pkg.name: path for pkg, path in zip(packages, pool.map(one, packages), strict=True)}


def pip_requirements(packages, files: dict[str, pathlib.Path] | None = None,
                     hashes: dict[str, str] | None = None) -> str:
    """Requirement lines pinning each pip package to its file (the lock's URL or a local copy) and sha256."""
    files, hashes = files or {}, hashes or {}
    return "".join(
        f"{x.name} @ {files[x.name].as_uri() if x.name in files else x.url} "
        f"--hash=sha256:{hashes.get(x.name, x.sha256)}\n"
        for x in packages
    )


def _built_wheel(facts: StackFacts, pkg, sdist: pathlib.Path, logfh) -> tuple[pathlib.Path, str]:
    """The wheel built from a locked (hash-checked) sdist, built once and kept beside it.

    pip refuses its own wheel cache in hash-checking mode, so without this every build
    would recompile mysqlclient and mod_wsgi. The wheel's sha256 is recorded when it is
    built and checked by pip (--require-hashes) whenever it is installed.
    """
    tag = f"built-{facts.mode}-py{'.'.join((facts.python_version or '0.0').split('.')[:2])}-{os.uname().machine}"
    where = sdist.parent / tag
    wheels = sorted(where.glob("*.whl")) if where.is_dir() else []
    recorded = where / "sha256"
    if len(wheels) == 1 and recorded.is_file() and recorded.read_text().strip() == _sha256(wheels[0]):
        return wheels[0], recorded.read_text().strip()
    _check_can_compile(pkg)
    shutil.rmtree(where, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="crdsops-wheel-", dir=sdist.parent) as tmp:
        out = pathlib.Path(tmp) / "out"
        req = pathlib.Path(tmp) / "req.txt"
        req.write_text(pip_requirements([pkg], {pkg.name: sdist}))
        _run([str(facts.prefix / "bin" / "python"), "-m", "pip", "wheel", "--no-deps", "--require-hashes",
              "--use-pep517", "--progress-bar", "off", "-w", str(out), "-r", str(req)],
             logfh, f"building {pkg.name} {pkg.version} from its sdist", env=_pip_env())
        built = sorted(out.glob("*.whl"))
        if len(built) != 1:
            raise CrdsOpsError(f"building {pkg.name} from its sdist made {len(built)} wheels, expected 1")
        digest = _sha256(built[0])
        (out / "sha256").write_text(digest + "\n")
        os.replace(out, where)
    return where / built[0].name, digest


def _pip_env() -> dict:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    env.pop("PYTHONPATH", None)
    return env


def _install_pip_layer(facts: StackFacts, logfh) -> None:
    files = fetch(facts.pip_packages)
    hashes = {}
    for pkg in facts.pip_packages:
        if not files[pkg.name].name.endswith(".whl"):
            files[pkg.name], hashes[pkg.name] = _built_wheel(facts, pkg, files[pkg.name], logfh)
    with tempfile.TemporaryDirectory(prefix="crdsops-pip-") as tmp:
        req = pathlib.Path(tmp) / "requirements.txt"
        req.write_text(pip_requirements(facts.pip_packages, files, hashes))
        _run([str(facts.prefix / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--require-hashes",
              "--progress-bar", "off", "-r", str(req)], logfh, "pip install (hash-checked)", env=_pip_env())


_LIST_CODE = """
import importlib.metadata as m, json, platform
print(json.dumps({"python": platform.python_version(),
                  "dists": sorted({(d.metadata["Name"], d.version) for d in m.distributions()
                                   if d.metadata["Name"]}, key=lambda x: x[0].lower())}))
"""


def _record(facts: StackFacts) -> None:
    """Write <prefix>/crdsops-packages.txt (what is installed) and the stamp, each atomically."""
    listed = {"python": "none", "dists": []}
    if (facts.prefix / "bin" / "python").exists():
        result = commands.run([str(facts.prefix / "bin" / "python"), "-c", _LIST_CODE], what="the new stack's python",
                              check=False)
        if not result.ok:
            raise CrdsOpsError(f"the new stack's python does not run ({_last_error(result.stderr)})")
        listed = json.loads(result.stdout)
    header = [
        f"# crdsops stack: what `inv build` installed in {facts.prefix}",
        f"# built {_now()} on {os.uname().nodename}, mode {facts.mode}, python {listed['python']}",
        f"# from {facts.lock_path.name} sha256 {facts.lock_sha256}, categories {','.join(facts.categories)}",
    ]
    header += [f"# conda: {x.name}={x.version}={x.build} {x.url}" for x in facts.conda_packages]
    body = [f"{name}=={version}" for name, version in listed["dists"]]
    _write_atomic(facts.prefix / PACKAGE_LIST, "\n".join(header + body) + "\n")
    stamp = {
        "lock_sha256": facts.lock_sha256,
        "env_sha256": facts.env_sha256,
        "categories": list(facts.categories),
        "mode": facts.mode,
        "python": listed["python"],
        "built_at": _now(),
        "freshness": facts.freshness,
    }
    _write_atomic(facts.prefix / STAMP, json.dumps(stamp, indent=2) + "\n")


def _write_atomic(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- command line (bin/bootstrap runs this with a bare python3) -------------------------

def main(argv: list[str] | None = None) -> int:
    """``python3 -m crdsops.stack build|system``: 0 when done, else one ``error: ...`` line on stderr."""
    from crdsops import output

    output.to_terminal()
    args = _parser().parse_args(argv)
    if args.command == "system":
        return _system_main(args)
    return _build_main(args)


def _parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m crdsops.stack", description="Build the server stack from conda-lock.yml.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the stack at --prefix from the lock (a no-op when unchanged)")
    b.add_argument("--prefix", default=None, help="stack prefix (default: stack.prefix of the config, .venv)")
    b.add_argument("--dev", action="store_true", default=None, help="include the dev category (test tools)")
    b.add_argument("--vm", action="store_true", default=None,
                   help="include the vm category (mysqlclient, mod_wsgi: what the VM kinds need)")
    b.add_argument("--mode", choices=("auto", "conda", "system"), default=None)
    b.add_argument("--python", default=None, help=f"system Python for --mode system (default {DEFAULT_PYTHON})")
    b.add_argument("--force", action="store_true", help="rebuild even when the stack is up to date")
    b.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    s = sub.add_parser("system", help="check (as root: install) the system packages of system-packages.txt")
    s.add_argument("--for", dest="purposes", action="append", default=[], choices=("vm", "test"),
                   help="add a purpose to default (repeatable): vm, test")
    s.add_argument("--dry-run", action="store_true", help="say what would be installed, change nothing")
    return parser


def _build_main(args) -> int:
    """Probe the stack, then run its steps (unless --dry-run); say what was found when nothing was built."""
    from crdsops import interrupts

    prefix = args.prefix or os.environ.get("STACK") or ".venv"
    options = BuildOptions(dev=args.dev, vm=args.vm, mode=args.mode, python=args.python, force=args.force)
    try:
        with interrupts.raising_signals():
            facts = probe(pathlib.Path(prefix), options)
            if not args.dry_run:
                steps(facts).run()
    except CrdsOpsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except interrupts.Interrupted as err:
        print(f"error: interrupted during the stack build of {prefix}; the stack there is as it was before",
              file=sys.stderr)
        return err.exit_code
    if facts.up_to_date or args.dry_run:
        log.info(("would " if args.dry_run and not facts.up_to_date else "") + facts.describe())
    return 0


def _system_main(args) -> int:
    from crdsops.stack import system

    try:
        system.ensure(args.purposes, dry_run=args.dry_run)
    except CrdsOpsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
