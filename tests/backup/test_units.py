"""The lock, retention and the cron line, without a running server."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support import local_overrides, make_configs

from crdsops.data import inventory, schedule
from crdsops.data.manifest import DatabaseDump, Manifest, ServerIdentity
from crdsops.errors import CrdsOpsError
from crdsops.runtime import lock as serverlock
from crdsops.runtime.lifecycle import drive


@pytest.fixture
def cfg(tmp_path):
    from crdsops.config.loader import load_config

    configs = make_configs(tmp_path, {("hst", "django"): local_overrides(tmp_path)})
    return load_config("hst", "django", configs)


# --- the lock ------------------------------------------------------------------------------

def test_second_taker_refuses_and_names_the_holder(cfg, caplog):
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from crdsops.config.loader import load_config
from crdsops.runtime import lock as serverlock
cfg = load_config("hst", "django", {str(cfg.sources[1].rsplit('/', 2)[0])!r})
serverlock.acquire(cfg, "backup")
print("held", flush=True)
sys.stdin.read()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(serverlock.LockHeld) as err:
            serverlock.acquire(cfg, "restore")
        assert "`backup`" in str(err.value) and f"pid {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is taken over with a warning
    with caplog.at_level(logging.WARNING, logger="crdsops"):
        record = serverlock.acquire(cfg, "restore")
    assert any("stale lock" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    serverlock.release(cfg, record)
    assert not serverlock.lock_path(cfg).exists()


def test_only_the_holder_releases(cfg):
    record = serverlock.acquire(cfg, "backup")
    serverlock.release(cfg, dict(record, token="someone else"))
    assert serverlock.lock_path(cfg).exists()
    serverlock.release(cfg, record)
    assert not serverlock.lock_path(cfg).exists()


def test_lock_is_reentrant_and_private(cfg):
    with serverlock.server_lock(cfg, "restore"):
        with serverlock.server_lock(cfg, "backup"):  # restore's safety backup
            holder = serverlock.read_holder(serverlock.lock_path(cfg))
            assert holder["task"] == "restore"
        assert serverlock.lock_path(cfg).exists()
        assert stat.S_IMODE(os.stat(serverlock.lock_path(cfg)).st_mode) == 0o700
    assert not serverlock.lock_path(cfg).exists()


def test_lock_of_another_host_is_never_taken_over(cfg):
    path = serverlock.lock_path(cfg)
    path.mkdir(parents=True)
    (path / "holder.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "task": "mirror"}))
    with pytest.raises(serverlock.LockHeld, match="elsewhere"):
        serverlock.acquire(cfg, "backup")


# --- retention -----------------------------------------------------------------------------

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


def _fake_backups(cfg, ages_days, bad=()):
    for i, age in enumerate(ages_days):
        created = NOW - datetime.timedelta(days=age)
        # names deliberately unrelated to the dates: retention reads manifests
        path = cfg.backups.private_dir / f"backup-{i:02d}"
        path.mkdir(parents=True)
        (path / "database.sqlite3").write_text(f"dump {i}")
        Manifest(server=ServerIdentity("hst", "django", "h", "u"), created=created, crdsops_version="t",
                 database=DatabaseDump("sqlite", "database.sqlite3")).write(path)
        if i in bad:
            (path / "database.sqlite3").write_text("corrupted")
    return cfg


def _kept(cfg, **backups):
    cfg = dataclasses.replace(cfg, backups=dataclasses.replace(cfg.backups, **backups))
    keep, remove = inventory.retention_plan(cfg, inventory.private_backups(cfg), now=NOW)
    return sorted(e.path.name for e in keep), sorted(e.path.name for e in remove)


@pytest.mark.parametrize("ages, settings, bad, kept", [
    # newest 2 plus everything younger than 3 days
    ([0, 1, 2, 5, 9, 20], dict(keep=2, keep_days=3, min_keep=1), (), ["backup-00", "backup-01", "backup-02"]),
    # nothing young, keep=1 but min_keep=3
    ([10, 11, 12, 13], dict(keep=1, keep_days=1, min_keep=3), (), ["backup-00", "backup-01", "backup-02"]),
    # the newest two are corrupt: the newest verified one is kept as well
    ([0, 1, 30, 40], dict(keep=2, keep_days=0, min_keep=1), (0, 1), ["backup-00", "backup-01", "backup-02"]),
    # keep=0, keep_days=0, min_keep=0: still never the newest verified
    ([5, 6], dict(keep=0, keep_days=0, min_keep=0), (), ["backup-00"]),
])
def test_retention(cfg, ages, settings, bad, kept):
    _fake_backups(cfg, ages, bad)
    keep, remove = _kept(cfg, **settings)
    assert keep == kept
    assert sorted(keep + remove) == sorted(f"backup-{i:02d}" for i in range(len(ages)))


def test_retention_dates_by_manifest_not_name(cfg):
    _fake_backups(cfg, [30, 0])  # backup-00 is the older one despite its name
    keep, _ = _kept(cfg, keep=1, keep_days=0, min_keep=1)
    assert keep == ["backup-01"]


# --- tiered retention ------------------------------------------------------------------------

def _fake_at(cfg, times, bad=()):
    """Backups created at ``times`` (UTC ISO strings), named so that the names sort against the dates."""
    for i, when in enumerate(times):
        path = cfg.backups.private_dir / f"b{len(times) - i:02d}"  # the first (newest) gets the highest name
        path.mkdir(parents=True)
        (path / "database.sqlite3").write_text(f"dump {i}")
        Manifest(server=ServerIdentity("hst", "django", "h", "u"),
                 created=datetime.datetime.fromisoformat(when).replace(tzinfo=datetime.UTC),
                 crdsops_version="t", database=DatabaseDump("sqlite", "database.sqlite3")).write(path)
        if i in bad:
            (path / "database.sqlite3").write_text("corrupted")
            inventory.record_verification(cfg, path, ["database.sqlite3: sha256 differs"])  # recorded as BAD
    return cfg


def _reasons(cfg, **backups):
    cfg = dataclasses.replace(cfg, backups=dataclasses.replace(cfg.backups, **backups))
    verdicts = inventory.retention_verdicts(cfg, inventory.private_backups(cfg), now=NOW)
    return {v.entry.path.name: list(v.reasons) for v in verdicts}


# NOW is Saturday 2026-11-28 12:00 UTC, ISO week 2026-W48. Only the tiers under test are
# switched on (keep=0, keep_days=0, min_keep=0); "newest verified" is always there.
TIERS = [
    # two on one day: the day's newest holds it; days without a backup do not count
    (["2026-11-28T03:00", "2026-11-28T01:00", "2026-11-26T03:00", "2026-11-20T03:00"], dict(keep_daily=2), (),
     {"b04": ["daily 2026-11-28", "newest verified"], "b03": [], "b02": ["daily 2026-11-26"], "b01": []}),
    # ISO weeks (Monday first): Sunday 11-22 is W47 with Monday 11-16; 2024-12-30 is in 2025-W01
    (["2026-11-23T03:00", "2026-11-22T03:00", "2026-11-16T03:00", "2024-12-31T23:30", "2024-12-28T03:00"],
     dict(keep_weekly=4), (),
     {"b05": ["weekly 2026-W48", "newest verified"], "b04": ["weekly 2026-W47"], "b03": [],
      "b02": ["weekly 2025-W01"], "b01": ["weekly 2024-W52"]}),
    # months, by UTC: 23:30 on 10-31 is October whatever the machine's zone; a 2-month gap is skipped
    (["2026-11-02T03:00", "2026-11-01T00:10", "2026-10-31T23:30", "2026-10-01T03:00", "2026-07-15T03:00",
      "2026-06-30T03:00"], dict(keep_monthly=3), (),
     {"b06": ["monthly 2026-11", "newest verified"], "b05": [], "b04": ["monthly 2026-10"], "b03": [],
      "b02": ["monthly 2026-07"], "b01": []}),
    # rules overlap and every reason is named; keep/keep_days/min_keep still apply alongside
    (["2026-11-28T03:00", "2026-11-27T03:00", "2026-11-20T03:00", "2026-10-20T03:00", "2026-09-20T03:00"],
     dict(keep=1, keep_days=3, min_keep=5, keep_daily=1, keep_weekly=2, keep_monthly=2), (),
     {"b05": ["newest 1", "within 3 days", "daily 2026-11-28", "weekly 2026-W48", "monthly 2026-11",
              "newest verified"],
      "b04": ["within 3 days"], "b03": ["weekly 2026-W47"], "b02": ["monthly 2026-10"], "b01": ["min_keep"]}),
    # a backup recorded as BAD holds no period: the day's older good one is its daily, and the
    # newest verified is the next good one
    (["2026-11-28T03:00", "2026-11-28T01:00", "2026-11-27T03:00"], dict(keep_daily=2), (0,),
     {"b03": [], "b02": ["daily 2026-11-28", "newest verified"], "b01": ["daily 2026-11-27"]}),
    # all tiers 0 (the defaults): exactly the old rule
    (["2026-11-28T03:00", "2026-11-27T03:00", "2026-10-01T03:00"], dict(keep=1, keep_days=0, min_keep=2), (),
     {"b03": ["newest 1", "newest verified"], "b02": ["min_keep"], "b01": []}),
]


@pytest.mark.parametrize("times, settings, bad, reasons", TIERS)
def test_tiered_retention(cfg, times, settings, bad, reasons):
    _fake_at(cfg, times, bad)
    assert _reasons(cfg, **dict(dict(keep=0, keep_days=0, min_keep=0), **settings)) == reasons
    keep, remove = _kept(cfg, **dict(dict(keep=0, keep_days=0, min_keep=0), **settings))
    assert keep == sorted(name for name, why in reasons.items() if why)
    assert remove == sorted(name for name, why in reasons.items() if not why)


def test_the_rule_in_the_plan_names_the_tiers_only_when_set(cfg):
    assert "last" not in inventory.retention_rule(cfg.backups)  # defaults: 0, the old sentence
    tiered = dataclasses.replace(cfg.backups, keep_daily=7, keep_weekly=0, keep_monthly=12)
    assert "the newest of each of the last 7 days, 12 months that have one" in inventory.retention_rule(tiered)


# --- cron ----------------------------------------------------------------------------------

@pytest.fixture
def fake_crontab(tmp_path, monkeypatch):
    store = tmp_path / "crontab.txt"
    script = tmp_path / "crontab"
    script.write_text(f"""#!/bin/sh
