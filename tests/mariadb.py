"""A throwaway MariaDB account for tests and benchmarks, set up through root at 127.0.0.1:3306.

Shared by tests/backup, tests/mirror, tests/vm and bench/ under a name of its own: ``from
conftest import`` picks whichever conftest.py pytest loaded last when several directories run
together. Benchmarks import it too, where pytest may not be installed.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess

ROOT_SQL = ["mysql", "-uroot", "-h127.0.0.1", "-P3306", "--batch", "--skip-column-names"]


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
try:
    import pytest
except ImportError:  # a benchmark, with the stack's main category only
    requires_mysql = None
else:
    requires_mysql = pytest.mark.skipif(MYSQL_MISSING is not None, reason=MYSQL_MISSING or "")


class Account:
    """A throwaway account (random password) with rights on ``<database>%`` only: the live
    schema(s) and their ``_crdsops_new``/``_old`` staging twins."""

    def __init__(self, prefix: str = "bk"):
        tag = secrets.token_hex(4)
        self.user = f"crdsops_{prefix}_{tag}"
        self.database = f"crds_{prefix}_{tag}"
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
