"""The server's catalog as the cache checks read it: one record per file of an observatory.

Read straight from the database, read-only and without Django (``inv check-cache`` over
10^6 rows must cost about what listing the directory costs): SQLite through the standard
library in ``mode=ro``, MySQL through the ``mysql`` client with the server's option file
(``crdsops.db.mysql``), tab-separated rows.

``database`` reads another database of the same server than the live one: a restore checks the
cache against the catalog it staged, before the swap.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.records import Record

TABLE = "catalog_catalogfile"
COLUMNS = "name, filekind, size, sha1sum, rejected, blacklisted"
TREES = {"reference": "references", "mapping": "mappings"}  # filekind -> cache tree


@dataclass(frozen=True)
class CatalogCounts(Record):
    """The catalog in four numbers, as the server counts it (JSON-RPC ``get_catalog_counts``,
    ``manage.py catalog_counts``), and who answered (``observatory``, ``kind``)."""

    references: int | None = None
    mappings: int | None = None
    contexts: int | None = None
    operational_context: str | None = None
    observatory: str | None = None
    kind: str | None = None

    COMPARED = ("references", "mappings", "contexts", "operational_context")

    @property
    def server(self) -> str:
        return f"{self.observatory}.{self.kind}"

    def differences(self, other: CatalogCounts, fields: tuple[str, ...] = COMPARED) -> list[tuple[str, object, object]]:
        """(field, mine, theirs) for each compared field that differs."""
        return [(name, getattr(self, name), getattr(other, name)) for name in fields
                if getattr(self, name) != getattr(other, name)]

    def describe(self) -> str:
        return f"{self.references} references, {self.mappings} mappings, context {self.operational_context}"

    @staticmethod
    def label(field: str) -> str:
        """A field's name in a sentence (``operational_context`` is the context)."""
        return "context" if field == "operational_context" else field


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


FILTERS = {None: "", "mapping": " AND filekind = 'mapping'", "reference": " AND filekind = 'reference'",
           "flagged": " AND (rejected OR blacklisted)"}


def files(config: ServerConfig, only: str | None = None, database: str | None = None) -> list[CatalogFile]:
    """The catalog rows of the server's observatory: all, or ``only`` mapping, reference or flagged ones."""
    rows = _query(config, f"SELECT {COLUMNS} FROM {TABLE} WHERE observatory = %s{FILTERS[only]}", database)
    if config.database.is_mysql:
        n, k, s, h, r, b = _columns(rows, 6)
        return list(map(CatalogFile, n, k, map(int, s), h, map("1".__eq__, r), map("1".__eq__, b)))
    return list(map(CatalogFile._make, rows))  # size is an INTEGER column; the flags are 0/1


class TreeSizes:
    """The catalog's files of one cache tree as quick mode compares them with find's listing.

    ``keys``: one ``name/size`` entry (bytes: the name's file-system encoding, the size in
    decimal) per file, the form ``find -printf '%f/%s'`` prints, so that a tree matching the
    catalog is decided by one set comparison in C; ``sizes``: ``{name: size}``, built from the
    keys only when asked (a tree that differs, whose problems are then named one by one).
    """

    def __init__(self, keys: set[bytes] | None = None, sizes: dict[str, int] | None = None):
        if keys is None:
            keys = {f"{name}/{size}".encode(errors="surrogateescape") for name, size in (sizes or {}).items()}
        self.keys = keys
        self._sizes = sizes

    @property
    def sizes(self) -> dict[str, int]:
        if self._sizes is None:  # the name is what precedes the last "/": a size has none
            self._sizes = {os.fsdecode(name): int(size) for name, _, size in (k.rpartition(b"/") for k in self.keys)}
        return self._sizes

    def lists(self, name: str, size: int) -> bool:
        """Whether the catalog has ``name`` in this tree with this size."""
        return f"{name}/{size}".encode(errors="surrogateescape") in self.keys

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class QuickCatalog:
    """The catalog as quick mode reads it: each tree's ``TreeSizes``, and the rejected or blacklisted files
    (``flagged``; their ``sha1`` is not read: quick mode only notes them)."""

    trees: dict[str, TreeSizes]
    flagged: list[CatalogFile]


# What one pass over a tree's rows gives quick mode (SQLite): how many rows, their ``name/size``
# keys joined with NULs, and the flagged ones as ``name/size/RB`` (R and B: 1 or 0) joined the same way.
_QUICK = ("SELECT count(*), CAST(group_concat(name || '/' || size, char(0)) AS BLOB), "
          "group_concat(CASE WHEN rejected OR blacklisted THEN name || '/' || size || '/' "
          "|| (ifnull(rejected, 0) <> 0) || (ifnull(blacklisted, 0) <> 0) END, char(0)) "
          "FROM {table} {how} WHERE observatory = %s AND filekind = '{kind}'")
# References are most of a catalog: the table read in order costs less than the index walk with a
# row lookup per file (0.08 s against 0.14 s of CPU for 200,000 rows). The few mappings: as SQLite plans.
_HOW = {"reference": "NOT INDEXED", "mapping": ""}


