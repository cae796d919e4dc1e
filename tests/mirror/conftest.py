"""Two servers on this machine: hst test (the source, reached only through SSH on
127.0.0.2) and hst dev (the destination, where `inv mirror` runs). The source's shared
latest backup is made by a real `inv backup` on the source."""

from __future__ import annotations

import contextlib

import pytest
from mariadb import MYSQL_MISSING, Account
from vms import Fleet


class Pair(Fleet):
    def __init__(self, where, extra=None, account=None):
        super().__init__(where, extra)
        self.account = account
        self.src_cfg = self.ops["test"].config("hst", "test")
        self.dst_cfg = self.ops["dev"].config("hst", "dev")

    def mirror(self, *args, timeout=300, env=None):
        ops = self.ops["dev"]
        saved = ops.env
        ops.env = dict(saved, **(env or {}))
        try:
            return ops.inv("mirror", "--obs", "hst", "--src", "test", *args, check=False, timeout=timeout)
        finally:
            ops.env = saved

    def counts(self, kind):
        from crdsops.runtime import health

        cfg = self.src_cfg if kind == "test" else self.dst_cfg
        return health.rpc(cfg.local_url, "get_catalog_counts")


def _start(p: Pair):
    src, dst = p.ops["test"], p.ops["dev"]
    src.inv("install", "--obs", "hst", "--kind", "test")
    src.inv("manage", "--", "seed_demo")
    src.inv("run")
    src.inv("backup")
    dst.inv("install", "--obs", "hst", "--kind", "dev")
    dst.inv("run")


def _stop(p: Pair):
    p.close()


@pytest.fixture
def pair(tmp_path):
    p = Pair(tmp_path)
    try:
        _start(p)
        yield p
    finally:
        _stop(p)


@contextlib.contextmanager
def _running_on_mariadb(tmp_path, prefix, databases):
    """A Pair started on a throwaway MariaDB account; ``databases(account, db)`` gives its config overrides."""
    if MYSQL_MISSING:
        pytest.skip(MYSQL_MISSING)
    from crdsops.db import mysql

    account = Account(prefix)
    account.create()
    try:
        option_file = mysql.write_option_file(tmp_path / "my.cnf", account.user, account.password)
        db = {"engine": "mysql", "option_file": str(option_file), "host": "127.0.0.1", "port": 3306}
        p = Pair(tmp_path, databases(account, db), account)
        try:
            _start(p)
            yield p
        finally:
            _stop(p)
    finally:
        account.drop()


@pytest.fixture
def mixed_pair(tmp_path):
    """The source (hst test) on MariaDB, the destination (hst dev) on SQLite: a cross-engine mirror."""
    with _running_on_mariadb(tmp_path, "mx", lambda account, db: {
            "test": {"database": dict(db, name=f"{account.database}_test")}}) as p:
        yield p


@pytest.fixture
def mysql_pair(tmp_path):
    """The same two servers, each on its own MariaDB database (one throwaway account)."""
    with _running_on_mariadb(tmp_path, "mr", lambda account, db: {
            kind: {"database": dict(db, name=f"{account.database}_{kind}")} for kind in ("test", "dev")}) as p:
        yield p
