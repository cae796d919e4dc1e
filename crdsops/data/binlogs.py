"""The binlog archive of a MySQL server, and the replay of a point-in-time restore.

    <backups.private_dir>/binlogs/
        binlog.000041, ...   the database server's binary logs, streamed as they are written by
                             ``mariadb-binlog --read-from-remote-server --raw --stop-never``
        SHA256SUMS           the sha256 of each closed file (every one but the newest)
    <root>/run/binlog-archive.pid, <root>/logs/binlog-archive.log

``inv binlog-archive`` starts the streamer unless it runs (so cron or the boot unit can call it
every few minutes: a dead one is restarted, resuming at the newest file it has, which the
server sends again whole). The account needs REPLICATION SLAVE to stream and BINLOG MONITOR
to list the server's logs; a restore's replay runs BINLOG statements: BINLOG REPLAY.

A restore to a time (``inv restore --to-time``) stages the newest backup made before it, then
replays the archived events of this server's schema from the backup's coordinates up to that
time into the staging schema (``--rewrite-db``), before the swap.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from crdsops import commands
from crdsops.config.model import ServerConfig
from crdsops.data.manifest import BinlogPosition
from crdsops.errors import CrdsOpsError
from crdsops.files import digest, ensure_dir, write_atomic
from crdsops.runtime.backends.base import alive, read_pid_file, write_pid_file

log = logging.getLogger(__name__)

ARCHIVE_DIR = "binlogs"
SUMS = "SHA256SUMS"
_NUMBERED = re.compile(r"^(?P<base>[\w.-]+)\.(?P<n>\d{6,})$")
# an event's header line in mariadb-binlog's output: "#261204 11:40:17 server id 1  end_log_pos 256 ..."
_EVENT_TIME = re.compile(rb"^#(\d{6}) +(\d{1,2}:\d\d:\d\d) server id")


def archive_dir(config: ServerConfig) -> Path:
    return config.backups.private_dir / ARCHIVE_DIR


def pid_file(config: ServerConfig) -> Path:
    return config.layout.run / "binlog-archive.pid"


def log_file(config: ServerConfig) -> Path:
    return config.layout.logs / "binlog-archive.log"


def tool() -> str:
    found = shutil.which("mariadb-binlog") or shutil.which("mysqlbinlog")
    if not found:
        raise CrdsOpsError("mariadb-binlog is not installed (Debian: apt-get install mariadb-client)")
    return found


def archived(config: ServerConfig) -> list[Path]:
    """The archived binlog files, in order."""
    directory = archive_dir(config)
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if p.is_file() and _NUMBERED.match(p.name)]
    return sorted(files, key=lambda p: (_NUMBERED.match(p.name)["base"], int(_NUMBERED.match(p.name)["n"])))


def _number(name: str) -> int:
    match = _NUMBERED.match(name)
    if not match:
        raise CrdsOpsError(f"{name!r} is not a binlog file name")
    return int(match["n"])


# --- the streamer ------------------------------------------------------------------------------

def running_pid(config: ServerConfig) -> int | None:
    pid = read_pid_file(pid_file(config))
    return pid if pid is not None and alive(pid) else None


def unavailable(config: ServerConfig) -> str:
    """Why this server has no point-in-time restore ("": it can have one)."""
    if not config.database.is_mysql:
        return "the SQLite django kind has no point-in-time restore (restore a backup)"
    from crdsops.db import mysql

    try:
        if not mysql.binlog_enabled(config):
            return "its database server writes no binary log (log_bin OFF; ask the DBA for log_bin and binlog_format=ROW)"
    except CrdsOpsError as err:
        return f"cannot ask the database server ({str(err).splitlines()[0]})"
    return ""


def first_file(config: ServerConfig) -> str:
    """Where the streamer starts: the newest archived file (sent again whole), else the server's oldest."""
    have = archived(config)
    if have:
        return have[-1].name
    from crdsops.db import mysql

    out = mysql.run_sql(config, "SHOW BINARY LOGS;\n")
    names = [line.split("\t")[0] for line in out.splitlines() if line.strip()]
    if not names:
        raise CrdsOpsError(f"{config.database.host}: SHOW BINARY LOGS lists nothing; is log_bin on?")
    return names[0]