def for_quick_check(config: ServerConfig, database: str | None = None) -> QuickCatalog:
    """What quick mode compares with the listing: one read per tree, off the critical path (find lists meanwhile).

    SQLite joins each row's ``name/size`` (NUL-separated) in C, one string per tree, the flagged
    rows in the same pass; the mysql client prints one ``name/size`` a line (``--batch`` escapes a
    newline inside a value) and the flagged rows are a query of their own. Rows the join cannot
    carry (a NULL, a NUL in a name) are read as rows instead, so the keys say what the catalog says.
    """
    if config.database.is_mysql:
        trees = {}
        for kind, tree in TREES.items():
            sql = f"SELECT CONCAT(name, '/', size) FROM {TABLE} WHERE observatory = %s AND filekind = '{kind}'"
            keys = _query(config, sql, database).encode(errors="surrogateescape").split(b"\n")
            if keys[-1] == b"":
                keys.pop()
            trees[tree] = TreeSizes(set(keys))
        return QuickCatalog(trees, files(config, "flagged", database))
    trees, flagged = {}, []
    for kind, tree in TREES.items():
        sql = _QUICK.format(table=TABLE, how=_HOW[kind], kind=kind)
        [(count, joined, marked)] = _query(config, sql, database)
        keys = set(joined.split(b"\0")) if joined else set()
        rows = [entry.rsplit("/", 2) for entry in marked.split("\0")] if marked else []
        # one NUL between each two rows, each its own key: no name of the tree (flagged ones included)
        # holds a NUL, no row was NULL
        exact = len(keys) == count and (joined or b"").count(b"\0") == max(0, count - 1)
        if not exact or any(len(row) != 3 for row in rows):
            where = f"WHERE observatory = %s AND filekind = '{kind}'"
            trees[tree] = TreeSizes(sizes=dict(_query(config, f"SELECT name, size FROM {TABLE} {where}", database)))
            flagged += [row for row in files(config, "flagged", database) if row.filekind == kind]
            continue
        trees[tree] = TreeSizes(keys)
        flagged += [CatalogFile(name, kind, int(size), "", flags[0] == "1", flags[1] == "1")
                    for name, size, flags in rows]
    return QuickCatalog(trees, flagged)


# Each file count is a range of the (observatory, filekind, name) index, counted without the rows:
# 0.117 s against 0.134 s for one pass summing filekind tests (500,000 rows, MariaDB).
COUNTS_SQL = (
    f"SELECT (SELECT COUNT(*) FROM {TABLE} WHERE observatory = %s AND filekind = 'reference'), "
    f"(SELECT COUNT(*) FROM {TABLE} WHERE observatory = %s AND filekind = 'mapping'), "
    "(SELECT COUNT(*) FROM catalog_contexthistory WHERE observatory = %s), "
    "(SELECT context FROM catalog_contexthistory WHERE observatory = %s ORDER BY start_date DESC, id DESC LIMIT 1)"
)


def counts(config: ServerConfig, database: str | None = None) -> CatalogCounts:
    """The catalog counts as the server's ``catalog_counts`` computes them (its queries, in SQL:
    the ContextHistory model orders by -start_date, -id), in one query and without Django.

    A backup counts its database beside the dump: Django's start (0.6 s of CPU) competed with
    mysqldump and the compressor for the two cores. tests/backup/test_catalog_counts.py checks
    that both ways agree.
    """
    rows = _query(config, COUNTS_SQL, database)
    if config.database.is_mysql:
        fields = rows.rstrip("\n").split("\t")
        if len(fields) != 4:
            raise CrdsOpsError(f"unexpected output from the mysql client for the catalog counts: {rows[:200]!r}")
        references, mappings, contexts, context = fields
        context = None if context == "NULL" else context
    else:
        references, mappings, contexts, context = rows[0]
    return CatalogCounts(int(references), int(mappings), int(contexts), context, config.observatory, config.kind)


def _columns(out: str, width: int) -> list[list[str]]:
    """The ``width`` columns of the mysql client's ``--batch`` output, each as one list.

    Split in C, not line by line (0.26 s against 0.97 s for 450,000 rows): ``--batch`` escapes
    tabs and newlines inside values, so every tab or newline is a field boundary.
    """
    fields = out.replace("\n", "\t").split("\t")
    if fields and fields[-1] == "":
        fields.pop()
    if len(fields) % width:
        raise CrdsOpsError(f"unexpected output from the mysql client ({len(fields)} fields, not rows of {width}); "
                           "is the catalog table as the server's migrations make it?")
    return [fields[i::width] for i in range(width)]


def _query(config: ServerConfig, sql: str, database: str | None = None):
    """Rows of ``sql`` (``%s``: the observatory): a list of tuples (SQLite) or the client's output (MySQL)."""
    database = str(database or config.database.name)
    if config.database.is_mysql:
        return _mysql(config, sql, database)
    path = database
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise CrdsOpsError(f"cannot open the catalog database {path} ({err}); is {config.name} installed?") from None
    try:
        return con.execute(sql.replace("%s", "?"), (config.observatory,) * sql.count("%s")).fetchall()
    except sqlite3.Error as err:
        raise CrdsOpsError(f"cannot read the catalog in {path} ({err}); run `inv install` to migrate it") from None
    finally:
        con.close()


def _mysql(config: ServerConfig, sql: str, database: str) -> str:
    from crdsops.db import mysql

    obs = config.observatory
    if not obs.isalnum():
        raise CrdsOpsError(f"observatory {obs!r} is not a plain name")
    # --batch --skip-column-names: rows only, tab-separated (see _columns)
    return mysql.run_sql(config, sql.replace("%s", f"'{obs}'") + ";", database=database, timeout=600)
