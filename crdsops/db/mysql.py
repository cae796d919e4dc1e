"""MySQL/MariaDB for the VM kinds: the option file, the client commands, the database itself.

Credentials live only in the option file the config names (``database.option_file``): a
``[client]`` section with ``user`` and ``password``, mode 0600. Django reads it through
mysqlclient's ``read_default_file``; every ``mysql``/``mysqldump`` command built here reads
it through ``--defaults-extra-file``, which must be the client's FIRST argument (the
client ignores it anywhere else). So no password ever appears on a command line.

Other modules (backup, restore) build their commands with :func:`client_argv` /
:func:`mysqldump_argv` and run SQL with :func:`run_sql`; errors come back as
:class:`CrdsOpsError` with one line saying what is wrong and how to fix it.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import shutil
import stat
from pathlib import Path

from crdsops import commands
from crdsops.config.model import Database, ServerConfig
from crdsops.errors import CrdsOpsError

log = logging.getLogger(__name__)

MYSQL = "mysql"
MYSQLDUMP = "mysqldump"
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_]{1,64}$")
# The two shapes of a client's error line: the mysql client's and the server's
#   ERROR 1045 (28000): Access denied for user 'x'@'h' (using password: YES)
# and mysqldump's (MariaDB and MySQL), the message in double quotes:
#   mysqldump: Got error: 1045: "Access denied for user 'x'@'h' (using password: YES)" when trying to connect
#   mysqldump: Got error: 1049: "Unknown database 'x'" when selecting the database
_ERRORS = (
    re.compile(r"ERROR (\d+)(?: \(\w+\))?(?: at line \d+)?: (.*)"),
    re.compile(r"Got error: (\d+): \"(.*)\"(?: when .*)?$", re.MULTILINE),
    re.compile(r"Got error: (\d+): (.*?)(?: when .*)?$", re.MULTILINE),
)

# MariaDB/MySQL client and server error codes we turn into advice.
ACCESS_DENIED = 1045          # wrong user or password
DB_ACCESS_DENIED = 1044       # the account may not use/create this database
SPECIFIC_ACCESS_DENIED = 1227
UNKNOWN_DATABASE = 1049
CANT_CONNECT_SOCKET = 2002
CANT_CONNECT = 2003
UNKNOWN_HOST = 2005
SERVER_GONE = 2006
LOST_CONNECTION = 2013


# --- the option file ---------------------------------------------------------------------

def option_file(db: Database | ServerConfig) -> Path:
    """The option file path of a database config (or of a server config's database)."""
    db = _db(db)
    if db.option_file is None:
        raise CrdsOpsError(
            "database.option_file is not set; a MySQL server needs an option file with a [client] "
            "section (user, password), mode 0600; name it in the server's config"
        )
    return Path(db.option_file)


def check_option_file(db: Database | ServerConfig) -> Path:
    """Refuse a missing, unreadable, group/world-accessible or malformed option file."""
    path = option_file(db)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CrdsOpsError(
            f"MySQL option file {path} does not exist; create it with a [client] section "
            f"(user=..., password=...) and `chmod 600 {path}`"
        ) from None
    except PermissionError:
        raise CrdsOpsError(f"cannot read MySQL option file {path} (permission denied); run as its owner or root") from None
    if not stat.S_ISREG(st.st_mode):
        raise CrdsOpsError(f"MySQL option file {path} is not a regular file; point database.option_file at the file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise CrdsOpsError(
            f"MySQL option file {path} has mode {mode:04o}: other users can read the database "
            f"password; run `chmod 600 {path}` (nothing was changed)"
        )
    parser = configparser.ConfigParser(allow_no_value=True, strict=False, interpolation=None,
                                       comment_prefixes=("#", ";"), inline_comment_prefixes=None)
    try:
        parser.read_string(_without_includes(path.read_text()), source=str(path))
    except PermissionError:
        raise CrdsOpsError(f"cannot read MySQL option file {path} (permission denied); run as its owner or root") from None
    except (configparser.Error, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0]
        raise CrdsOpsError(f"MySQL option file {path} is not an option file ({first}); it needs a [client] section") from None
    if not parser.has_section("client"):
        raise CrdsOpsError(f"MySQL option file {path} has no [client] section; add one with user= and password=")
    if not parser.get("client", "user", fallback=None):
        raise CrdsOpsError(f"MySQL option file {path} names no user in [client]; add `user = ACCOUNT`")
    return path


def _without_includes(text: str) -> str:
    # !include/!includedir are MySQL directives configparser does not know.
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("!"))