def ensure_running(config: ServerConfig) -> tuple[int, bool]:
    """(the streamer's pid, whether it was started now)."""
    pid = running_pid(config)
    if pid is not None:
        return pid, False
    why = unavailable(config)
    if why:
        raise CrdsOpsError(f"no binlog archive for {config.name}: {why}")
    from crdsops.db import mysql

    directory = archive_dir(config)
    ensure_dir(directory)
    start = first_file(config)
    argv = mysql.client_argv(config, tool(), "--read-from-remote-server", "--raw", "--stop-never",
                             f"--result-file={directory}/", start)
    ensure_dir(log_file(config).parent)
    with open(log_file(config), "ab") as out:
        process = commands.start(argv, what="mariadb-binlog", cwd=directory, stdin=commands.DEVNULL, stdout=out,
                                 stderr=commands.STDOUT, start_new_session=True)
    write_pid_file(pid_file(config), process.pid)
    time.sleep(0.5)
    if process.poll() is not None:
        raise CrdsOpsError(f"mariadb-binlog exited at once (exit {process.returncode}); see {log_file(config)}")
    log.info(f"binlog archive of {config.name}: streaming from {start} into {directory} (pid {process.pid})")
    return process.pid, True


def stop(config: ServerConfig) -> bool:
    from crdsops.runtime.backends.base import terminate

    pid = running_pid(config)
    if pid is None:
        return False
    terminate(pid, 10)
    pid_file(config).unlink(missing_ok=True)
    return True


def seal(config: ServerConfig) -> dict[str, str]:
    """sha256 of every closed file (all but the newest) into SHA256SUMS; return the listing."""
    files = archived(config)
    sums_path = archive_dir(config) / SUMS
    sums = read_sums(config)
    for path in files[:-1]:
        if path.name not in sums:
            sums[path.name] = digest(path)
    if files:
        write_atomic(sums_path, "".join(f"{sums[n]}  {n}\n" for n in sorted(sums)), mode=0o600)
    return sums


def read_sums(config: ServerConfig) -> dict[str, str]:
    path = archive_dir(config) / SUMS
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            found[name] = digest
    return found


def prune_before(config: ServerConfig, oldest: str) -> list[str]:
    """Drop archived files older than ``oldest`` (the oldest kept backup's binlog file): no restore
    can start before it. Return the names removed."""
    keep_from = _number(oldest)
    removed = [p for p in archived(config)[:-1] if _number(p.name) < keep_from]
    for path in removed:
        path.unlink(missing_ok=True)
    if removed:
        sums = {n: d for n, d in read_sums(config).items() if n not in {p.name for p in removed}}
        write_atomic(archive_dir(config) / SUMS, "".join(f"{sums[n]}  {n}\n" for n in sorted(sums)), mode=0o600)
    return [p.name for p in removed]


@dataclass(frozen=True)
class Lag:
    """How far the archive is behind the server."""

    server_file: str
    server_position: int
    archived_file: str
    archived_size: int
    seconds: float  # 0 when it holds everything; else how long since its newest file last grew

    @property
    def behind(self) -> bool:
        return (self.archived_file, self.archived_size) != (self.server_file, self.server_position)

    def describe(self) -> str:
        if not self.behind:
            return f"up to date ({self.server_file}:{self.server_position})"
        return (f"{self.seconds:.0f}s behind: archived {self.archived_file or 'nothing'}:{self.archived_size}, "
                f"server at {self.server_file}:{self.server_position}")


def lag(config: ServerConfig) -> Lag:
    from crdsops.db import mysql

    status = mysql.run_sql(config, "SHOW MASTER STATUS;\n").split("\t")
    server_file, server_position = (status[0].strip(), int(status[1])) if len(status) > 1 else ("", 0)
    files = archived(config)
    newest = files[-1] if files else None
    size = newest.stat().st_size if newest else 0
    behind = newest is None or (newest.name, size) != (server_file, server_position)
    seconds = 0.0 if not behind else time.time() - (newest.stat().st_mtime if newest else 0)
    return Lag(server_file, server_position, newest.name if newest else "", size, seconds)


# --- the replay of a point-in-time restore ---------------------------------------------------------

@dataclass(frozen=True)
class Replay:
    """The archived events a restore to ``to_time`` replays on top of a backup."""

    start: BinlogPosition
    files: tuple[Path, ...]
    to_time: datetime.datetime | None  # None: every archived event ("latest")
    events: int | None  # transactions to apply (None: not counted ahead)

    def describe(self) -> str:
        until = f"up to {self.to_time:%Y-%m-%d %H:%M:%S} UTC" if self.to_time else "to the archive's end"
        names = f"{self.files[0].name} .. {self.files[-1].name}" if len(self.files) > 1 else self.files[0].name
        events = f"{self.events} events" if self.events is not None else "the events"
        return f"{events} of {names} from {self.start.describe()} {until}"


