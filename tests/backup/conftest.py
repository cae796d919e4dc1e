"""Fixtures for backup/restore tests: a running SQLite server, a running MySQL one.

The MySQL server uses a throwaway MariaDB account (tests/mariadb.py); the databases and
the account are dropped afterwards, whatever happened. Skipped when there is no MariaDB
with a passwordless root at 127.0.0.1:3306.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from crontabs import kept_crontab
from mariadb import MYSQL_MISSING, Account, requires_mysql, root_sql  # noqa: F401 - re-exported
from support import Ops, deep_merge, local_overrides, make_configs

TABLES = ("catalog_catalogfile", "catalog_contexthistory")


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
        from crdsops.data.backup import support_dirs

        out = {}
        for label, base in support_dirs(self.cfg).items():
            for path in sorted(base.rglob("*")):
                if path.is_file():
                    out[f"{label}/{path.relative_to(base)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def counts(self) -> dict:
        return json.loads(self.inv("manage", "--", "catalog_counts").stdout.strip().splitlines()[-1])

    def pid(self) -> int | None:
        from crdsops.runtime import service

        return service.running_pid(self.cfg)

    def answers(self) -> bool:
        from crdsops.runtime import health

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
        from crdsops.db import mysql

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


@pytest.fixture
def real_crontab():
    """The user's crontab as it was, put back afterwards whatever the test did."""
    with kept_crontab():
        yield
