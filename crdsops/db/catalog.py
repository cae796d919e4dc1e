"""The server's catalog as the cache checks read it: one record per file of an observatory.

Read straight from the database, read-only and without Django (``inv check-cache`` over
10^6 rows must cost about what listing the directory costs): SQLite through the standard
library in ``mode=ro``, MySQL through the ``mysql`` client with the server's option file
(``crdsops.db.mysql``), tab-separated rows.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError

TABLE = "catalog_catalogfile"
COLUMNS = "name, filekind, size, sha1sum, rejected, blacklisted"
TREES = {"reference": "references", "mapping": "mappings"}  # filekind -> cache tree


class CatalogFile(NamedTuple):
    """One row (a tuple: 10^6 of them are made in well under a second)."""

    name: str
    filekind: str  # reference | mapping
    size: int
    sha1: str
    rejected: bool = False
    blacklisted: bool = False

    @property
    def tree(self) -> str:
        """The cache tree that holds it: ``references`` or ``mappings``."""
        return TREES.get(self.filekind, "references")


def files(config: ServerConfig) -> list[CatalogFile]:
    """Every catalog row of the server's observatory (references and mappings)."""
    if config.database.is_mysql:
        return _mysql(config)
    return _sqlite(config)


def _sqlite(config: ServerConfig) -> list[CatalogFile]:
    path = config.database.name
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise CrdsOpsError(f"cannot open the catalog database {path} ({err}); is {config.name} installed?") from None
    try:
        rows = con.execute(f"SELECT {COLUMNS} FROM {TABLE} WHERE observatory = ?", (config.observatory,)).fetchall()
    except sqlite3.Error as err:
        raise CrdsOpsError(f"cannot read the catalog in {path} ({err}); run `inv install` to migrate it") from None
    finally:
        con.close()
    return list(map(CatalogFile._make, rows))  # size is an INTEGER column; the flags are 0/1


def _mysql(config: ServerConfig) -> list[CatalogFile]:
    from crdsops.db import mysql

    obs = config.observatory
    if not obs.isalnum():
        raise CrdsOpsError(f"observatory {obs!r} is not a plain name")
    out = mysql.run_sql(config, f"SELECT {COLUMNS} FROM {TABLE} WHERE observatory = '{obs}';",
                        database=config.database.name, timeout=600)
    found = []
    for line in out.splitlines():  # --batch --skip-column-names: rows only, tab-separated
        parts = line.split("\t")
        if len(parts) == 6:
            found.append(CatalogFile(parts[0], parts[1], int(parts[2]), parts[3], parts[4] == "1", parts[5] == "1"))
    return found
