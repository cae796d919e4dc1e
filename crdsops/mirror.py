"""Make this (the installed) server a copy of a higher-tier server of the same observatory.

Runs on the destination, as ``mirror_server`` did, with the destination serving for as
long as possible:

1. refuse before touching anything: another observatory, the source being this server, a
   direction other than downward (``allow_upward`` plus confirmation for the rare case),
   a source whose identity read over SSH (its ``inv config``) or at its URL
   (``get_catalog_counts``) is not what its config says, a source latest backup that is
   missing or fails verification against its manifest;
2. while serving: take a safety copy of this server's database; pull the file cache from
   the source host with rsync over SSH (new and changed files only); pull the support
   directories (catalogs, deliveries) into staging; restore the source's database dump into
   a staging database (SQLite: a new file; MySQL: a staging schema);
3. stopped only for the swap: rename the staging database into place (SQLite ``rename``;
   MySQL one ``RENAME TABLE`` of all tables), swap the support directories, start;
4. health check: this server answers, as itself, with the source's operational context and
   file counts; otherwise roll back (the safety copy and the old support directories) and
   start the old state again;
5. once the new state is live: delete cache files the source no longer has (capped, and
   refused when the source looks empty).

The source's latest backup is ``<shared_dir>/<obs>.<kind>/`` as the *source* reports its
``backups.shared_dir``: read in place when that directory is mounted here, else fetched
over SSH. It holds ``manifest.json`` (sha256 and size of every file) and one database dump
(a SQLite file, or SQL text, optionally gzipped).
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import cachesync, health, remote, service
from crdsops.config import TIERS, ServerConfig, load_config
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir
from crdsops.serverenv import SUBDIRS_OF_CACHE

SUPPORT_DIRS = ("catalogs", "deliveries")
MANIFEST = "manifest.json"


@dataclass
class Plan:
    dest: ServerConfig
    src: ServerConfig
    target: remote.Target
    src_url: str
    upward: bool = False
    src_reported: dict = field(default_factory=dict)  # the source's own `inv config --json`
    src_counts: dict = field(default_factory=dict)  # get_catalog_counts at its URL
    backup_dir: Path | None = None  # the source's latest, here (in place or fetched)
    backup_in_place: bool = False
    backup_remote: str = ""
    dump: Path | None = None
    steps: list[str] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.dest.root / "mirror"

    @property
    def trees(self) -> list[str]:
        return [f"{sub}/{self.dest.observatory}" for sub in SUBDIRS_OF_CACHE]


# --- 1. refusals and probes ----------------------------------------------------------

def check_direction(dest: ServerConfig, obs: str, src_kind: str, allow_upward: bool) -> bool:
    """Refuse a mirror that is not downward within one observatory; return whether it is upward."""
    if obs != dest.observatory:
        raise CrdsOpsError(
            f"this server is {dest.name}, of {dest.observatory}; it cannot mirror {obs}.{src_kind} "
            f"(run the mirror on a {obs} server)"
        )
    if src_kind == dest.kind:
        raise CrdsOpsError(f"the source {obs}.{src_kind} is this server; name a higher-tier server with --src")
    src = load_config(obs, src_kind)
    if src.tier_rank == dest.tier_rank:
        raise CrdsOpsError(f"{src.name} and {dest.name} are both {dest.tier} tier; a mirror copies from a "
                           f"higher tier ({' > '.join(reversed(TIERS))}) to a lower one")
    if src.tier_rank < dest.tier_rank:
        if not allow_upward:
            raise CrdsOpsError(
                f"refusing to mirror upward: {src.name} ({src.tier}) is below {dest.name} ({dest.tier}); "
                f"data flows {' > '.join(reversed(TIERS))}; nothing was changed"
            )
        return True
    return False


def probe(dest: ServerConfig, src_kind: str, src_url: str | None, src_host: str | None,
          allow_upward: bool, say=print) -> Plan:
    """Every read-only check, run for real (also under --dry-run)."""
    upward = check_direction(dest, dest.observatory, src_kind, allow_upward)
    src = load_config(dest.observatory, src_kind)
    target = remote.target_for(src, host=src_host)
    plan = Plan(dest, src, target, src_url or src.url, upward)

    say(f"checking {src.name} over SSH at {target.where} ...")
    conn = remote.connection(target)
    try:
        res = remote.run_inv(conn, target.checkout, ["config", "--json"], hide=True)
        if res.exited != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise CrdsOpsError(f"{target.where} could not say which server it is (`inv config`: {last}); "
                               "is crdsops installed there (ssh.checkout)?")
        try:
            plan.src_reported = json.loads(res.stdout)
        except ValueError:
            raise CrdsOpsError(f"{target.where}: `inv config --json` printed something that is not JSON") from None
        ident = (plan.src_reported.get("observatory"), plan.src_reported.get("kind"))
        if ident != (src.observatory, src.kind):
            raise CrdsOpsError(
                f"{target.where} runs {'.'.join(map(str, ident))}, not {src.name} as the config says; "
                "refusing (fix the source's host in the config, or --src-host)"
            )
        cache_files = cachesync.probe_tree(conn, f"{plan.src_reported['cache']}/mappings/{src.observatory}")
        if not cache_files:
            raise CrdsOpsError(
                f"the source's cache {plan.src_reported['cache']} has no mappings for {src.observatory} "
                "(empty or unmounted); refusing"
            )
        _locate_backup(plan, conn)
    finally:
        conn.close()

    say(f"checking {src.name} at {plan.src_url} ...")
    counts = health.rpc(plan.src_url, "get_catalog_counts", timeout=15)
    if (counts.get("observatory"), counts.get("kind")) != (src.observatory, src.kind):
        raise CrdsOpsError(
            f"{plan.src_url} answers as {counts.get('observatory')}.{counts.get('kind')}, not {src.name}; "
            "refusing (fix --src-url or the source's url in the config)"
        )
    plan.src_counts = counts
    plan.steps = _steps(plan)
    return plan


def _locate_backup(plan: Plan, conn) -> None:
    shared = Path(plan.src_reported["backups"]["shared_dir"]) / plan.src.name
    plan.backup_remote = str(shared)
    if (shared / MANIFEST).exists():
        plan.backup_dir, plan.backup_in_place = shared, True
        return
    res = remote.run(conn, ["test", "-f", str(shared / MANIFEST)])
    if res.exited != 0:
        raise CrdsOpsError(
            f"{plan.src.name} has no latest shared backup ({shared}/{MANIFEST} missing on {conn.host}); "
            f"run `inv backup` there first"
        )
    plan.backup_dir = plan.work / "backup"


def _steps(p: Plan) -> list[str]:
    d, s = p.dest, p.src
    db = "staging schema + one RENAME TABLE" if d.database.is_mysql else "new SQLite file + rename"
    return [
        f"mirror {s.name} ({s.tier}) -> {d.name} ({d.tier}){'  [UPWARD, by override]' if p.upward else ''}",
        f"source: {p.target.where} (checkout {p.target.checkout}), url {p.src_url}: "
        f"context {p.src_counts.get('operational_context')}, {p.src_counts.get('references')} references, "
        f"{p.src_counts.get('mappings')} mappings",
        ("read the source's latest backup in place: " if p.backup_in_place else
         f"fetch the source's latest backup over SSH from {p.backup_remote} to ") + str(p.backup_dir),
        "verify it against its manifest (sha256 and size of every file)",
        f"while {d.name} keeps serving: safety copy of its database to {p.work / 'safety'}",
        f"while serving: rsync the cache {', '.join(p.trees)} from {p.src_reported.get('cache')} "
        f"to {d.cache} (no deletions yet)",
        f"while serving: rsync {', '.join(SUPPORT_DIRS)} from {p.src_reported.get('server_files')} into staging",
        f"while serving: restore the source's dump into a staging database ({db})",
        f"stop {d.name}; swap in the database and the support directories; start it",
        f"health check at {d.local_url}: answers as {d.name} with context "
        f"{p.src_counts.get('operational_context')} and the source's counts; else roll back and start the old state",
        "then delete cache files the source no longer has (capped; refused if the source looks empty)",
    ]


# --- 2. the backup ---------------------------------------------------------------------

def fetch_backup(plan: Plan, say=print) -> None:
    if plan.backup_in_place:
        return
    ensure_dir(plan.backup_dir.parent)
    cachesync.pull_dir(plan.target, plan.backup_remote, plan.backup_dir, say=say, label="backup")


def verify_backup(backup: Path, say=print) -> dict:
    """Check every file the manifest lists (sha256 and size) and that nothing is missing."""
    try:
        from crdsops import manifest as backup_manifest  # issue 5's verifier, when present
    except ImportError:
        backup_manifest = None
    if backup_manifest is not None and hasattr(backup_manifest, "verify"):
        try:
            return backup_manifest.verify(backup)
        except TypeError:
            pass
    try:
        data = json.loads((backup / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise CrdsOpsError(f"{backup}: unreadable {MANIFEST} ({err}); refusing this backup") from None
    files = data.get("files") or {}
    if isinstance(files, list):
        files = {f["path"]: f for f in files}
    if not files:
        raise CrdsOpsError(f"{backup}/{MANIFEST} lists no files; refusing this backup")
    for rel, meta in files.items():
        path = backup / rel
        if not path.is_file():
            raise CrdsOpsError(f"backup {backup} is incomplete: {rel} is missing; refusing it")
        if path.stat().st_size != int(meta["size"]) or _sha256(path) != meta["sha256"]:
            raise CrdsOpsError(f"backup {backup}: {rel} does not match its manifest (sha256/size); refusing it")
    say(f"backup {backup}: {len(files)} file(s) verified against {MANIFEST}")
    return data


def find_dump(backup: Path, data: dict) -> Path:
    names = list((data.get("files") or {}).keys()) if isinstance(data.get("files"), dict) else \
        [f["path"] for f in data.get("files") or []]
    declared = data.get("database") or data.get("dump")
    if isinstance(declared, dict):
        declared = declared.get("file") or declared.get("path")
    if declared:
        return backup / declared
    dumps = [n for n in names if Path(n).parts[0] in ("db", "database") or
             n.endswith((".sqlite3", ".sql", ".sql.gz", ".dump", ".dump.gz", ".psql", ".psql.gz"))]
    if len(dumps) != 1:
        raise CrdsOpsError(f"backup {backup}: cannot tell which file is the database dump ({dumps or 'none'})")
    return backup / dumps[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_dump(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _dump_is_sqlite_file(path: Path) -> bool:
    with _open_dump(path) as handle:
        return handle.read(16) == b"SQLite format 3\x00"


# --- 3. staging databases and the swap -----------------------------------------------

class SqliteSwap:
    """Stage a new SQLite file next to the live one; swap by rename; keep the old for rollback."""

    def __init__(self, config: ServerConfig, work: Path):
        self.live = Path(config.database.name)
        self.staging = self.live.with_name(self.live.name + ".mirror-new")
        self.old = self.live.with_name(self.live.name + ".mirror-old")

    def safety(self, work: Path, say=print) -> Path:
        ensure_dir(work / "safety")
        copy = work / "safety" / "database.sqlite3"
        _sqlite_copy(self.live, copy)
        say(f"safety copy of the database: {copy}")
        return copy

    def stage(self, dump: Path, say=print) -> None:
        self.staging.unlink(missing_ok=True)
        start = time.monotonic()
        if _dump_is_sqlite_file(dump):
            tmp = self.staging.with_name(self.staging.name + ".tmp")
            with _open_dump(dump) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            _sqlite_copy(tmp, self.staging)
            tmp.unlink()
        else:
            with _open_dump(dump) as handle:
                script = handle.read().decode()
            con = sqlite3.connect(self.staging)
            try:
                con.executescript(script)
                con.commit()
            except sqlite3.DatabaseError as err:
                raise CrdsOpsError(f"the dump {dump} does not load into SQLite ({err}); is it a MySQL dump?") from None
            finally:
                con.close()
        os.chmod(self.staging, 0o600)
        say(f"staging database ready: {self.staging} ({time.monotonic() - start:.1f}s)")

    def swap(self) -> None:
        if self.old.exists():
            self.old.unlink()
        os.link(self.live, self.old)  # keep the old one under another name
        os.replace(self.staging, self.live)  # atomic

    def rollback(self) -> None:
        if self.old.exists():
            os.replace(self.old, self.live)

    def cleanup(self) -> None:
        self.old.unlink(missing_ok=True)
        self.staging.unlink(missing_ok=True)


def _sqlite_copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database (the online backup API)."""
    tmp = dst.with_name(dst.name + ".part")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    target = sqlite3.connect(tmp)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    os.chmod(tmp, 0o600)
    os.replace(tmp, dst)


