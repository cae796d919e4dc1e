"""A mirror reaches its source over one SSH connection and leaves nothing of it behind.

The source's sshd logs one "Accepted publickey" line per connection it authenticates; a
mirror that probes the source, runs `inv backup` there, fetches that backup and rsyncs the
cache and deliveries must add exactly one. The ControlMaster's socket lives in a private
directory under TMPDIR (here the test's own), which must be gone after the mirror, with no
master process left, also when the mirror failed or was interrupted.
"""

from __future__ import annotations

import contextlib
import shutil
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from interrupting import at_failpoint

MIRROR = ["mirror", "--obs", "hst", "--src", "test", "--yes"]


@contextlib.contextmanager
def _watching(tmp: Path):
    """While the block runs, note every ControlMaster directory under ``tmp``: (its mode, its socket seen)."""
    seen: dict[str, tuple[set[int], bool]] = {}
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for d in tmp.glob("crdsops-ssh-*"):
                modes, sock = seen.setdefault(d.name, (set(), False))
                with contextlib.suppress(OSError):  # gone meanwhile
                    modes.add(stat.S_IMODE(d.stat().st_mode))
                    sock = sock or stat.S_ISSOCK((d / "cm").stat().st_mode)
                seen[d.name] = (modes, sock)
            stop.wait(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()


def _masters(tmp: Path) -> list[int]:
    """Pids of processes whose command line names a ControlPath under ``tmp`` (a master left running)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if f"ControlPath={tmp}/".encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
    return found


@pytest.fixture
def private_tmp(pair):
    """(a TMPDIR of the test's own, the mirror's environment with it); short: a socket path must be."""
    tmp = Path(tempfile.mkdtemp(prefix="mx-", dir="/tmp"))
    try:
        yield tmp, dict(pair.ops["dev"].env, TMPDIR=str(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _assert_left_nothing(tmp: Path, seen: dict) -> None:
    assert len(seen) == 1, seen  # one master, in a directory of its own
    assert list(seen.values()) == [({0o700}, True)], seen  # private the whole time; its socket was there
    assert not list(tmp.glob("crdsops-ssh-*"))
    assert _masters(tmp) == []


def test_mirror_opens_one_ssh_connection_and_closes_it(pair, tmp_path, private_tmp):
    from support import make_configs

    # every SSH step at once: the probes, `inv backup` there, the fetch (the shared dir is not
    # mounted here), the rsyncs of the cache and the deliveries
    make_configs(tmp_path, {("hst", "dev"): {"backups": {"shared_dir": str(tmp_path / "dev-shared")}}})
    (pair.src_cfg.cache / "references" / "hst" / "new_on_test.fits").write_bytes(b"x" * 1000)
    tmp, env = private_tmp
    before = pair.test_host.accepted()
    with _watching(tmp) as seen:
        result = pair.mirror("--yes", "--fresh-backup", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified against its manifest" in result.stdout  # fetched over SSH
    assert (pair.dst_cfg.cache / "references" / "hst" / "new_on_test.fits").exists()  # an rsync ran
    assert pair.test_host.accepted() - before == 1
    _assert_left_nothing(tmp, seen)


def test_failed_mirror_closes_its_connection(pair, private_tmp):
    tmp, env = private_tmp
    before = pair.test_host.accepted()
    with _watching(tmp) as seen:
        result = pair.mirror("--yes", env=dict(env, CRDSOPS_FAILPOINT="restore.health=fail"))
    assert result.returncode == 1 and "rolled back" in result.stderr, result.stdout + result.stderr
    assert pair.test_host.accepted() - before == 1
    _assert_left_nothing(tmp, seen)


def test_interrupted_mirror_closes_its_connection(pair, private_tmp):
    tmp, env = private_tmp
    for sig in ("sigint", "sigterm"):
        with _watching(tmp) as seen:
            run = at_failpoint(MIRROR, env, "mirror.staging", sig)
        run.check()
        assert not run.finished_first, run.describe()
        _assert_left_nothing(tmp, seen)
