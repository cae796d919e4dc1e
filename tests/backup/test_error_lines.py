"""A failed backup says its cause and the fix in one line, without the jobs it merely stopped.

First the real thing: a MySQL-backed server (a throwaway MariaDB account) whose option file
holds a wrong password; then the pieces of that line: the mysql clients' two error shapes,
side_by_side reporting causes only, a pipeline stage that said nothing.
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from mariadb import MYSQL_MISSING, Account
from support import Ops, deep_merge, local_overrides, make_configs

from crdsops import interrupts
from crdsops.config.model import Database
from crdsops.db import mysql
from crdsops.db.compression import stage_failure
from crdsops.errors import CrdsOpsError
from crdsops.parallel import JobsFailed, side_by_side

OTHER_JOBS = ("counts", "packages", "references", "deliveries", "pickles", "support:")


@pytest.fixture
def vm_kind_server(tmp_path):
    """hst dev on MariaDB (runserver, not started: a backup needs only the database and files)."""
    if MYSQL_MISSING:
        pytest.skip(MYSQL_MISSING)
    account = Account("pw")
    account.create()
    try:
        option_file = mysql.write_option_file(tmp_path / "my.cnf", account.user, account.password)
        overrides = deep_merge(local_overrides(tmp_path), {
            "database": {"engine": "mysql", "name": account.database, "option_file": str(option_file),
                         "host": "127.0.0.1", "port": 3306},
            "web": {"server": "runserver", "processes": 1, "threads": 1, "user": None, "group": None},
        })
        ops = Ops(tmp_path, make_configs(tmp_path, {("hst", "dev"): overrides}))
        ops.inv("install", "--obs", "hst", "--kind", "dev")
        yield ops, account, option_file
    finally:
        account.drop()


def test_a_wrong_password_is_one_line_with_the_cause_and_the_fix(vm_kind_server):
    ops, account, option_file = vm_kind_server
    cfg = ops.config("hst", "dev")
    # enough references that their listing is still running when mysqldump is refused: it is
    # stopped then (as are the archives), and must not be reported; the catalog counts, refused
    # alike, may fail first: the cause is said once for both (parallel.JobsFailed)
    for i in range(20000):
        (cfg.layout.references / f"pad_{i:05d}_drk.fits").write_bytes(b"x" * 2880)
    mysql.write_option_file(option_file, account.user, "not-" + account.password)

    result = ops.inv("backup", check=False)

    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert f"refused the login (Access denied for user '{account.user}'@" in line, line
    assert f"fix user/password in the option file {option_file} (database.option_file)" in line, line
    assert "interrupted" not in line and "SIGINT" not in line, line
    assert not re.search(r"[\w:]+: (;|$)", line), line  # no `label: ` with nothing after it
    for label in OTHER_JOBS:
        assert f"; {label}" not in line, line  # the jobs stopped because the dump failed
    private = cfg.backups.private_dir
    assert not any(p.name.startswith(".tmp-") for p in private.iterdir())  # the partial backup is gone


# --- the pieces ----------------------------------------------------------------------------

DB = Database(engine="mysql", name="crds_hst_ops", option_file="/srv/crds/my.cnf")
DENIED = "Access denied for user 'crds'@'10.0.0.5' (using password: YES)"


@pytest.mark.parametrize("stderr", [
    f"ERROR 1045 (28000): {DENIED}",                                      # mysql
    f'mysqldump: Got error: 1045: "{DENIED}" when trying to connect',     # mysqldump
])
def test_explain_advises_the_option_file_for_both_shapes_of_access_denied(stderr):
    assert str(mysql.explain(stderr, DB)) == (
        f"MySQL at 127.0.0.1:3306 refused the login ({DENIED}); "
        "fix user/password in the option file /srv/crds/my.cnf (database.option_file)")


def test_explain_reads_mysqldumps_other_errors_too():
    unknown = mysql.explain('mysqldump: Got error: 1049: "Unknown database \'crds_hst_ops\'" when selecting the '
                            "database", DB)
    assert str(unknown).startswith("MySQL database crds_hst_ops does not exist (Unknown database 'crds_hst_ops')")
    gone = mysql.explain("mysqldump: Got error: 2003: Can't connect to MySQL server on '10.0.0.9' (111) when "
                         "trying to connect", DB)
    assert str(gone).startswith("cannot reach the MySQL server at 127.0.0.1:3306 (Can't connect to MySQL server")


def test_jobs_stopped_because_one_failed_are_not_reported():
    def fails():
        raise CrdsOpsError("the cause")

    def loops():  # stops at its next check
        while True:
            interrupts.check()
            time.sleep(0.01)

    def runs_a_child():  # its process is ended by side_by_side
        proc = subprocess.run(["sleep", "30"], capture_output=True, text=True)
        raise CrdsOpsError(stage_failure("sleep", proc.returncode, proc.stderr))

    started = time.monotonic()
    with pytest.raises(JobsFailed) as caught:
        side_by_side({"loops": loops, "child": runs_a_child, "fails": lambda: (time.sleep(0.3), fails())})
    assert time.monotonic() - started < 10
    assert str(caught.value) == "fails: the cause"
    assert [label for label, _ in caught.value.failures] == ["fails"]
    assert sorted(caught.value.stopped) == ["child", "loops"]
    assert not interrupts.cancelled.is_set()


def test_a_stopped_job_says_so_when_it_is_described():
    interrupts.cancelled.set()
    try:
        with pytest.raises(interrupts.Stopped) as caught:
            interrupts.check()
    finally:
        interrupts.cancelled.clear()
    assert interrupts.describe(caught.value) == "stopped because another job failed"
    assert isinstance(caught.value, interrupts.Interrupted)  # a job's clean-up runs as for a signal


@pytest.mark.parametrize("code, stderr, expected", [
    (-15, "", "compressor was killed by SIGTERM (no message)"),
    (2, "", "tar exited 2 (no message)"),
    (2, "tar: ./x: Cannot open: Permission denied\ntar: Exiting with failure status\n",
     "tar exited 2: tar: Exiting with failure status"),
])
def test_a_stage_that_said_nothing_is_never_an_empty_label(code, stderr, expected):
    label = expected.split()[0]
    assert stage_failure(label, code, stderr) == expected