class MysqlSwap:
    """Stage into ``<name>_mirror_new``; swap all tables with one atomic RENAME TABLE."""

    def __init__(self, config: ServerConfig, work: Path):
        from crdsops import mysql

        self.mysql = mysql
        self.config = config
        self.live = config.database.name
        self.staging = f"{self.live}_mirror_new"[:64]
        self.old = f"{self.live}_mirror_old"[:64]

    def _sql(self, sql: str, database: str | None = None) -> str:
        return self.mysql.run_sql(self.config, sql, database=database)

    def _client(self, *args: str) -> list[str]:
        db = self.config.database
        return ["mysql", f"--defaults-extra-file={db.option_file}", f"--host={db.host}", f"--port={db.port}", *args]

    def _tables(self, schema: str) -> list[str]:
        out = subprocess.run(self._client("-N", "-B", "-e",
                                          "SELECT table_name FROM information_schema.tables WHERE table_schema="
                                          f"'{schema}' AND table_type='BASE TABLE'"),
                             capture_output=True, text=True)
        if out.returncode:
            raise CrdsOpsError(f"cannot list tables of {schema}: {out.stderr.strip()}")
        return [t for t in out.stdout.split() if t]

    def _run_client(self, *args: str, stdin=None) -> None:
        out = subprocess.run(self._client(*args), stdin=stdin, capture_output=True, text=True)
        if out.returncode:
            raise CrdsOpsError(f"mysql {' '.join(args[:2])} failed: {(out.stderr.strip().splitlines() or [''])[-1]}")

    def safety(self, work: Path, say=print) -> Path:
        ensure_dir(work / "safety")
        copy = work / "safety" / "database.sql"
        db = self.config.database
        with open(copy, "wb") as out:
            os.chmod(copy, 0o600)
            res = subprocess.run(["mysqldump", f"--defaults-extra-file={db.option_file}", f"--host={db.host}",
                                  f"--port={db.port}", "--single-transaction", "--quick", self.live],
                                 stdout=out, stderr=subprocess.PIPE, text=False)
        if res.returncode:
            raise CrdsOpsError(f"safety dump of {self.live} failed: {res.stderr.decode().strip()}")
        say(f"safety copy of the database: {copy}")
        return copy

    def stage(self, dump: Path, say=print) -> None:
        start = time.monotonic()
        self._run_client("-e", f"DROP DATABASE IF EXISTS `{self.staging}`; CREATE DATABASE `{self.staging}` "
                               "CHARACTER SET utf8mb4")
        if _dump_is_sqlite_file(dump):
            raise CrdsOpsError(f"the dump {dump} is a SQLite file; it cannot be restored into MySQL "
                               "(source and destination database engines differ)")
        with _open_dump(dump) as handle:
            proc = subprocess.Popen(self._client(self.staging), stdin=subprocess.PIPE, stderr=subprocess.PIPE)
            shutil.copyfileobj(handle, proc.stdin, 1 << 20)
            proc.stdin.close()
            err = proc.stderr.read().decode()
            if proc.wait():
                raise CrdsOpsError(f"loading {dump} into {self.staging} failed: {err.strip()}")
        say(f"staging schema ready: {self.staging} ({time.monotonic() - start:.1f}s)")

    def swap(self) -> None:
        live, new = self._tables(self.live), self._tables(self.staging)
        self._run_client("-e", f"DROP DATABASE IF EXISTS `{self.old}`; CREATE DATABASE `{self.old}`")
        pairs = [f"`{self.live}`.`{t}` TO `{self.old}`.`{t}`" for t in live]
        pairs += [f"`{self.staging}`.`{t}` TO `{self.live}`.`{t}`" for t in new]
        self._run_client("-e", "RENAME TABLE " + ", ".join(pairs))  # one statement: atomic

    def rollback(self) -> None:
        old = self._tables(self.old)
        if not old:
            return
        cur = self._tables(self.live)
        self._run_client("-e", f"DROP DATABASE IF EXISTS `{self.staging}`; CREATE DATABASE `{self.staging}`")
        pairs = [f"`{self.live}`.`{t}` TO `{self.staging}`.`{t}`" for t in cur]
        pairs += [f"`{self.old}`.`{t}` TO `{self.live}`.`{t}`" for t in old]
        self._run_client("-e", "RENAME TABLE " + ", ".join(pairs))

    def cleanup(self) -> None:
        self._run_client("-e", f"DROP DATABASE IF EXISTS `{self.old}`; DROP DATABASE IF EXISTS `{self.staging}`")


