"""Point-in-time restore: binlog coordinates in backups, the binlog archive, `inv restore --to-time`.

One module-wide hst dev (runserver) on a private MariaDB with a binary log (tests/pitrdb.py).
Rows are written into the server's own catalog table before, during and after a backup, at
known times; the tests run in file order on that history.
"""

from __future__ import annotations

import datetime
import json
import threading
import time

import pytest
from pitrdb import PrivateMariadb, missing
from support import Ops, deep_merge, local_overrides, make_configs

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")

ROW = ("INSERT INTO catalog_catalogfile (name, observatory, filekind, instrument, reftype, size, sha1sum, state, "
       "blacklisted, rejected, delivery_date, description) VALUES ('{name}', 'hst', 'reference', 'acs', 'darkfile', "
       "1, '{sha}', 'delivered', 0, 0, NOW(), 'pitr test');")


class History:
    """The server, its database, and which marker rows were written when."""

    def __init__(self, ops: Ops, db: PrivateMariadb):
        self.ops, self.db, self.cfg = ops, db, ops.config("hst", "dev")
        self.written: list[tuple[str, datetime.datetime]] = []

    def write(self, name: str) -> datetime.datetime:
        self.db.sql(ROW.format(name=name, sha="0" * 40))
        at = datetime.datetime.now(datetime.UTC)
        self.written.append((name, at))
        return at

    def markers(self) -> set[str]:
        return set(self.db.sql("SELECT name FROM catalog_catalogfile WHERE description = 'pitr test';").split())

    def archive_caught_up(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.ops.inv("binlog-archive", "--status", check=False).stdout
            if "up to date" in out:
                return
            time.sleep(0.3)
        raise AssertionError(f"the archive did not catch up: {out}")


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    where = tmp_path_factory.mktemp("pitr")
    db = PrivateMariadb(where / "mariadb").start()
    try:
        db.create_account()
        from crdsops.db import mysql

        option_file = mysql.write_option_file(where / "my.cnf", db.user, db.password)
        overrides = deep_merge(local_overrides(where), {
            "database": {"engine": "mysql", "name": db.database, "option_file": str(option_file),
                         "host": "127.0.0.1", "port": db.port},
            "web": {"server": "runserver", "processes": 1, "threads": 1, "user": None, "group": None},
        })
        ops = Ops(where, make_configs(where, {("hst", "dev"): overrides}))
        ops.inv("install", "--obs", "hst", "--kind", "dev")
        ops.inv("manage", "--", "seed_demo")
        ops.inv("run")
        try:
            yield History(ops, db)
        finally:
            ops.inv("binlog-archive", "--stop", check=False)
            ops.inv("stop", check=False)
    finally:
        db.stop()


def test_a_backup_records_its_binlog_coordinates_while_rows_are_written(history):
    history.write("before-backup")
    history.ops.inv("binlog-archive")
    stop = threading.Event()

    def writer():
        n = 0
        while not stop.is_set():
            history.write(f"during-backup-{n}")
            n += 1
            time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        history.ops.inv("backup")
    finally:
        stop.set()
        thread.join()
    backups = json.loads(history.ops.inv("backups", "--json").stdout)["backups"]
    newest = next(b for b in backups if b["where"] == "private")
    manifest = json.loads((history.cfg.backups.private_dir / newest["name"] / "manifest.json").read_text())
    assert manifest["database"]["binlog"]["file"].startswith("binlog.")
    assert manifest["database"]["binlog"]["position"] > 0
    assert len(history.written) > 3, "no row was written while the backup ran"
    history.archive_caught_up()
    status = history.ops.inv("status", check=False).stdout
    assert "pitr:" in status and "binlog archive running, up to date" in status, status


def test_restore_to_a_time_between_two_writes_keeps_every_row_before_and_none_after(history):
    history.write("after-backup-1")
    time.sleep(1.2)  # binlog times have whole seconds: the cut falls in a second of its own
    cut = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    time.sleep(1.2)
    history.write("after-cut-1")
    history.db.root_sql("FLUSH BINARY LOGS;")  # the replay spans two files
    history.write("after-cut-2")
    history.archive_caught_up()
    before = {name for name, at in history.written if at < cut}
    after = {name for name, at in history.written if at > cut}
    when = cut.strftime("%Y-%m-%d %H:%M:%S")
    plan = history.ops.inv("restore", "--to-time", when, "--dry-run").stdout
    assert "replay into the staging schema" in plan and "events of binlog." in plan, plan
    result = history.ops.inv("restore", "--to-time", when, "--yes", timeout=600)
    assert "healthy" in result.stdout, result.stdout
    present = history.markers()
    assert before <= present, f"rows written before {when} are missing: {sorted(before - present)}"
    assert not after & present, f"rows written after {when} came back: {sorted(after & present)}"


def test_a_time_after_the_archive_or_before_every_backup_is_refused(history):
    history.ops.inv("backup")  # after the restore before: a replay can start from it
    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    result = history.ops.inv("restore", "--to-time", later, "--yes", check=False)
    assert result.returncode == 1 and "after the archive's end" in result.stderr, result.stderr
    result = history.ops.inv("restore", "--to-time", "2001-01-01 00:00:00", "--yes", check=False)
    assert result.returncode == 1 and "no backup of hst.dev was made before" in result.stderr, result.stderr


def test_a_gap_in_the_archive_is_refused(history):
    history.db.root_sql("FLUSH BINARY LOGS;")
    history.write("gap-1")
    history.db.root_sql("FLUSH BINARY LOGS;")
    history.write("gap-2")
    history.archive_caught_up()
    files = sorted(p for p in (history.cfg.backups.private_dir / "binlogs").glob("binlog.0*"))
    assert len(files) >= 3, files
    middle = files[-2]  # after the newest backup's file: the replay needs it
    aside = middle.with_name("aside")
    middle.rename(aside)
    try:
        result = history.ops.inv("restore", "--to-time", "latest", "--yes", check=False)
        assert result.returncode == 1 and "gap" in result.stderr and middle.name[-6:] in result.stderr, result.stderr
    finally:
        aside.rename(middle)


def test_a_replay_across_a_restore_is_refused(history):
    backups = json.loads(history.ops.inv("backups", "--json").stdout)["backups"]
    first = [b["name"] for b in backups if b["where"] == "private" and b["purpose"] == "backup"][-1]
    result = history.ops.inv("restore", "--from", first, "--to-time", "latest", "--yes", check=False)
    assert result.returncode == 1 and "replaced the database between the backup" in result.stderr, result.stderr


def test_a_killed_archive_is_restarted_and_loses_no_event(history):
    import os
    import signal

    pid = int((history.cfg.root / "run" / "binlog-archive.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    history.write("while-dead-1")
    history.write("while-dead-2")
    out = history.ops.inv("binlog-archive").stdout
    assert "started" in out, out
    history.archive_caught_up()
    history.ops.inv("restore", "--to-time", "latest", "--yes", timeout=600)
    assert {"while-dead-1", "while-dead-2", "gap-1", "gap-2"} <= history.markers()


def test_without_a_binary_log_backups_work_and_status_says_why_there_is_no_pitr(tmp_path):
    """The machine's MariaDB (log_bin off, as most are): no coordinates, a status line saying so."""
    from mariadb import MYSQL_MISSING, Account, root_sql

    if MYSQL_MISSING or root_sql("SELECT @@GLOBAL.log_bin;").strip() != "0":
        pytest.skip(MYSQL_MISSING or "the machine's MariaDB has a binary log")
    account = Account("nb")
    account.create()
    try:
        from crdsops.db import mysql

        option_file = mysql.write_option_file(tmp_path / "my.cnf", account.user, account.password)
        ops = Ops(tmp_path, make_configs(tmp_path, {("hst", "dev"): deep_merge(local_overrides(tmp_path), {
            "database": {"engine": "mysql", "name": account.database, "option_file": str(option_file),
                         "host": "127.0.0.1", "port": 3306},
            "web": {"server": "runserver", "processes": 1, "threads": 1, "user": None, "group": None}})}))
        ops.inv("install", "--obs", "hst", "--kind", "dev")
        ops.inv("backup")
        cfg = ops.config("hst", "dev")
        made = next(p for p in cfg.backups.private_dir.iterdir() if (p / "manifest.json").exists())
        assert json.loads((made / "manifest.json").read_text())["database"]["binlog"] is None
        status = ops.inv("status", check=False).stdout
        assert "pitr:" in status and "log_bin OFF" in status, status
        refused = ops.inv("restore", "--to-time", "latest", "--yes", check=False)
        assert refused.returncode == 1 and "no point-in-time restore" in refused.stderr, refused.stderr
    finally:
        account.drop()


def test_the_keep_alive_cron_line_restarts_a_dead_archive_from_a_bare_shell(history, real_crontab):
    import os
    import signal
    import subprocess

    from crontabs import crontab_lines

    history.ops.inv("schedule", "--binlog-archive")
    line = next(row for row in crontab_lines() if "crdsops binlog-archive hst.dev" in row)
    assert line.startswith("*/5 * * * * ") and "CRDSOPS_CRON" not in line, line  # never paused
    pid = int((history.cfg.root / "run" / "binlog-archive.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    subprocess.run(["/bin/sh", "-c", line.split(" ", 5)[5]], check=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert "running (pid" in history.ops.inv("binlog-archive", "--status").stdout
    history.ops.inv("schedule", "--binlog-archive", "--remove")


def test_install_names_the_grant_a_dba_must_give_when_one_is_missing(history):
    db = history.db
    db.root_sql(f"REVOKE BINLOG REPLAY ON *.* FROM '{db.user}'@'127.0.0.1';")
    try:
        result = history.ops.inv("install", "--obs", "hst", "--kind", "dev")
        assert f"GRANT BINLOG REPLAY ON *.* TO '{db.user}'@'127.0.0.1'" in result.stderr, result.stderr
        assert "REPLICATION SLAVE" not in result.stderr.split("GRANT")[-1], "it asks for a grant it has"
    finally:
        db.root_sql(f"GRANT BINLOG REPLAY ON *.* TO '{db.user}'@'127.0.0.1';")
    assert "GRANT" not in history.ops.inv("install", "--obs", "hst", "--kind", "dev").stderr


def test_closed_binlogs_are_copied_off_site_encrypted_and_come_back_whole(history, tmp_path):
    import shutil
    import subprocess

    if not (shutil.which("rclone") and shutil.which("age")):
        pytest.skip("rclone and age needed (system-packages.txt)")
    store, conf, key = tmp_path / "store", tmp_path / "rclone.conf", tmp_path / "offsite.key"
    conf.write_text("[store]\ntype = local\n")
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True).stdout.strip()
    configs = history.ops.configs
    make_configs(configs.parent, {("hst", "dev"): {"backups": {"offsite": {
        "remote": f"store:{store}", "rclone_config": str(conf), "recipients": [public]}}}})
    try:
        history.db.root_sql("FLUSH BINARY LOGS;")
        history.write("offsite-1")
        history.archive_caught_up()
        out = history.ops.inv("binlog-archive").stdout
        assert "copied off-site" in out, out
        archive = history.cfg.backups.private_dir / "binlogs"
        closed = sorted(line.split()[1] for line in (archive / "SHA256SUMS").read_text().splitlines())
        sent = sorted(p.name.removesuffix(".tar.age") for p in (store / "hst.dev.binlogs").iterdir())
        assert sent == closed, (sent, closed)
        last = closed[-1]
        back = tmp_path / "back"
        back.mkdir()
        age = subprocess.run(["age", "-d", "-i", str(key), str(store / "hst.dev.binlogs" / f"{last}.tar.age")],
                             check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(back)], input=age.stdout, check=True)
        assert (back / last).read_bytes() == (archive / last).read_bytes()
        assert "copied off-site" not in history.ops.inv("binlog-archive").stdout, "sent twice"
    finally:
        make_configs(configs.parent, {("hst", "dev"): {"backups": {"offsite": {"remote": None, "rclone_config": None,
                                                                               "recipients": []}}}})
