"""SIGINT and SIGTERM at every failpoint and at random moments of `inv backup` and `inv restore`,
on SQLite and on MariaDB. After each: the server answers with the old or the new state (never a
mix), no staging or temporary file is left, the lock is free, and the next run succeeds; and
throughout, a client load saw no failed request (``kept_answering``)."""

from __future__ import annotations

import random
import subprocess

from interrupting import (
    assert_mostly_interrupted,
    at_failpoint,
    at_moment,
    kept_answering,
    leftovers,
    moments_within,
)
from support import CHECKOUT, INV

from crdsops.data import manifest

BACKUP_POINTS = ["backup.started", "backup.dumped", "backup.manifest", "backup.renamed",
                 "backup.shared_copied", "backup.published"]
# a restore's own points, and those of the safety backup it takes once the new state serves (from the old
# state the swap kept: an interrupt there leaves the new state serving and the old one kept)
RESTORE_POINTS = ["restore.staging_ended", "restore.staged", "restore.swapped", "restore.health", "backup.started", "backup.dumped",
                  "backup.manifest", "backup.renamed"]
RANDOM_RUNS = 8  # few: each costs a run and a recovery; the failpoints above cover every named step
# The random moments fall within the first 60% of a run timed on the spot (moments_within), from
# the moment the lock appears: a quiet 2-core machine's SQLite backup holds it 0.08-0.2 s, a
# restore 0.7-0.9 s, and longer under load. Most runs must really be cut short
# (assert_mostly_interrupted); the failpoints cover the last steps for certain.


def _schema(server):
    return server.cfg.database.name if server.account else None


def _after_interrupt(server, run, states):
    """The checks that hold after every interrupted run."""
    run.check()
    assert server.answers(), run.describe()
    state = (server.rows(), server.support_files())
    assert state in states, f"the server holds neither the old nor the new state\n{run.describe()}"
    assert leftovers(server.cfg, _schema(server)) == [], run.describe()
    return state


def _visible_backups_verify(server):
    for path in server.private_backups():
        assert manifest.verify(path) == [], path
    if server.shared().exists():
        assert manifest.verify(server.shared()) == []


def _backup_interrupts(server):
    server.inv("backup")
    state = (server.rows(), server.support_files())
    for point in BACKUP_POINTS:
        for sig in ("sigint", "sigterm"):
            run = at_failpoint(["backup"], server.ops.env, point, sig)
            assert not run.finished_first, f"{point}: {run.describe()}"
            _after_interrupt(server, run, [state])
            _visible_backups_verify(server)
            server.inv("backup")  # the next run succeeds (Ops.inv raises on a non-zero exit)
    rng = random.Random(10)
    runs = []
    delays = moments_within(["backup"], server.ops.env, server.cfg.layout.lock)
    for i in range(RANDOM_RUNS):
        run = at_moment(["backup"], server.ops.env, server.cfg.layout.lock, rng.uniform(*delays),
                        ("sigint", "sigterm")[i % 2], group=bool(i % 3))
        runs.append(run)
        _after_interrupt(server, run, [state])
        _visible_backups_verify(server)
        server.inv("backup")  # the next run succeeds (Ops.inv raises on a non-zero exit)
    assert_mostly_interrupted(runs, "inv backup")


def _restore_interrupts(server):
    server.inv("backup")
    new = (server.rows(), server.support_files())  # what the backup holds
    delays = moments_within(["restore", "--yes"], server.ops.env, server.cfg.layout.lock)

    def move_on():  # the live state differs from the backup's: a restore has something to do
        server.sql("UPDATE catalog_catalogfile SET description = 'moved on' WHERE id = 1")
        return (server.rows(), server.support_files())

    old = move_on()
    cases = [("point", p, s) for p in RESTORE_POINTS for s in ("sigint", "sigterm")]
    cases += [("moment", i, ("sigint", "sigterm")[i % 2]) for i in range(RANDOM_RUNS)]
    rng = random.Random(20)
    runs = []
    for how, where, sig in cases:
        if how == "point":
            run = at_failpoint(["restore", "--yes"], server.ops.env, where, sig)
            assert not run.finished_first, f"{where}: {run.describe()}"
        else:
            run = at_moment(["restore", "--yes"], server.ops.env, server.cfg.layout.lock,
                            rng.uniform(*delays), sig, group=bool(where % 3))
            runs.append(run)
        _after_interrupt(server, run, [old, new])
        # the next run succeeds and leaves the backup's state
        server.inv("restore", "--yes")  # raises on a non-zero exit
        assert (server.rows(), server.support_files()) == new
        assert leftovers(server.cfg, _schema(server)) == []
        old = move_on()
    assert_mostly_interrupted(runs, "inv restore")


def test_interrupting_backup_sqlite(sqlite_server):
    with kept_answering(sqlite_server.cfg.local_url, "hst"):
        _backup_interrupts(sqlite_server)


def test_interrupting_restore_sqlite(sqlite_server):
    with kept_answering(sqlite_server.cfg.local_url, "hst"):
        _restore_interrupts(sqlite_server)


def test_interrupting_backup_mariadb(mysql_server):
    with kept_answering(mysql_server.cfg.local_url, "hst"):
        _backup_interrupts(mysql_server)


def test_interrupting_restore_mariadb(mysql_server):
    with kept_answering(mysql_server.cfg.local_url, "hst"):
        _restore_interrupts(mysql_server)


def test_a_second_ctrl_c_does_not_abandon_the_rollback(sqlite_server):
    """Ctrl-C twice during the swap: the rollback says it is finishing, and finishes."""
    server = sqlite_server
    server.inv("backup")
    server.sql("UPDATE catalog_catalogfile SET description = 'moved on' WHERE id = 1")
    old = (server.rows(), server.support_files())
    env = dict(server.ops.env, CRDSOPS_FAILPOINT="restore.swapped=sigint,restore.rollback=sigint")
    run = subprocess.run([INV, "restore", "--yes"], cwd=CHECKOUT, env=env, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=300)
    assert run.returncode == 130, run.stdout + run.stderr
    assert "finishing the rollback first" in run.stderr
    assert "failed (interrupted by SIGINT)" in run.stdout  # the reason is never empty
    assert run.stderr.strip().splitlines()[-1].startswith("error: interrupted during swapping the new state in (requests held); "
                                                          "hst.django is up as before")
    assert server.answers() and (server.rows(), server.support_files()) == old
    assert leftovers(server.cfg) == []
