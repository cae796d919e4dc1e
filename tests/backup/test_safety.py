"""What a backup or a restore must never do: leave a half backup, lose the shared latest,
restore a tampered or foreign backup, leave a server down or on a broken state, show a
password to `ps`."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from mariadb import requires_mysql, root_sql

from crdsops.data import manifest


def _state(server):
    shared = server.shared()
    return (os.readlink(shared) if shared.is_symlink() else None,
            (shared / "manifest.json").read_bytes() if shared.exists() else None)


@pytest.mark.parametrize("point", ["backup.started", "backup.dumped", "backup.manifest",
                                   "backup.renamed", "backup.shared_copied"])
def test_sigkill_leaves_no_partial_backup_and_the_shared_latest_as_it_was(sqlite_server, point):
    server = sqlite_server
    server.inv("backup")
    before_shared = _state(server)
    before = set(server.private_backups())
    env = dict(server.ops.env, CRDSOPS_FAILPOINT=f"{point}=kill")
    killed = server.inv("backup", check=False, env=env)
    assert killed.returncode == -9, killed
    assert _state(server) == before_shared  # shared latest untouched
    for path in server.private_backups():  # whatever is visible is complete
        assert manifest.verify(path, deep=True) == [], path
    if point in ("backup.started", "backup.dumped", "backup.manifest"):
        assert set(server.private_backups()) == before
    # the next run takes over the dead run's lock, cleans its leftovers and succeeds
    again = server.inv("backup")
    assert "warning: took over a stale lock" in again.stderr
    assert _state(server) != before_shared
    assert manifest.verify(server.shared(), deep=True) == []
    leftovers = [p for p in server.cfg.backups.private_dir.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_sigkill_at_random_moments(sqlite_server):
    """Kill real runs from outside after various delays; every survivor must verify."""
    import signal
    import subprocess

    from support import CHECKOUT, INV

    server = sqlite_server
    server.inv("backup")
    for delay in (0.05, 0.2, 0.4, 0.6, 0.8):
        proc = subprocess.Popen([INV, "backup"], cwd=CHECKOUT, env=server.ops.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in server.private_backups():
            assert manifest.verify(path) == [], path
        assert manifest.verify(server.shared()) == []
    server.inv("backup")


def _tamper_and_refuse(server, tamper):
    server.inv("backup")
    target = Path(os.path.realpath(server.shared()))
    tamper(target)
    pid, rows, n = server.pid(), server.rows(), len(server.private_backups())
    result = server.inv("restore", "--yes", check=False)
    assert result.returncode == 1
    assert "refusing backup" in result.stderr and "nothing was changed" in result.stderr
    assert server.pid() == pid and server.answers()  # never stopped
    assert server.rows() == rows
    assert len(server.private_backups()) == n  # not even a safety backup was taken
    return result


def test_flipped_byte_is_refused(sqlite_server):
    def flip(target):
        dump = next(target.glob("database.*"))
        data = bytearray(dump.read_bytes())
        data[len(data) // 2] ^= 0x01
        dump.write_bytes(bytes(data))
    result = _tamper_and_refuse(sqlite_server, flip)
    assert "sha256" in result.stderr


def test_missing_file_is_refused(sqlite_server):
    result = _tamper_and_refuse(sqlite_server, lambda t: (t / "support" / "catalogs.tar.zst").unlink())
    assert "missing" in result.stderr


def test_other_observatorys_manifest_is_refused(sqlite_server):
    def relabel(target):
        path = target / "manifest.json"
        data = json.loads(path.read_text())
        data["server"]["observatory"] = "jwst"
        path.write_text(json.dumps(data))
    result = _tamper_and_refuse(sqlite_server, relabel)
    assert "jwst" in result.stderr


def test_failed_health_check_rolls_back(sqlite_server):
    server = sqlite_server
    server.inv("backup")
    server.sql("UPDATE catalog_catalogfile SET description = 'newer state' WHERE id = 1")
    server.sql("DELETE FROM catalog_catalogfile WHERE id = 2")
    rows, files, pid = server.rows(), server.support_files(), server.pid()
    env = dict(server.ops.env, CRDSOPS_FAILPOINT="restore.health=fail")
    result = server.inv("restore", "--yes", check=False, env=env)
    assert result.returncode == 1
    assert "rolled back" in result.stderr and "serves its previous state again" in result.stdout
    assert server.pid() == pid and server.answers()  # never stopped: swapped and swapped back under it
    assert server.rows() == rows and server.support_files() == files
    assert not Path(server.cfg.database.name + ".crdsops-old").exists()


@requires_mysql
def test_mysql_failed_health_check_rolls_back(mysql_server):
    server = mysql_server
    server.inv("backup")
    server.sql("DELETE FROM catalog_catalogfile WHERE id = 2")
    rows = server.rows()
    env = dict(server.ops.env, CRDSOPS_FAILPOINT="restore.health=fail")
    result = server.inv("restore", "--yes", check=False, env=env)
    assert result.returncode == 1 and "rolled back" in result.stderr
    assert server.answers() and server.rows() == rows


@requires_mysql
def test_a_staging_the_account_may_not_make_stops_before_the_swap_and_leaves_nothing(mysql_server):
    """The account has rights on the live schema only: the staging fails; every staged part goes, and the
    one error line names that cause and the GRANT that fixes it, not a clean-up step's refusal."""
    server = mysql_server
    server.inv("backup")
    account, cfg = server.account, server.cfg
    rows, files = server.rows(), server.support_files()
    pattern = account.database.replace("_", "\\_") + "%"
    root_sql("".join(f"REVOKE ALL ON `{pattern}`.* FROM '{account.user}'@'{h}';"
                     f"GRANT ALL ON `{account.database}`.* TO '{account.user}'@'{h}';"
                     for h in ("localhost", "127.0.0.1")))
    result = server.inv("restore", "--yes", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert line.startswith(f"error: restore of {cfg.name} stopped before the swap (database staged: ")
    assert f"to database '{account.database}_crdsops_new'" in line and "crdsops\\_%" in line, line
    assert line.endswith("nothing was changed, the server state is as it was"), line
    assert "could not remove" not in result.stderr and "stopped because another job failed" not in line
    from crdsops.data.backup import support_dirs

    assert [p for d in support_dirs(cfg).values() for p in d.parent.glob("*.crdsops-new")] == []
    assert not cfg.layout.server_info_warm.exists()
    assert root_sql(f"SHOW DATABASES LIKE '{account.database.replace('_', chr(92) + '_')}\\_crdsops%';") == ""
    assert server.answers() and server.rows() == rows and server.support_files() == files


@requires_mysql
def test_no_password_on_any_command_line(mysql_server):
    server = mysql_server
    secret = server.account.password.encode()
    seen, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        cmdline = Path(entry.path, "cmdline").read_bytes()
                    except OSError:
                        continue
                    if cmdline:
                        seen.append(cmdline)
                        if secret in cmdline:
                            stop.set()
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        server.inv("backup")
        server.inv("restore", "--yes")
    finally:
        stop.set()
        sampler.join()
    assert not [c for c in seen if secret in c], "the database password appeared on a command line"
    assert any(b"mysqldump" in c for c in seen), "the sampler never saw mysqldump run"
    assert any(b"--defaults-extra-file" in c for c in seen)
