"""django-dbbackup against a real MariaDB: round trip, and the password never on argv.

Needs MariaDB at 127.0.0.1:3306 with a passwordless root (as in CI); skipped otherwise.
"""
import os
import secrets
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from mariadb import root_sql
from serverproc import SERVER_DIR, clean_environ, manage


def mariadb_available():
    if not shutil.which("mysql") or not shutil.which("mysqldump"):
        return False
    try:
        root_sql("SELECT 1")
    except (subprocess.SubprocessError, OSError):
        return False
    return True


pytestmark = pytest.mark.skipif(not mariadb_available(), reason="MariaDB with root access at 127.0.0.1 needed")


@pytest.fixture
def mysql_server(tmp_path):
    """A throwaway schema and user (random password in a 0600 option file), production settings."""
    tag = secrets.token_hex(4)
    user, db, password = f"crdsops_t_{tag}", f"crds_srvtest_{tag}", secrets.token_urlsafe(24)
    grants = "".join(
        f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}';"
        f"GRANT ALL ON `{db}`.* TO '{user}'@'{host}';"
        f"GRANT ALL ON `test_{db}`.* TO '{user}'@'{host}';"
        for host in ("localhost", "127.0.0.1")
    )
    root_sql(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4; {grants}")
    option_file = tmp_path / "my.cnf"
    option_file.write_text(f"[client]\nuser={user}\npassword={password}\nhost=127.0.0.1\nport=3306\n")
    option_file.chmod(0o600)
    key_file = tmp_path / "secret_key"
    key_file.write_text(secrets.token_urlsafe(50))
    env = clean_environ()
    env.update(
        DJANGO_SETTINGS_MODULE="crds_server.settings.production", PYTHONPATH=str(SERVER_DIR),
        CRDS_OBSERVATORY="hst", CRDS_KIND="dev", CRDS_SERVER_URL="https://hst-crds-dev.example.invalid",
        CRDS_SERVER_ROOT=str(tmp_path), CRDS_PATH=str(tmp_path / "cache"),
        CRDS_SERVER_FILES=str(tmp_path / "server_files"), CRDS_DB_ENGINE="mysql", CRDS_DB_NAME=db,
        CRDS_DB_HOST="127.0.0.1", CRDS_DB_PORT="3306", CRDS_DB_OPTION_FILE=str(option_file),
        CRDS_STATIC_ROOT=str(tmp_path / "static"), CRDS_SECRET_KEY_FILE=str(key_file),
        CRDS_ALLOWED_HOSTS="localhost", CRDS_DBBACKUP_DIR=str(tmp_path / "dbbackup"),
    )
    try:
        yield env, password, db
    finally:
        root_sql(f"DROP DATABASE IF EXISTS `{db}`; DROP DATABASE IF EXISTS `test_{db}`;"
                 + "".join(f"DROP USER IF EXISTS '{user}'@'{host}';" for host in ("localhost", "127.0.0.1")))


def shim_client_tools(bin_dir, log):
    """mysql/mysqldump wrappers that record their argv before running the real tool."""
    bin_dir.mkdir()
    for tool in ("mysql", "mysqldump"):
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> "{log}"\nexec {shutil.which(tool)} "$@"\n')
        wrapper.chmod(0o755)


class ArgvWatcher(threading.Thread):
    """Polls every process's command line for `secret` while a command runs."""

    def __init__(self, secret):
        super().__init__(daemon=True)
        self.secret, self.seen, self.done = secret.encode(), [], threading.Event()

    def run(self):
        while not self.done.is_set():
            for pid in os.listdir("/proc"):
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if self.secret in cmdline:
                    self.seen.append(cmdline)
            self.done.wait(0.01)


def counts(env):
    import json

    return json.loads(manage(env, "catalog_counts").stdout)


def test_backup_and_restore_round_trip(mysql_server, tmp_path):
    env, password, db = mysql_server
    argv_log = tmp_path / "argv.log"
    shim_client_tools(tmp_path / "bin", argv_log)
    env = dict(env, PATH=f"{tmp_path / 'bin'}:{env['PATH']}")
    manage(env, "migrate", "--noinput", "-v0")
    manage(env, "seed_demo")
    seeded = counts(env)
    assert (seeded["references"], seeded["mappings"], seeded["contexts"]) == (4, 7, 2)

    watcher = ArgvWatcher(password)
    watcher.start()
    try:
        manage(env, "dbbackup", "--compress")
        backups = [p for p in (tmp_path / "dbbackup").iterdir() if p.name.endswith(".dump.gz")]
        assert len(backups) == 1 and backups[0].name.startswith("crds-hst.dev-")
        subprocess.run([str(tmp_path / "bin" / "mysql"), f"--defaults-extra-file={env['CRDS_DB_OPTION_FILE']}",
                        db, "-e", "DELETE FROM catalog_catalogfile; DELETE FROM catalog_contexthistory"],
                       check=True, timeout=30)
        assert counts(env)["references"] == 0
        manage(env, "dbrestore", "--noinput", "--uncompress")
    finally:
        watcher.done.set()
        watcher.join()
    assert counts(env) == seeded
    assert watcher.seen == []

    calls = argv_log.read_text().splitlines()
    dumps = [c.split() for c in calls if c.startswith("mysqldump ")]
    restores = [c.split() for c in calls if c.startswith("mysql ") and "-e" not in c.split()]
    assert len(dumps) == 1 and len(restores) == 1
    option = f"--defaults-extra-file={env['CRDS_DB_OPTION_FILE']}"
    for argv in dumps + restores:
        assert argv[1] == option
        assert not any(a.startswith(("--password", "--user", "-p")) for a in argv)
        assert password not in " ".join(argv)
    assert "--single-transaction" in dumps[0]


def test_django_suite_passes_on_mysql_with_production_settings(mysql_server):
    env, _password, db = mysql_server
    result = manage(env, "test", "crds_server", "--noinput", timeout=600)
    assert "OK" in result.stderr
    # The live schema stays untouched (no tables: it was never migrated here).
    assert root_sql(f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='{db}'").strip() == "0"
