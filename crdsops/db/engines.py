"""Database dumps, one class per engine (after django-dbbackup's connectors).

Each engine class has ``create_dump(out)`` (a compressed, consistent dump of the live
database into the file ``out``) and ``restore_dump(dump)`` (load it into a *staging*
database and swap it in), with the restore split into steps so a caller can keep the
server serving while it loads and roll back after the swap:

    engine = engine_for(config)
    engine.stage(dump)     # live database untouched; the server keeps serving
    engine.swap_in()       # with the server stopped: staging becomes live, live is kept as "old"
    engine.swap_back()     # rollback: the kept "old" becomes live again
    engine.discard_old()   # commit: drop the kept old state (after its safety backup:
                           # ``create_dump(out, old=True)`` dumps the kept old state)

MySQL: ``mysqldump --single-transaction`` (credentials from the option file through
``--defaults-extra-file``, built by :mod:`crdsops.db.mysql`), staged into the schema
``<name>_crdsops_new`` and swapped with one atomic ``RENAME TABLE``; the old tables wait
in ``<name>_crdsops_old``. The account therefore needs rights on ``<name>_crdsops_%`` too.
The loader defers secondary indexes of tables without foreign keys to one ``ALTER TABLE``
after their rows (InnoDB builds them sorted, faster than row by row), as Percona's
``--innodb-optimize-keys`` and mydumper do.

SQLite: the online backup API copies a consistent snapshot; the restore decompresses to
``<db>.crdsops-new`` and renames it over the live file (the old one is hard-linked to
``<db>.crdsops-old`` first).

Why not ``manage.py dbbackup``: it holds the whole dump in a temporary file, then gzips
it in Python at level 9 after mysqldump has finished, which made ``inv backup`` several
times slower than ``mysqldump | gzip``. The connector design is kept; the data streams
through ``zstd`` (``gzip`` when zstd is missing) while mysqldump runs.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from crdsops import cleanup, commands
from crdsops.config.model import ServerConfig
from crdsops.db.compression import Checked, compress_stream, compression, finish, open_decompressed, stage_failure
from crdsops.db.mysql_loader import MysqlLoader, UseClient
from crdsops.errors import CrdsOpsError
from crdsops.files import kept_beside, staged_beside

# --- engines -----------------------------------------------------------------------------

_CHANGE_MASTER = re.compile(r"^-- CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+);")


def binlog_position(dump: Path) -> dict:
    """The coordinates ``--master-data=2`` wrote near the top of a dump."""
    source = open_decompressed(dump)
    try:
        for _ in range(200):
            line = source.stdout.readline().decode(errors="replace")
            match = _CHANGE_MASTER.match(line)
            if match:
                return {"file": match.group(1), "position": int(match.group(2))}
            if not line:
                break
    finally:
        source.kill()
        source.wait()
    raise CrdsOpsError(f"{dump} has no binlog coordinates (CHANGE MASTER TO) although the server has a binary log")

class Engine:
    engine = "?"
    dump_name = "database"

    def __init__(self, config: ServerConfig):
        self.config = config

    def dump_file_name(self) -> str:
        return self.dump_name + compression().suffix

    def create_dump(self, out: Path, old: bool = False, checked: Checked | None = None) -> None:
        """Dump the live database into ``out``; ``old``: the old state a swap kept aside instead;
        ``checked``: hash and test the compressed bytes as they are written (``compression.Checked``)."""
        raise NotImplementedError

    def restore_dump(self, dump: Path) -> None:
        """Stage, swap and commit in one go (the server must be stopped)."""
        self.stage(dump)
        self.swap_in()
        self.discard_old()

    def migrations(self, old: bool = False) -> list[list[str]]:
        raise NotImplementedError

    def stage(self, dump: Path, rows_loaded: Callable[[str], None] | None = None) -> None:
        """Load ``dump`` into the staging database. ``rows_loaded(table)``: called, where the engine can,
        once a table's rows are in and before its secondary keys are built (a reader may start then)."""
        raise NotImplementedError

    def swap_in(self) -> None:
        raise NotImplementedError

    def swap_back(self) -> None:
        raise NotImplementedError

    def discard_old(self) -> None:
        raise NotImplementedError

    def discard_staging(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.engine} {self.config.database.name}"