def swapper(config: ServerConfig, work: Path):
    return (MysqlSwap if config.database.is_mysql else SqliteSwap)(config, work)


class SupportSwap:
    """catalogs/ and deliveries/ staged under ``work``; swapped in by rename while stopped."""

    def __init__(self, config: ServerConfig, work: Path):
        self.base = config.server_files
        self.staging = work / "support-new"
        self.old = work / "support-old"
        self.swapped: list[str] = []

    def swap(self) -> None:
        ensure_dir(self.old)
        for name in SUPPORT_DIRS:
            live, new, old = self.base / name, self.staging / name, self.old / name
            if old.exists():
                shutil.rmtree(old)
            if live.exists():
                os.rename(live, old)
            os.rename(new, live)
            self.swapped.append(name)

    def rollback(self) -> None:
        for name in reversed(self.swapped):
            live, old = self.base / name, self.old / name
            if old.exists():
                if live.exists():
                    shutil.rmtree(live)
                os.rename(old, live)
        self.swapped = []

    def cleanup(self) -> None:
        shutil.rmtree(self.old, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)


# --- the lock --------------------------------------------------------------------------

@contextlib.contextmanager
def server_lock(config: ServerConfig, task: str = "mirror"):
    """The per-server lock (issue 5's crdsops.serverlock when present, else an atomic mkdir)."""
    try:
        from crdsops import serverlock
    except ImportError:
        serverlock = None
    holder = getattr(serverlock, "hold", None) or getattr(serverlock, "held", None) if serverlock else None
    if holder is not None:
        with holder(config, task=task):
            yield
        return
    lock = config.root / "run" / "crdsops.lock"
    ensure_dir(lock.parent)
    try:
        os.mkdir(lock, 0o700)
    except FileExistsError:
        info = {}
        with contextlib.suppress(OSError, ValueError):
            info = json.loads((lock / "holder.json").read_text())
        pid = info.get("pid")
        if pid and info.get("host") == socket.gethostname() and not Path(f"/proc/{pid}").exists():
            print(f"warning: taking over the lock of {config.name} from pid {pid}, which is gone")
        else:
            raise CrdsOpsError(f"{config.name} is locked by {info.get('task', '?')} (pid {pid} on "
                               f"{info.get('host', '?')} since {info.get('since', '?')}); wait for it to finish")
    (lock / "holder.json").write_text(json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "task": task, "user": os.environ.get("USER", "?"),
        "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}))
    try:
        yield
    finally:
        shutil.rmtree(lock, ignore_errors=True)


# --- 4. the whole mirror --------------------------------------------------------------

def execute(plan: Plan, max_delete: int | None = None, say=print) -> None:
    dest, src = plan.dest, plan.src
    ensure_dir(plan.work)
    db = swapper(dest, plan.work)
    support = SupportSwap(dest, plan.work)

    fetch_backup(plan, say=say)
    data = verify_backup(plan.backup_dir, say=say)
    plan.dump = find_dump(plan.backup_dir, data)
    db.safety(plan.work, say=say)

    synced = cachesync.pull(plan.target, plan.src_reported["cache"], plan.trees, dest.cache, say=say)
    shutil.rmtree(support.staging, ignore_errors=True)
    ensure_dir(support.staging)
    for name in SUPPORT_DIRS:
        live = dest.server_files / name
        cachesync.pull_dir(plan.target, f"{plan.src_reported['server_files']}/{name}", support.staging / name,
                           say=say, label=name, link_dest=live if live.exists() else None)
    db.stage(plan.dump, say=say)

    stopped_at = time.monotonic()
    was_running = service.running_pid(dest) is not None
    service.stop(dest, say=say)
    swapped = False
    try:
        db.swap()
        support.swap()
        swapped = True
        service.start(dest, say=say)
        check_health(dest, plan.src_counts)
    except BaseException as err:
        say(f"mirror failed after the swap: {err}; rolling back to the old state ...")
        _rollback(dest, db, support, swapped, was_running, say)
        if isinstance(err, CrdsOpsError):
            raise CrdsOpsError(f"{err}; rolled back: {dest.name} serves its old state again") from None
        raise
    say(f"{dest.name} was down for {time.monotonic() - stopped_at:.1f}s; it now serves {src.name}'s state "
        f"(context {plan.src_counts.get('operational_context')})")
    try:
        synced.delete_extraneous(max_delete=max_delete, must_have=(f"mappings/{dest.observatory}",), say=say)
    except CrdsOpsError as err:
        say(f"warning: {err}")
        raise
    finally:
        db.cleanup()
        support.cleanup()


def _rollback(dest, db, support, swapped, was_running, say) -> None:
    try:
        service.stop(dest, say=say)
    except CrdsOpsError as err:
        say(f"warning: could not stop {dest.name} for the rollback: {err}")
    problems = []
    for what, undo in (("database", db.rollback), ("support directories", support.rollback)):
        try:
            undo()
        except Exception as err:  # keep going: start the server whatever happened
            problems.append(f"{what}: {err}")
    if was_running or swapped:
        try:
            service.start(dest, say=say)
        except CrdsOpsError as err:
            problems.append(f"start: {err}")
    if problems:
        say(f"ROLLBACK INCOMPLETE: {'; '.join(problems)}; the safety copy is in {dest.root / 'mirror' / 'safety'}")


def check_health(dest: ServerConfig, expected: dict) -> None:
    counts = health.rpc(dest.local_url, "get_catalog_counts", timeout=15)
    health.rpc(dest.local_url, "get_server_info", timeout=15)
    if (counts.get("observatory"), counts.get("kind")) != (dest.observatory, dest.kind):
        raise CrdsOpsError(f"health check: {dest.local_url} answers as {counts.get('observatory')}."
                           f"{counts.get('kind')}, not {dest.name}")
    for key in ("operational_context", "references", "mappings", "contexts"):
        if counts.get(key) != expected.get(key):
            raise CrdsOpsError(f"health check: {dest.name} has {key} {counts.get(key)!r}, the source "
                               f"{expected.get(key)!r}")
