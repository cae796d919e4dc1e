"""Faults an operator meets: damaged configs, racing takers of the lock, a full backup disk,
a backup that fails verification. Each test asserts what the operator sees: one line, the
exit code, the server still up, the disk freed."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time

import pytest
from support import CHECKOUT, local_overrides, make_configs

from crdsops.config.loader import load_config
from crdsops.data.manifest import DatabaseDump, Manifest, ServerIdentity
from crdsops.data.manifest import verify as verify_manifest
from crdsops.runtime import lock as serverlock

# --- config files damaged at the byte level ------------------------------------------------


@pytest.mark.parametrize("damage, expected", [
    (b"url: https://x.example\x00\n", "line 3: NUL (U+0000) at column 23; remove it"),
    (b"url: https://x.example\x07\n", "line 3: a control character (U+0007) at column 23; remove it"),
    (b"# caf\xe9\n", "line 3: byte 0xe9 at column 6 is not UTF-8; save the file as UTF-8"),
    (b"web: [unclosed\n", ": line 4: not valid YAML (expected"),  # where the parser noticed
])
def test_a_damaged_config_file_is_one_line_naming_file_and_line(ops, damage, expected):
    path = ops.configs / "hst" / "django.yaml"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:2]) + damage + b"".join(lines[2:]))
    result = ops.inv("install", "--obs", "hst", "--kind", "django", check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr  # exactly one line
    assert str(path) in result.stderr and expected in result.stderr, result.stderr
    assert not (ops.where / "hst-django").exists()


# --- the lock ----------------------------------------------------------------------------

RACER = """
import sys, time
sys.path.insert(0, {checkout!r})
from crdsops.config.loader import load_config
from crdsops.runtime import lock
cfg = load_config("hst", "django", {configs!r})
start = float(sys.argv[1])
while time.time() < start:
    pass
try:
    record = lock.acquire(cfg, "backup")
except lock.LockHeld as err:
    print("LOST", err, flush=True)
    sys.exit(0)
print("WON", flush=True)
time.sleep(0.5)
lock.release(cfg, record)
"""


def test_racing_takers_always_name_the_holder(tmp_path):
    """Many takers at the same instant: one wins, every loser names it (never 'unknown process')."""
    configs = make_configs(tmp_path, {("hst", "django"): local_overrides(tmp_path)})
    script = RACER.format(checkout=str(CHECKOUT), configs=str(configs))
    for _round in range(5):
        start = time.time() + 0.5
        procs = [subprocess.Popen([sys.executable, "-c", script, str(start)], stdout=subprocess.PIPE, text=True)
                 for _ in range(8)]
        outputs = [p.communicate(timeout=60)[0] for p in procs]
        won = [o for o in outputs if o.startswith("WON")]
        lost = [o for o in outputs if o.startswith("LOST")]
        assert len(won) >= 1 and len(won) + len(lost) == 8, outputs
        for line in lost:
            assert "unknown process" not in line and "`backup` run by" in line, line


def test_a_taker_killed_before_its_rename_blocks_nobody(tmp_path):
    """A half-taken lock (its holder died writing it) and an empty lock directory are no lock."""
    cfg = load_config("hst", "django", make_configs(tmp_path, {("hst", "django"): local_overrides(tmp_path)}))
    path = serverlock.lock_path(cfg)
    path.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = path.with_name(f".{path.name}.new-{dead.stdout.strip()}-deadbeef")
    leftover.mkdir()
    path.mkdir()  # an empty lock directory, as a release cut short leaves it
    started = time.monotonic()
    record = serverlock.acquire(cfg, "backup")
    assert time.monotonic() - started < 2
    assert not leftover.exists()
    assert serverlock.read_holder(path)["token"] == record["token"]
    serverlock.release(cfg, record)
    assert not path.exists() and list(path.parent.glob(f".{path.name}*")) == []


# --- the manifest ---------------------------------------------------------------------------

def test_a_dump_left_out_of_the_manifest_is_found(tmp_path):
    """The dump a manifest names must be one of its files (this check could never fire before)."""
    backup = tmp_path / "b"
    (backup / "support").mkdir(parents=True)
    (backup / "support" / "catalogs.tar.zst").write_bytes(b"x")
    Manifest(server=ServerIdentity("hst", "django", "h", "u"), created=datetime.datetime(2026, 11, 28, tzinfo=datetime.UTC),
             crdsops_version="t", database=DatabaseDump("sqlite", "database.sqlite3.zst")).write(backup)
    assert verify_manifest(backup) == ["database dump database.sqlite3.zst is not in the manifest"]


# --- backups that fail verification, full disks ------------------------------------------------

def test_backups_verify_exits_1_when_one_fails(sqlite_server):
    server = sqlite_server
    server.inv("backup")
    newest = server.private_backups()[-1]
    dump = next(newest.glob("database.*"))
    dump.write_bytes(dump.read_bytes()[:-10])
    result = server.inv("backups", "--verify", check=False)
    assert result.returncode == 1
    assert "BAD" in result.stdout and result.stderr.startswith("error: 1 of 2 backups failed verification")
    listing = server.inv("backups")  # without --verify it lists and exits 0 (Ops.inv raises otherwise)
    assert str(newest) in listing.stdout, listing.stdout


@pytest.fixture
def small_disk(tmp_path):
    where = tmp_path / "small-disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_backup_disk_is_named_and_the_partial_backup_removed(tmp_path, small_disk):
    from support import Ops, deep_merge

    overrides = deep_merge(local_overrides(tmp_path), {"backups": {"private_dir": str(small_disk / "private")}})
    ops = Ops(tmp_path, make_configs(tmp_path, {("hst", "django"): overrides}))
    ops.inv("install", "--obs", "hst", "--kind", "django")
    # a reference file big enough that its listing and the dump cannot both fit in 200 KB
    cfg = ops.config("hst", "django")
    ballast = cfg.layout.catalogs / "ballast.bin"
    ballast.write_bytes(os.urandom(400 * 1024))  # random: incompressible
    ops.inv("run")
    try:
        result = ops.inv("backup", check=False)
        assert result.returncode == 1
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1, line
        assert line.startswith("error: the backup disk is full: ") and str(small_disk / "private") in line
        assert "needs about" in line and "free" in line and "partial backup was removed" in line
        assert "cannot read SQLite" not in line
        assert [p.name for p in (small_disk / "private").iterdir() if p.name.startswith(".tmp-")] == []
        used = int(subprocess.run(["du", "-sk", str(small_disk)], capture_output=True, text=True).stdout.split()[0])
        assert used < 20, f"{used} KB still used on the backup disk"
        status = json.loads(ops.inv("status", "--json", check=False).stdout)
        assert status["answers"], status  # the server kept serving
    finally:
        ops.inv("stop", check=False)