def last_event_time(path: Path) -> datetime.datetime | None:
    """The time of the newest event in a binlog file (UTC)."""
    result = commands.run([tool(), "--skip-gtid-strict-mode", str(path)], what="mariadb-binlog", check=False, timeout=600, text=False,
                          env=dict(os.environ, TZ="UTC"))
    times = [m for m in (_EVENT_TIME.match(line) for line in result.stdout.splitlines()) if m]
    if not times:
        return None
    day, clock = times[-1].group(1).decode(), times[-1].group(2).decode()
    return datetime.datetime.strptime(f"{day} {clock}", "%y%m%d %H:%M:%S").replace(tzinfo=datetime.UTC)


def archive_end(config: ServerConfig, newest: Path) -> datetime.datetime | None:
    """Up to when the archive holds every event: now while the streamer runs and has caught up
    (a quiet server writes nothing, and nothing is missing), else the newest event archived."""
    try:
        if running_pid(config) is not None and not lag(config).behind:
            return datetime.datetime.now(datetime.UTC)
    except CrdsOpsError:
        pass
    return last_event_time(newest)


def plan_replay(config: ServerConfig, start: BinlogPosition, to_time: datetime.datetime | None,
                count: bool = True) -> Replay:
    """The files from the backup's coordinates on; refused in one line when the archive cannot give ``to_time``.

    ``count``: decode them once to count the transactions (a dry run's plan says how many; a real
    run counts them as it replays, not in a pass of its own)."""
    files = archived(config)
    names = [p.name for p in files]
    if start.file not in names:
        have = f"{names[0]} .. {names[-1]}" if names else "nothing"
        raise CrdsOpsError(f"the binlog archive {archive_dir(config)} lacks {start.file}, where the backup stands "
                           f"(it holds {have}); run `inv binlog-archive` and keep it running")
    chosen = files[names.index(start.file):]
    numbers = [_number(p.name) for p in chosen]
    gaps = [f"{a + 1:06d}" for a, b in zip(numbers, numbers[1:]) if b != a + 1]
    if gaps:
        raise CrdsOpsError(f"the binlog archive has a gap: no file number {', '.join(gaps)} between {chosen[0].name} "
                           f"and {chosen[-1].name}; a restore can only go up to before it")
    end = archive_end(config, chosen[-1])
    if to_time is not None and end is not None and to_time > end:
        raise CrdsOpsError(f"{to_time:%Y-%m-%d %H:%M:%S} UTC is after the archive's end ({end:%Y-%m-%d %H:%M:%S} "
                           f"UTC, {chosen[-1].name}); restore --to-time latest, or a time up to then")
    return Replay(start, tuple(chosen), to_time, count_events(config, start, tuple(chosen), to_time) if count else None)


def replay_argv(config: ServerConfig, start: BinlogPosition, files: tuple[Path, ...],
                to_time: datetime.datetime | None, into: str | None = None) -> list[str]:
    live = config.database.name
    # not strict: a replay re-logs events with their own GTIDs, out of order in the server's binlog
    argv = [tool(), "--skip-gtid-strict-mode", f"--start-position={start.position}", f"--database={live}"]
    if to_time is not None:
        argv.append(f"--stop-datetime={to_time:%Y-%m-%d %H:%M:%S}")
    if into:
        argv.append(f"--rewrite-db={live}->{into}")
    return [*argv, *(str(p) for p in files)]


def count_events(config: ServerConfig, start: BinlogPosition, files: tuple[Path, ...],
                 to_time: datetime.datetime | None) -> int:
    """Transactions of this server's schema the replay would apply (``BEGIN`` of each)."""
    result = commands.run(replay_argv(config, start, files, to_time), what="mariadb-binlog", check=False,
                          timeout=1800, text=False, env=dict(os.environ, TZ="UTC"))
    if not result.ok:
        raise CrdsOpsError(f"mariadb-binlog cannot read the archive: {result.last_error_line()}")
    return sum(1 for line in result.stdout.splitlines() if line.strip() in (b"BEGIN", b"BEGIN;", b"START TRANSACTION"))


BATCH = 500  # transactions applied per commit by a replay