def write_option_file(path: Path, user: str, password: str, host: str | None = None,
                      port: int | None = None) -> Path:
    """Write a [client] option file, 0600 from its creation (tests and first set-up)."""
    lines = ["[client]", f"user = {user}", f"password = {_option_value(password)}"]
    if host:
        lines.append(f"host = {host}")
    if port:
        lines.append(f"port = {port}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def _option_value(value: str) -> str:
    if any(c in value for c in "\"'\\#\n ") :
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    return value


# --- command lines -----------------------------------------------------------------------

def client_argv(db: Database | ServerConfig, tool: str = MYSQL, *args: str) -> list[str]:
    """``[tool, --defaults-extra-file=FILE, --host=H, --port=P, *args]``: credentials from the file only."""
    db = _db(db)
    argv = [tool, f"--defaults-extra-file={option_file(db)}"]
    if db.host:
        argv.append(f"--host={db.host}")
    if db.port:
        argv.append(f"--port={db.port}")
    return [*argv, *args]


def mysql_argv(db: Database | ServerConfig, *args: str, database: str | None = None) -> list[str]:
    """The ``mysql`` client, batch mode, optionally connected to ``database``."""
    argv = client_argv(db, MYSQL, "--batch", "--skip-column-names", *args)
    return [*argv, check_name(database)] if database else argv


def mysqldump_argv(db: Database | ServerConfig, *args: str, database: str | None = None) -> list[str]:
    """``mysqldump`` of ``database`` (default: the config's) as one consistent InnoDB snapshot."""
    db = _db(db)
    name = check_name(database or db.name)
    return client_argv(db, MYSQLDUMP, "--single-transaction", "--quick", "--routines", *args, name)


def binlog_enabled(db: Database | ServerConfig) -> bool:
    """Whether the database server writes a binary log (``log_bin``): point-in-time restore needs it."""
    return run_sql(db, "SELECT @@GLOBAL.log_bin;\n").strip() == "1"


ARCHIVE_GRANTS = ("REPLICATION SLAVE", "BINLOG MONITOR", "BINLOG REPLAY")


def missing_grants(config: Database | ServerConfig) -> list[str]:
    """The privileges the archive and a replay need that the account lacks (``SHOW GRANTS``)."""
    granted = " ".join(line.upper() for line in run_sql(config, "SHOW GRANTS;\n").splitlines()
                       if " ON *.* " in line.upper())
    if "ALL PRIVILEGES" in granted:
        return []
    return [g for g in ARCHIVE_GRANTS if g not in granted
            and not (g == "BINLOG MONITOR" and "REPLICATION CLIENT" in granted)]


def grant_advice(config: Database | ServerConfig, missing: list[str]) -> str:
    user, _, host = run_sql(config, "SELECT CURRENT_USER();\n").strip().partition("@")
    return (f"the account lacks {', '.join(missing)} for point-in-time restore (`inv binlog-archive`, "
            f"`inv restore --to-time`); ask the DBA for: GRANT {', '.join(missing)} ON *.* TO '{user}'@'{host}';")


def mysql_restore_argv(db: Database | ServerConfig, database: str | None = None) -> list[str]:
    """``mysql`` reading a dump on stdin into ``database`` (default: the config's)."""
    db = _db(db)
    return client_argv(db, MYSQL, check_name(database or db.name))


def check_name(name: str) -> str:
    """A database name we are willing to put in SQL and on a command line."""
    if not name or not _IDENTIFIER.match(name):
        raise CrdsOpsError(f"database name {name!r} is not a plain identifier (letters, digits, _); fix database.name")
    return name


def require_tool(tool: str = MYSQL) -> str:
    found = shutil.which(tool)
    if not found:
        raise _not_installed(tool)
    return found


def _not_installed(tool: str) -> CrdsOpsError:
    return CrdsOpsError(f"the `{tool}` client is not installed; install it (Debian: apt-get install mariadb-client)")


# --- running SQL -------------------------------------------------------------------------

def run_sql(db: Database | ServerConfig, sql: str, database: str | None = None, timeout: float = 60) -> str:
    """Run ``sql`` (on stdin, never on argv) with the mysql client; return its output."""
    db = _db(db)
    argv = mysql_argv(db, "--connect-timeout=5", database=database)
    try:
        # A session of its own: Ctrl-C in the terminal signals our whole process group, and a
        # statement of a swap or a rollback must not die half-way with the client. Our own
        # interrupt still ends it (commands.run kills the child when we are interrupted).
        result = commands.run(argv, what="the mysql client", input=sql, timeout=timeout, check=False,
                              new_session=True)
    except commands.NotInstalled:
        raise _not_installed(MYSQL) from None
    except commands.TimedOut:
        raise CrdsOpsError(f"MySQL at {db.host}:{db.port} did not answer within {timeout:.0f}s; check the server") from None
    if not result.ok:
        raise explain(result.stderr, db)
    return result.stdout


def explain(stderr: str, db: Database | ServerConfig, database: str | None = None) -> CrdsOpsError:
    """Turn a mysql client's error output into one actionable line."""
    db = _db(db)
    text = (stderr or "").strip()
    match = next(filter(None, (pattern.search(text) for pattern in _ERRORS)), None)
    code, message = (int(match.group(1)), match.group(2).strip()) if match else (None, text.splitlines()[-1] if text else "no output")
    where = f"{db.host}:{db.port}"
    path = db.option_file
    if code == ACCESS_DENIED:
        return CrdsOpsError(f"MySQL at {where} refused the login ({message}); fix user/password in the option file "
                            f"{path} (database.option_file)")
    if code in (CANT_CONNECT_SOCKET, CANT_CONNECT, UNKNOWN_HOST, SERVER_GONE, LOST_CONNECTION):
        return CrdsOpsError(
            f"cannot reach the MySQL server at {where} ({message}); start it (systemctl start mariadb) "
            "or fix database.host/database.port"
        )
    if code in (DB_ACCESS_DENIED, SPECIFIC_ACCESS_DENIED):
        return CrdsOpsError(f"MySQL account in {path} is not allowed to do this ({message}); have a DBA run "
                            + _grant_for(message, database or db.name, db.name))
    if code == UNKNOWN_DATABASE:
        return CrdsOpsError(f"MySQL database {database or db.name} does not exist ({message}); run `inv install` to create it")
    return CrdsOpsError(f"MySQL at {where} failed: {message}")


def _grant_for(message: str, database: str, live: str) -> str:
    """The GRANT that fixes a refusal: on the database the server named, or on the staging twins of the live one."""
    named = re.search(r"to database '([^']+)'", message)
    target = named.group(1) if named else database
    if target.startswith(f"{live}_crdsops_"):
        pattern = live.replace("_", "\\_") + "\\_crdsops\\_%"  # `_` matches any character in a GRANT pattern
        return (f"GRANT ALL ON `{pattern}`.* TO that account (a restore or a mirror stages the database beside "
                f"{live}, in {live}_crdsops_new and _old)")
    return f"GRANT ALL ON `{target}`.* TO that account, or create the database for it"


def connection_check(db: Database | ServerConfig) -> str:
    """Log in with the option file; return ``user@host`` as the server sees it."""
    db = _db(db)
    check_option_file(db)
    return run_sql(db, "SELECT CURRENT_USER();\n").strip()


def database_exists(db: Database | ServerConfig, name: str | None = None) -> bool:
    db = _db(db)
    name = check_name(name or db.name)
    out = run_sql(db, f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{name}';\n")
    return out.strip() == name


def create_database(db: Database | ServerConfig, name: str | None = None) -> bool:
    """Create ``name`` (default: the config's) if missing, utf8mb4; return whether it was created."""
    db = _db(db)
    name = check_name(name or db.name)
    if database_exists(db, name):
        return False
    try:
        run_sql(db, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;\n")
    except CrdsOpsError as err:
        if "not allowed" in str(err) or "denied" in str(err).lower():
            raise CrdsOpsError(
                f"database {name} does not exist and the MySQL account in {db.option_file} may not create it; "
                f"have a DBA run `CREATE DATABASE {name}` and GRANT ALL ON {name}.* (and test_{name}.* for "
                "`inv runtests`) to that account"
            ) from None
        raise
    return True


def drop_database(db: Database | ServerConfig, name: str) -> bool:
    """Drop ``name`` if it exists; return whether it existed. The caller confirms first."""
    name = check_name(name)
    existed = database_exists(db, name)
    if existed:
        run_sql(db, f"DROP DATABASE `{name}`;\n")
    return existed


def table_count(db: Database | ServerConfig, name: str | None = None) -> int:
    db = _db(db)
    name = check_name(name or db.name)
    out = run_sql(db, f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{name}';\n")
    return int(out.strip() or 0)


# --- install -----------------------------------------------------------------------------

def preflight(config: ServerConfig) -> str:
    """Read-only checks before install changes anything: option file, login. Returns the account."""
    return connection_check(config.database)


def prepare_database(config: ServerConfig) -> None:
    """Check the option file and the login, create the database if it is missing."""
    db = config.database
    account = connection_check(db)
    if create_database(db):
        log.info(f"created MySQL database {db.name} on {db.host}:{db.port} (as {account})")
    else:
        log.info(f"MySQL database {db.name} exists on {db.host}:{db.port} (as {account})")


def _db(db: Database | ServerConfig) -> Database:
    return db.database if isinstance(db, ServerConfig) else db