if [ "$1" = "-l" ]; then [ -f {store} ] && cat {store} || {{ echo "no crontab for root" >&2; exit 1; }}
elif [ "$1" = "-" ]; then cat > {store}; fi
""")
    script.chmod(0o755)
    monkeypatch.setenv("CRDSOPS_CRONTAB", str(script))
    return store


def test_schedule_is_idempotent_and_removable(cfg, fake_crontab):
    fake_crontab.write_text("0 1 * * * somebody else's job\n")
    def scheduled(**options):
        return drive(schedule.Schedule(cfg, schedule.ScheduleOptions(**options)))

    first = scheduled(at="02:30")
    line = first.cron_line
    assert first.changed and line.startswith("30 2 * * * ") and " backup >> " in line
    assert str(cfg.root / "logs" / "backup.log") in line and line.endswith("# crdsops backup hst.django")
    assert scheduled(at="02:30") == schedule.ScheduleOutcome("backup", line, False)
    scheduled(at="04:05")
    text = fake_crontab.read_text()
    assert text.count("crdsops backup hst.django") == 1 and "5 4 * * *" in text
    assert "somebody else's job" in text
    assert scheduled(remove=True).changed
    assert fake_crontab.read_text() == "0 1 * * * somebody else's job\n"
    assert not scheduled(remove=True).changed
    with pytest.raises(CrdsOpsError, match="HH:MM"):
        schedule.cron_line(cfg, "25:00")


# --- side_by_side --------------------------------------------------------------------------

def test_a_nested_side_by_side_never_uncancels_the_outer_one():
    """The restore's cache check runs its hashing pass as a side_by_side inside a job: when that
    inner call ends while the outer one is stopping its jobs, the outer jobs must still see the
    cancellation (they stop at their next check), and it is cleared once the outer call ended."""
    import time

    from crdsops import interrupts
    from crdsops.parallel import JobsFailed, side_by_side

    seen = {}

    def fails():
        raise CrdsOpsError("disk full")

    def nests():
        while not interrupts.cancelled.wait(0.01):  # until the outer call stops its jobs
            pass
        with pytest.raises(JobsFailed):
            side_by_side({"inner fails": fails, "inner waits": lambda: time.sleep(0.05)})
        seen["cancelled after the inner call"] = interrupts.cancelled.is_set()

    with pytest.raises(JobsFailed, match="disk full"):
        side_by_side({"fails": fails, "nests": nests})
    assert seen == {"cancelled after the inner call": True}
    assert not interrupts.cancelled.is_set()


def test_a_nested_side_by_side_of_threads_only_leaves_the_outer_jobs_processes_alone():
    """The cache check's hashing pass (threads, no processes) stops its workers on a failure
    without signalling the mysqldump that a restore's safety backup runs beside it."""
    import time

    from crdsops.parallel import JobsFailed, side_by_side

    def fails():
        raise CrdsOpsError("unreadable")

    def nests():
        time.sleep(0.2)  # the child below is running
        with pytest.raises(JobsFailed):
            side_by_side({"worker": fails}, own_processes=False)

    outcome = side_by_side({"child": lambda: subprocess.run(["sleep", "1"]).returncode, "nests": nests})
    assert outcome.results["child"] == 0


