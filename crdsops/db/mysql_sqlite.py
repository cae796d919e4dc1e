"""Load a mysqldump file into a SQLite database that has the same Django schema.

A mirror from a MySQL (MariaDB) server down to a SQLite one (``django`` kind) cannot load
the dump as it is; it also needs no second, engine-neutral copy in the backup (which
would cost every nightly backup): the dump *is* engine-neutral enough. mysqldump writes
each table as ``CREATE TABLE`` (the column order) and extended ``INSERT INTO `t` VALUES
(...),(...);`` lines (newlines inside values escaped, so a statement ends with the line that ends in ``;``). Its
literals are SQLite's but for the string escapes (``\\'``, ``\\\\``, ``\\n`` ...; SQLite
doubles quotes and takes raw characters) and MariaDB's ``_binary`` prefix. So each INSERT
is rewritten (escapes, an explicit column list from the dump's CREATE TABLE, since a
SQLite table made by migrations may order its columns differently) and executed as a
multi-row INSERT, every table in one transaction, on a file with ``journal_mode=OFF``,
``synchronous=OFF`` and foreign keys off: a bulk load, with no row ever parsed in Python.

The schema comes from the caller (``make_schema(path)``: Django's migrations run into the
staging file), so the SQLite tables, indexes and constraints are exactly what Django makes
for SQLite. Rows of every table the dump has replace what the migrations put there
(django_migrations, content types, permissions); tables the Django schema lacks are
skipped and named.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

from crdsops.db.compression import finish, open_decompressed
from crdsops.errors import CrdsOpsError

log = logging.getLogger(__name__)

_CREATE = re.compile(rb"^CREATE TABLE `([^`]+)`")
_COLUMN = re.compile(rb"^\s+`([^`]+)` ")
_INSERT = re.compile(rb"^INSERT INTO `([^`]+)` VALUES\s*")
_ESCAPE = re.compile(rb"\\(.)", re.S)
_BINARY = re.compile(rb"([(,])_binary '")
_ESCAPES = {b"'": b"''", b"\\": b"\\", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"Z": b"\x1a", b'"': b'"',
            b"b": b"\b", b"%": b"\\%", b"_": b"\\_"}


def _unescape(match: re.Match) -> bytes:
    char = match.group(1)
    try:
        return _ESCAPES[char]
    except KeyError:
        if char == b"0":
            raise CrdsOpsError("a value in the dump holds a NUL byte, which SQLite SQL cannot carry; "
                               "mirror onto a MySQL server instead") from None
        return char


def sqlite_insert(stmt: bytes, table: bytes, columns: list[bytes]) -> str:
    """A mysqldump extended INSERT as SQLite SQL, with an explicit column list."""
    values = stmt[_INSERT.match(stmt).end():].rstrip().rstrip(b";")
    if b"\\" in values:
        values = _ESCAPE.sub(_unescape, values)
    if b"_binary '" in values:
        values = _BINARY.sub(rb"\1'", values)
    cols = b",".join(b'"' + c + b'"' for c in columns)
    return (b'INSERT INTO "' + table + b'" (' + cols + b") VALUES " + values).decode("utf-8", "surrogateescape")


def load(dump: Path, staging: Path) -> dict[str, int]:
    """Load the rows of ``dump`` into ``staging`` (its schema made already); {table: statements}."""
    con = sqlite3.connect(staging, isolation_level=None)
    source = open_decompressed(dump)
    try:
        known = _begin_bulk_load(con)
        loaded, skipped = _rows(source.stdout, con, known, dump.name)
        con.execute("COMMIT")
    except BaseException as err:
        source.kill()
        if isinstance(err, sqlite3.Error):
            raise CrdsOpsError(f"loading {dump.name} into the SQLite staging database {staging} failed "
                               f"({err})") from None
        raise
    finally:
        con.close()
        source.stdout.close()
    finish([("decompressing " + dump.name, source)])
    if skipped:
        log.info(f"tables of the source that this server's Django schema lacks, not copied: {', '.join(sorted(skipped))}")
    return loaded


def _begin_bulk_load(con: sqlite3.Connection) -> set[str]:
    """No journal, no syncs, no foreign-key checks, one transaction; return the tables the schema has."""
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA foreign_keys=OFF")
    known = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.execute("BEGIN")
    return known


def _rows(lines, con: sqlite3.Connection, known: set[str], dump: str) -> tuple[dict[str, int], set[str]]:
    """Execute the dump's INSERTs as SQLite's, table by table; ({table: statements}, tables skipped).

    Once per line of the dump, so what it does per line stays inline here (bench/backup.py).
    """
    loaded: dict[str, int] = {}
    skipped: set[str] = set()
    table, columns, in_create, pending = None, [], False, []
    for line in lines:
        if pending:  # MariaDB's mysqldump writes one row per line: the statement ends at ";"
            pending.append(line)
            if not line.rstrip().endswith(b";"):
                continue
            line, pending = b"".join(pending), []
        elif line.startswith(b"INSERT") and not line.rstrip().endswith(b";"):
            pending = [line]
            continue
        if in_create:
            col = _COLUMN.match(line)
            if col:
                columns.append(col.group(1))
            elif line.startswith(b")"):
                in_create = False
            continue
        if line.startswith(b"INSERT"):
            name = _INSERT.match(line)
            if name is None:
                raise CrdsOpsError(f"{dump}: an INSERT this loader does not read ({line[:60]!r}); "
                                   "was the dump made with --complete-insert or --hex-blob?")
            if name.group(1).decode() in skipped:
                continue
            if name.group(1) != table:
                raise CrdsOpsError(f"{dump}: rows of `{name.group(1).decode()}` before its CREATE TABLE")
            con.execute(sqlite_insert(line, table, columns))
            loaded[table.decode()] = loaded.get(table.decode(), 0) + 1
            continue
        create = _CREATE.match(line)
        if create:
            table, columns, in_create = create.group(1), [], True
            name = table.decode()
            if name in known:
                con.execute(f'DELETE FROM "{name}"')  # the dump's rows replace what migrations made
                loaded.setdefault(name, 0)
            else:
                skipped.add(name)
    return loaded, skipped