class SqliteEngine(Engine):
    engine = "sqlite"
    dump_name = "database.sqlite3"

    @property
    def live(self) -> Path:
        return Path(self.config.database.name)

    @property
    def staging(self) -> Path:
        return staged_beside(self.live)

    @property
    def old(self) -> Path:
        return kept_beside(self.live)

    def create_dump(self, out: Path, old: bool = False, checked: Checked | None = None) -> None:
        source = self.old if old else self.live
        if not source.exists():
            raise CrdsOpsError(f"SQLite database {source} does not exist"
                               + ("" if old else "; run `inv install` first"))
        fd, tmp = tempfile.mkstemp(prefix=".snapshot-", suffix=".sqlite3", dir=out.parent)
        os.close(fd)
        try:
            src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)  # a consistent snapshot, even while the server writes
            finally:
                dst.close()
                src.close()
            with open(tmp, "rb") as source:
                proc = compress_stream(source, out, checked)
                try:
                    finish([("compressor", proc)])
                finally:
                    if checked is not None:
                        checked.wait()
        except sqlite3.Error as err:
            raise CrdsOpsError(f"cannot read SQLite database {source} ({err})") from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def migrations(self, old: bool = False) -> list[list[str]]:
        try:
            con = sqlite3.connect(f"file:{self.old if old else self.live}?mode=ro", uri=True)
            try:
                return [list(r) for r in con.execute("SELECT app, name FROM django_migrations ORDER BY id")]
            finally:
                con.close()
        except sqlite3.Error:
            return []

    def stage(self, dump: Path, rows_loaded: Callable[[str], None] | None = None) -> None:
        self.staging.unlink(missing_ok=True)
        proc = open_decompressed(dump)
        fd = os.open(self.staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            shutil.copyfileobj(proc.stdout, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            finish([("decompressing " + dump.name, proc)])
            con = sqlite3.connect(self.staging)
            try:
                check = con.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                con.close()
        except (CrdsOpsError, sqlite3.Error) as err:
            self.staging.unlink(missing_ok=True)
            raise CrdsOpsError(f"the dump {dump} is not a usable SQLite database ({err})") from None
        if check != "ok":
            self.staging.unlink(missing_ok=True)
            raise CrdsOpsError(f"the dump {dump} failed SQLite's quick_check ({check})")
        st = self.live.stat() if self.live.exists() else None
        if st is not None:
            os.chmod(self.staging, st.st_mode & 0o777)
            if os.geteuid() == 0:
                os.chown(self.staging, st.st_uid, st.st_gid)

    def stage_from_mysql(self, dump: Path, make_schema) -> None:
        """Stage a MySQL dump (a mirror down to SQLite): ``make_schema(path)`` migrates a new file, then the rows."""
        from crdsops.db import mysql_sqlite

        self.staging.unlink(missing_ok=True)
        try:
            make_schema(self.staging)
            mysql_sqlite.load(dump, self.staging)
            con = sqlite3.connect(self.staging)
            try:
                check = con.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                con.close()
            if check != "ok":
                raise CrdsOpsError(f"the SQLite database loaded from {dump} failed SQLite's quick_check ({check})")
            os.chmod(self.staging, (self.live.stat().st_mode & 0o777) if self.live.exists() else 0o600)
        except BaseException:
            self.staging.unlink(missing_ok=True)
            raise

    def swap_in(self) -> None:
        if not self.staging.exists():
            raise CrdsOpsError(f"nothing staged at {self.staging}")
        self.old.unlink(missing_ok=True)
        if self.live.exists():
            os.link(self.live, self.old)  # keep the old file; the live name never disappears
        for extra in ("-wal", "-shm", "-journal"):
            Path(str(self.live) + extra).unlink(missing_ok=True)
        os.replace(self.staging, self.live)

    def swap_back(self) -> None:
        if self.old.exists():
            for extra in ("-wal", "-shm", "-journal"):
                Path(str(self.live) + extra).unlink(missing_ok=True)
            os.replace(self.old, self.live)

    def discard_old(self) -> None:
        self.old.unlink(missing_ok=True)

    def discard_staging(self) -> None:
        self.staging.unlink(missing_ok=True)


class MysqlEngine(Engine):
    engine = "mysql"
    dump_name = "database.sql"

    def __init__(self, config: ServerConfig):
        super().__init__(config)
        from crdsops.db import mysql

        self.mysql = mysql
        self.live = mysql.check_name(config.database.name)
        self.staging = mysql.check_name(f"{self.live}_crdsops_new"[:64])
        self.old = mysql.check_name(f"{self.live}_crdsops_old"[:64])

    def _sql(self, sql: str, database: str | None = None) -> str:
        return self.mysql.run_sql(self.config, sql, database=database)

    def create_dump(self, out: Path, old: bool = False, checked: Checked | None = None) -> dict | None:
        """The dump; with a binary log, also its snapshot's coordinates ({file, position}).

        ``--master-data=2`` writes them as a comment. MariaDB's dump reads them from the
        consistent snapshot itself (``binlog_snapshot_file``/``_position``): no lock and no
        privilege beyond the dump's (Oracle MySQL's would take a global read lock and RELOAD).
        ``old``: the schema a swap kept (``<name>_crdsops_old``); no coordinates, as no binlog
        position describes it (its events were written under the live name).
        """
        self.mysql.check_option_file(self.config)
        self.mysql.require_tool("mysqldump")
        schema = self.old if old else self.live
        binlog = not old and self.mysql.binlog_enabled(self.config)
        extra = ("--master-data=2",) if binlog else ()
        dump = commands.start(self.mysql.mysqldump_argv(self.config, *extra, database=schema),
                              what=f"dumping {schema}", stdout=commands.PIPE, stderr=commands.PIPE)
        try:
            comp = compress_stream(dump.stdout, out, checked)
        finally:
            dump.stdout.close()  # the compressor holds the pipe now
        try:
            dump_err, comp_err = (proc.stderr.read().decode(errors="replace") for proc in (dump, comp))
            dump.wait(), comp.wait()
        finally:
            if checked is not None:
                checked.wait()
        if dump.returncode != 0:
            # explained as the mysql client's errors are: the backup's counts job, failing for the
            # same cause (a server down), then reads the same and the two are reported as one
            raise self.mysql.explain(dump_err, self.config, database=schema)
        if comp.returncode != 0:
            raise CrdsOpsError(f"dumping {schema} failed: {stage_failure('compressor', comp.returncode, comp_err)}")
        return binlog_position(out) if binlog else None

    def migrations(self, old: bool = False) -> list[list[str]]:
        out = self._sql("SELECT app, name FROM django_migrations ORDER BY id;\n",
                        database=self.old if old else self.live)
        return [line.split("\t", 1) for line in out.splitlines() if "\t" in line]

    def _tables(self, schema: str) -> list[str]:
        out = self._sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                        f"'{self.mysql.check_name(schema)}' ORDER BY TABLE_NAME;\n")
        return [t for t in out.split() if t]

    def _charset(self) -> str:
        out = self._sql("SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM "
                        f"information_schema.SCHEMATA WHERE SCHEMA_NAME = '{self.live}';\n").split()
        if len(out) == 2 and all(re.match(r"^\w+$", x) for x in out):
            return f"CHARACTER SET {out[0]} COLLATE {out[1]}"
        return "CHARACTER SET utf8mb4"

    def stage(self, dump: Path, rows_loaded: Callable[[str], None] | None = None) -> None:
        self.mysql.check_option_file(self.config)
        self._sql(f"DROP DATABASE IF EXISTS `{self.staging}`;\nCREATE DATABASE `{self.staging}` {self._charset()};\n")
        try:
            try:
                MysqlLoader(self.config, self.staging, rows_loaded).load(dump)
            except UseClient:
                self._sql(f"DROP DATABASE IF EXISTS `{self.staging}`;\n"
                          f"CREATE DATABASE `{self.staging}` {self._charset()};\n")
                self._load_with_client(dump)
        except BaseException:
            cleanup.every({f"the staging schema {self.staging}": self.discard_staging})  # the load's error stays the error
            raise

    def _load_with_client(self, dump: Path) -> None:
        source = open_decompressed(dump)
        try:
            client = commands.start(self.mysql.mysql_restore_argv(self.config, self.staging), what=f"loading {dump}",
                                    stdin=source.stdout, stdout=commands.DEVNULL, stderr=commands.PIPE)
        except BaseException:
            source.kill()
            raise
        finally:
            source.stdout.close()  # the client holds the pipe now
        err = client.stderr.read().decode(errors="replace")
        if client.wait() != 0:
            source.kill()
            raise CrdsOpsError(f"loading {dump} failed: {self.mysql.explain(err, self.config, self.staging)}")
        finish([("decompressing " + dump.name, source)])

    def swap_in(self) -> None:
        new = self._tables(self.staging)
        if not new:
            raise CrdsOpsError(f"the staging schema {self.staging} is empty; nothing to swap in")
        live = self._tables(self.live)
        self._sql(f"DROP DATABASE IF EXISTS `{self.old}`;\nCREATE DATABASE `{self.old}` {self._charset()};\n")
        pairs = [f"`{self.live}`.`{t}` TO `{self.old}`.`{t}`" for t in live]
        pairs += [f"`{self.staging}`.`{t}` TO `{self.live}`.`{t}`" for t in new]
        self._sql("RENAME TABLE " + ",\n  ".join(pairs) + ";\n")  # one statement: all or nothing

    def swap_back(self) -> None:
        old = self._tables(self.old)
        if not old:
            return
        current = self._tables(self.live)
        self._sql(f"DROP DATABASE IF EXISTS `{self.staging}`;\nCREATE DATABASE `{self.staging}`;\n")
        pairs = [f"`{self.live}`.`{t}` TO `{self.staging}`.`{t}`" for t in current]
        pairs += [f"`{self.old}`.`{t}` TO `{self.live}`.`{t}`" for t in old]
        self._sql("RENAME TABLE " + ",\n  ".join(pairs) + ";\n")
        self.discard_staging()

    def discard_old(self) -> None:
        self._sql(f"DROP DATABASE IF EXISTS `{self.old}`;\nDROP DATABASE IF EXISTS `{self.staging}`;\n")

    def discard_staging(self) -> None:
        # Only what exists: an account without rights on it (the cause of a failed staging) may not
        # even drop a schema that is not there, and that refusal must not hide the cause.
        if self.mysql.database_exists(self.config, self.staging):
            self._sql(f"DROP DATABASE `{self.staging}`;\n")


def engine_for(config: ServerConfig) -> Engine:
    return (MysqlEngine if config.database.is_mysql else SqliteEngine)(config)