def replay(config: ServerConfig, plan: Replay, schema: str) -> None:
    """Apply the planned events to ``schema`` (the staging one): mariadb-binlog | batched | mysql."""
    from crdsops.db import mysql

    reader = commands.start(replay_argv(config, plan.start, plan.files, plan.to_time, into=schema),
                            what="mariadb-binlog", stdout=commands.PIPE, stderr=commands.PIPE,
                            env=dict(os.environ, TZ="UTC"))
    client = commands.start(mysql.mysql_restore_argv(config, schema), what="replaying binlogs",
                            stdin=commands.PIPE, stdout=commands.DEVNULL, stderr=commands.PIPE)
    seen = {"transactions": 0}
    try:
        for chunk in batched(reader.stdout, seen=seen):
            client.stdin.write(chunk)
        client.stdin.close()
    except BrokenPipeError:
        pass  # the client failed: its own error says why
    finally:
        reader.stdout.close()
    err = client.stderr.read().decode(errors="replace")
    if client.wait() != 0:
        reader.kill()
        raise CrdsOpsError(f"replaying the binlogs into {schema} failed: {mysql.explain(err, config, schema)}")
    if reader.wait() != 0:
        raise CrdsOpsError(f"mariadb-binlog failed: {reader.stderr.read().decode(errors='replace').strip()}")
    log.info(f"replayed {seen['transactions']} transactions ({plan.describe()}) into {schema}")


_GTID_SET = re.compile(rb"^/\*M?!100001 SET @@session\.(gtid_domain_id|server_id|gtid_seq_no)=\d+\*//\*!\*/;$")
_START = (b"START TRANSACTION", b"BEGIN")
_COMMIT = b"COMMIT/*!*/;"


def batched(lines, size: int = BATCH, seen: dict | None = None):
    """mariadb-binlog's output with BATCH transactions to a commit instead of one each (a commit is
    a log flush: thousands of one-row transactions spent seconds on them), and without the events'
    own GTIDs: the server gives the replayed ones new GTIDs, in order, and sets nothing it would
    need SUPER for. A DDL statement still commits by itself, as it would anyway."""
    open_batch, done = False, 0
    pending_delimiter, delimiter = False, b";"
    for line in lines:
        bare = line.rstrip(b"\n")
        if pending_delimiter:
            pending_delimiter = False
            if bare == b"/*!*/;":
                continue
        if _GTID_SET.match(bare):
            continue
        if bare.startswith(b"DELIMITER "):
            delimiter = bare.removeprefix(b"DELIMITER ")
        elif bare.startswith(b"ROLLBACK") and open_batch:
            # each file's start and the output's end say ROLLBACK (nothing of theirs is open): the
            # batch is complete transactions, committed first
            yield b"COMMIT" + delimiter + b"\n"
            open_batch = False
        if bare in _START:
            if seen is not None:
                seen["transactions"] = seen.get("transactions", 0) + 1
            if open_batch:
                pending_delimiter = True  # drop this START TRANSACTION and its "/*!*/;"
                continue
            open_batch, done = True, 0
        elif bare == _COMMIT and open_batch:
            done += 1
            if done < size:
                continue
            open_batch = False
        yield line
    if open_batch:
        yield b"COMMIT" + delimiter + b"\n"


# --- off-site copies of the closed binlogs (backups.offsite) --------------------------------------

SENT = ".offsite-sent"  # the closed files already copied off-site, one name a line


def send_offsite(config: ServerConfig) -> list[str]:
    """Encrypt and upload each closed, listed binlog not yet sent (``<remote>/<obs>.<kind>.binlogs/``),
    checking each there as backups are; return the names sent. A failure warns and notifies (the
    archive itself is good) and leaves the file to the next run."""
    from crdsops.data import offsite
    from crdsops.runtime import taskrun

    if not config.backups.offsite.enabled:
        return []
    sent_file = archive_dir(config) / SENT
    sent = set(sent_file.read_text().split()) if sent_file.exists() else set()
    done = []
    for name in sorted(set(read_sums(config)) - sent, key=_number):
        try:
            offsite.upload_file(config, archive_dir(config) / name, f"{config.name}.binlogs/{name}")
        except CrdsOpsError as err:
            taskrun.alert(f"warning: the off-site copy of the binlog {name} failed: {err}; the archive keeps it "
                          "and the next `inv binlog-archive` tries again")
            break
        done.append(name)
        write_atomic(sent_file, "".join(f"{n}\n" for n in sorted(sent | set(done), key=_number)), mode=0o600)
    return done
