"""Fixtures for backup/restore tests: a running SQLite server, a running MySQL one.

The MySQL server uses a throwaway MariaDB account (random password, 0600 option file)
with rights on ``crds_bk_<tag>%`` only (the live schema and its ``_crdsops_new``/``_old``
staging twins); the databases and the account are dropped afterwards, whatever happened.
Skipped when there is no MariaDB with a passwordless root at 127.0.0.1:3306.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from support import Ops, deep_merge, local_overrides, make_configs

ROOT_SQL = ["mysql", "-uroot", "-h127.0.0.1", "-P3306", "--batch", "--skip-column-names"]
TABLES = ("catalog_catalogfile", "catalog_contexthistory")


def root_sql(sql: str) -> str:
    return subprocess.run(ROOT_SQL, input=sql, capture_output=True, text=True, timeout=60, check=True).stdout


def _mysql_missing() -> str | None:
    if not shutil.which("mysql") or not shutil.which("mysqldump"):
        return "mysql/mysqldump clients needed (apt-get install mariadb-client)"
    try:
        root_sql("SELECT 1;")
    except (subprocess.SubprocessError, OSError):
        return "MariaDB with a passwordless root at 127.0.0.1:3306 needed"
    return None


MYSQL_MISSING = _mysql_missing()
requires_mysql = pytest.mark.skipif(MYSQL_MISSING is not None, reason=MYSQL_MISSING or "")


class Account:
    def __init__(self):
        tag = secrets.token_hex(4)
        self.user = f"crdsops_bk_{tag}"
        self.database = f"crds_bk_{tag}"
        self.password = secrets.token_urlsafe(18)

    def create(self) -> None:
        pattern = self.database.replace("_", "\\_") + "%"
        root_sql("".join(
            f"CREATE USER '{self.user}'@'{h}' IDENTIFIED BY '{self.password}';"
            f"GRANT ALL ON `{pattern}`.* TO '{self.user}'@'{h}';" for h in ("localhost", "127.0.0.1")))

    def drop(self) -> None:
        names = root_sql(f"SHOW DATABASES LIKE '{self.database.replace('_', chr(92) + '_')}%';").split()
        root_sql("".join(f"DROP DATABASE IF EXISTS `{n}`;" for n in names)
                 + "".join(f"DROP USER IF EXISTS '{self.user}'@'{h}';" for h in ("localhost", "127.0.0.1")))


class Server:
    """One installed, running server and ways to look at its state."""

    def __init__(self, ops: Ops, obs: str, kind: str, account: Account | None = None):
        self.ops, self.obs, self.kind, self.account = ops, obs, kind, account
        self.cfg = ops.config(obs, kind)

    def inv(self, *args, env=None, **kwargs):
        if env is None:
            return self.ops.inv(*args, **kwargs)
        saved, self.ops.env = self.ops.env, env
        try:
            return self.ops.inv(*args, **kwargs)
        finally:
            self.ops.env = saved

    def rows(self) -> dict[str, list]:
        if self.account:
            return {t: root_sql(f"SELECT * FROM `{self.cfg.database.name}`.`{t}` ORDER BY id;").splitlines()
                    for t in TABLES}
        con = sqlite3.connect(self.cfg.database.name)
        try:
            return {t: con.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}
        finally:
            con.close()

    def sql(self, statement: str) -> None:
        if self.account:
            root_sql(f"USE `{self.cfg.database.name}`; {statement};")
            return
        con = sqlite3.connect(self.cfg.database.name)
        try:
            con.execute(statement)
            con.commit()
        finally:
            con.close()

    def support_files(self) -> dict[str, str]:
        from crdsops.backup import support_dirs

        out = {}
        for label, base in support_dirs(self.cfg).items():
            for path in sorted(base.rglob("*")):
                if path.is_file():
                    out[f"{label}/{path.relative_to(base)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def counts(self) -> dict:
        return json.loads(self.inv("manage", "--", "catalog_counts").stdout.strip().splitlines()[-1])

    def pid(self) -> int | None:
        from crdsops import service

        return service.running_pid(self.cfg)

    def answers(self) -> bool:
        from crdsops import health

        return health.answers(self.cfg.local_url)

    def private_backups(self) -> list[Path]:
        base = self.cfg.backups.private_dir
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.exists() else []

    def shared(self) -> Path:
        return self.cfg.backups.shared_dir / self.cfg.name


@pytest.fixture
def sqlite_server(tmp_path):
    configs = make_configs(tmp_path, {("hst", "django"): local_overrides(tmp_path)})
    ops = Ops(tmp_path, configs)
    ops.inv("install", "--obs", "hst", "--kind", "django")
    ops.inv("run")
    try:
        yield Server(ops, "hst", "django")
    finally:
        ops.inv("stop", check=False)


@pytest.fixture
def mysql_server(tmp_path):
    if MYSQL_MISSING:
        pytest.skip(MYSQL_MISSING)
    account = Account()
    account.create()
    try:
        from crdsops import mysql

        option_file = mysql.write_option_file(tmp_path / "my.cnf", account.user, account.password)
        overrides = deep_merge(local_overrides(tmp_path), {
            "database": {"engine": "mysql", "name": account.database, "option_file": str(option_file),
                         "host": "127.0.0.1", "port": 3306},
            "web": {"server": "runserver", "processes": 1, "threads": 1, "user": None, "group": None},
        })
        ops = Ops(tmp_path, make_configs(tmp_path, {("hst", "dev"): overrides}))
        ops.inv("install", "--obs", "hst", "--kind", "dev")
        ops.inv("manage", "--", "seed_demo")
        ops.inv("run")
        try:
            yield Server(ops, "hst", "dev", account)
        finally:
            ops.inv("stop", check=False)
    finally:
        account.drop()