def test_archived_binlogs_before_the_oldest_kept_backup_go_and_their_sums_with_them(ops):
    from crdsops.data import binlogs

    cfg = ops.config("hst", "django")
    archive = cfg.backups.private_dir / "binlogs"
    archive.mkdir(parents=True)
    for n in range(1, 6):
        (archive / f"binlog.{n:06d}").write_bytes(b"events %d" % n)
    sums = binlogs.seal(cfg)
    assert sorted(sums) == [f"binlog.{n:06d}" for n in range(1, 5)], "the newest file is still open: no sum"
    assert binlogs.prune_before(cfg, "binlog.000003") == ["binlog.000001", "binlog.000002"]
    assert [p.name for p in binlogs.archived(cfg)] == [f"binlog.{n:06d}" for n in range(3, 6)]
    assert sorted(binlogs.read_sums(cfg)) == ["binlog.000003", "binlog.000004"]
    assert binlogs.prune_before(cfg, "binlog.000009") == ["binlog.000003", "binlog.000004"], "the open one stays"


def test_jobs_that_fail_for_one_cause_say_it_once():
    """A refused login fails the dump and the catalog counts alike: one line names both, the cause once."""
    from crdsops.parallel import JobsFailed

    refused = CrdsOpsError("MySQL refused the login")
    err = JobsFailed([("dump", refused), ("counts", CrdsOpsError("MySQL refused the login")),
                      ("support:config", CrdsOpsError("disk full"))])
    assert str(err) == "dump, counts: MySQL refused the login; support:config: disk full"


# --- the order of a backup and the swaps around it (point-in-time restore) -------------------

@pytest.mark.parametrize("swap_at, swapped", [
    ("2026-12-04T20:39:47.100+00:00", False),  # the restore just before the backup, in its second
    ("2026-12-04T20:39:47.950+00:00", True),   # just after it, in the same second
    ("2026-12-04T20:39:47+00:00", True),       # an audit line kept to the second: cannot tell, so after
    ("2026-12-04T20:39:46.999+00:00", False),
])
def test_a_swap_in_the_backups_second_is_ordered_by_its_milliseconds(cfg, swap_at, swapped):
    from crdsops.data.restore import _swapped_between
    from crdsops.runtime import audit

    audit.append(cfg.layout, audit.Entry(at=swap_at, task="restore", server=cfg.name, who=audit.who(), result="ok"))
    backup_created = datetime.datetime(2026, 12, 4, 20, 39, 47, 900000, tzinfo=datetime.UTC)
    assert bool(_swapped_between(cfg, backup_created, None)) is swapped


def test_a_manifest_keeps_its_time_to_the_millisecond_and_an_older_one_to_the_second(tmp_path):
    made = datetime.datetime(2026, 12, 4, 20, 39, 47, 900000, tzinfo=datetime.UTC)
    for created, written in ((made, "2026-12-04T20:39:47.900+00:00"),
                             (made.replace(microsecond=0), "2026-12-04T20:39:47+00:00")):
        path = tmp_path / written
        path.mkdir()
        (path / "database.sqlite3").write_text("dump")
        Manifest(server=ServerIdentity("hst", "django", "h", "u"), created=created, crdsops_version="t",
                 database=DatabaseDump("sqlite", "database.sqlite3")).write(path)
        assert json.loads((path / "manifest.json").read_text())["created"] == written
        assert Manifest.load(path).created == created
