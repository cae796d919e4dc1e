"""Back up a server: database, support directories, listings; complete or absent.

A backup is a dated directory ``<backups.private_dir>/<YYYYmmddTHHMMSSZ>/`` holding

    database.sql.zst | database.sqlite3.zst   the database (see crdsops.db.engines)
    support/catalogs.tar.zst                  server_files/catalogs
    support/config.tar.zst                    <cache>/config/<obs>
    support/mappings.tar.zst                  <cache>/mappings/<obs>
    listings/references.tsv                   name, size, mtime_ns, sha1 of every reference file
    listings/deliveries.tsv                   path, size, mtime_ns under server_files/deliveries
    listings/pickles.tsv                      path, size, mtime_ns under <cache>/pickles/<obs>
    listings/packages.txt                     the stack's package list
    manifest.json                             written last (crdsops.data.manifest)

It is built under ``.tmp-<name>-<pid>`` in the same directory and renamed into place
once the manifest is written, so a backup is either complete or invisible; whatever stops
it (a failure, a full disk, an interrupt) removes that directory before the task ends.
Once it verifies, it is copied to the shared directory and published as
``<shared_dir>/<obs>.<kind>`` (a symbolic link to ``.<obs>.<kind>.<name>/``, replaced with
one atomic rename; the previous target is kept until the next publication). Then retention
runs (``crdsops.data.inventory``), and with ``backups.offsite`` on, the encrypted off-site copy
is made (``crdsops.data.offsite``: its failure is a warning, never the backup's).

The file cache's references are listed, never copied (terabytes on the VMs): their
sha1 is computed once and reused from the previous listing while size and mtime agree.
A mirror fetches by these listings (``crdsops.remote.catalog_sync``), not by walking the
source's cache.
"""

from __future__ import annotations

import datetime
import errno
import functools
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crdsops import __version__, commands, failpoints, interrupts
from crdsops.config.model import ServerConfig
from crdsops.data import manifest as manifest_mod
from crdsops.data import offsite
from crdsops.data.inventory import (
    STAMP,
    Entry,
    apply_retention,
    human,
    newest_listing,
    private_backups,
    record_verification,
    retention_rule,
    shared_latest,
    utcnow,
)
from crdsops.data.manifest import (
    BinlogPosition, DatabaseDump, FileEntry, Listings, Manifest, ServerIdentity, SupportArchive,
)
from crdsops.db.compression import Checked, compress_stream, compression, finish
from crdsops.db.engines import engine_for
from crdsops.errors import CrdsOpsError
from crdsops.files import digest, ensure_dir, fsync_dir, kept_beside, write_atomic
from crdsops.parallel import JobsFailed, side_by_side
from crdsops.db.catalog import counts as catalog_counts
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import BackupOutcome, BackupRef
from crdsops.steps import Plan
from crdsops.timefmt import to_the_millisecond

log = logging.getLogger(__name__)


def support_dirs(config: ServerConfig) -> dict[str, Path]:
    """What a backup carries besides the database, by label."""
    layout = config.layout
    return {"catalogs": layout.catalogs, "config": layout.cache_tree("config"), "mappings": layout.mappings}


@dataclass(frozen=True)
class BackupFacts:
    """What ``inv backup`` finds before it starts: the sources (the private backups are listed beside the dump)."""

    engine: str  # the database, as ``Engine.describe`` names it
    support: dict[str, bool]  # label -> whether its directory exists


class Backup(Operation):
    """``inv backup``: make a backup, seal and verify it, publish it as the shared latest, apply retention."""

    task = "backup"
    notifying = True

    def __init__(self, config: ServerConfig):
        super().__init__(config)
        self.made: BackupRun | None = None

    def probe(self) -> BackupFacts:
        config = self.config
        return BackupFacts(engine_for(config).describe(),
                           {label: path.exists() for label, path in support_dirs(config).items()})

    def plan(self, facts: BackupFacts) -> Plan:
        self.made = BackupRun(self.config)
        return self.made.plan(facts)

    def run(self, plan: Plan) -> BackupOutcome:
        self.made.execute(plan)
        return self.outcome()

    def outcome(self) -> BackupOutcome | None:
        made = self.made
        if made is None or made.final is None or made.manifest is None or made.tmp is not None:
            return None
        return BackupOutcome(made.ref(), shared_latest(self.config) if made.published else None, made.manifest.counts)


class BackupRun:
    """One backup being made (``inv backup``'s, or a restore's safety backup): its steps and what they made.

    ``kept_old``: of the old state a restore's swap kept aside (the database ``Engine.old``, the support
    directories ``files.kept_beside(target)``), not of the live one; the listings of the cache are the live ones
    (a swap does not touch the cache)."""

    def __init__(self, config: ServerConfig, purpose: str = "backup", publish: bool = True,
                 retention: bool = True, kept_old: bool = False):
        self.config, self.purpose = config, purpose
        self.publish, self.retention, self.kept_old = publish, retention, kept_old
        # The private backups, listed once per run, on first use: by the references job beside the
        # dump (reading their manifests and the newest references listing, 200,000 lines on HST,
        # is no longer done before the dump starts)
        self._listed: list[Entry] | None = None
        self._listing = threading.Lock()
        self.say = log.info if purpose == "backup" else log.debug  # a safety backup is one step of another task
        self.started: datetime.datetime | None = None
        self.tmp: Path | None = None
        self.final: Path | None = None
        self.manifest: Manifest | None = None
        self.hashed: dict[str, FileEntry] = {}  # sha256s computed as each file was finished
        self.tested: dict[str, str | None] = {}  # compressed file -> what is wrong (None: decompressed as written)
        self.published = False

    def plan(self, facts: BackupFacts | None = None) -> Plan:
        config, b = self.config, self.config.backups
        facts = facts or BackupFacts(self._describe_engine(),
                                     {label: self._source(path).exists() for label, path in support_dirs(config).items()})
        what = "safety backup" if self.purpose == "safety" else "backup"
        p = Plan(f"backing up {config.name}" if self.purpose == "backup" else f"a safety backup of {config.name}")
        p.add(f"hold the lock {config.layout.lock}")
        archives = "; ".join(f"archive {label} {self._source(path)}"
                             + ("" if facts.support[label] else " (missing: archived empty)")
                             for label, path in support_dirs(config).items())
        p.add(f"side by side, into a new dated directory under {b.private_dir} (written as .tmp-*): dump the "
              f"{facts.engine} database ({compression().name}); {archives}; list {config.layout.references} "
              f"(name, size, sha1) and {config.layout.deliveries}; record the stack's packages; hash each file "
              "(the compressed ones hashed and decompressed to their end as they are written)",
              self._make_contents, name=f"{what}: dumping")
        p.add("write manifest.json last; rename the directory into place; verify it (sizes, and every "
              "compressed file decompressed to its end)", self._seal, name=f"{what}: sealing")
        if self.publish:
            p.add(f"publish it as the shared latest {shared_latest(config)} (copied and checked against the "
                  "manifest's sha256s as it is copied; atomic replace)", self._publish, name=f"{what}: publishing")
        if self.retention:
            p.add(f"retention: {retention_rule(b)}", self._retain, name=f"{what}: retention")
        if self.purpose == "backup" and b.offsite.enabled:  # a safety backup stays on this machine
            p.add(offsite.plan_text(config), self._offsite, name=f"{what}: off-site copy")
        return p

    @property
    def listed(self) -> list[Entry]:
        """The private backups before this one, newest first."""
        with self._listing:
            if self._listed is None:
                self._listed = private_backups(self.config)
            return self._listed

    def _source(self, target: Path) -> Path:
        """What is archived for the support directory ``target``."""
        return kept_beside(target) if self.kept_old else target

    def _describe_engine(self) -> str:
        engine = engine_for(self.config)
        return f"{engine.engine} {engine.old} (the old state kept by the swap)" if self.kept_old else engine.describe()

    def execute(self, plan: Plan | None = None) -> Path:
        """Run the steps; on any failure or interrupt remove what was made, then raise."""
        config = self.config
        ensure_dir(config.backups.private_dir)
        remove_leftovers(config)
        try:
            (plan or self.plan()).run()
        except BaseException as err:
            with interrupts.shielded():
                self._discard()
            if isinstance(err, KeyboardInterrupt):
                raise
            full = _full_disk(config, err, lambda: self.listed)
            if full:
                raise CrdsOpsError(full) from None
            if isinstance(err, JobsFailed):
                raise CrdsOpsError(f"backup of {config.name} failed while making {err}; "
                                   "the partial backup was removed") from None
            raise
        return self.final

    def ref(self) -> BackupRef:
        return BackupRef(self.final.name, self.final, self.manifest.created, self.manifest.server.name)

    # --- the steps ----------------------------------------------------------------------

    def _make_contents(self) -> None:
        config = self.config
        self.started = utcnow()
        name = _free_name(config.backups.private_dir, self.started)
        self.tmp = config.backups.private_dir / f".tmp-{name}-{os.getpid()}"
        self.final = config.backups.private_dir / name
        ensure_dir(self.tmp)
        failpoints.hit("backup.started")
        ensure_dir(self.tmp / "support")
        ensure_dir(self.tmp / "listings")
        support = {label: SupportArchive(f"support/{label}.tar{compression().suffix}", str(path))
                   for label, path in support_dirs(config).items()}
        engine = engine_for(config)
        results = side_by_side(self._jobs(engine, support)).results
        failpoints.hit("backup.dumped")
        _private_modes(self.tmp)
        self.manifest = Manifest(
            server=ServerIdentity(config.observatory, config.kind, config.host, config.url, config.tier),
            created=to_the_millisecond(self.started), finished=utcnow().replace(microsecond=0),
            crdsops_version=__version__, purpose=self.purpose,
            database=DatabaseDump(engine=config.database.engine, name=config.database.name,
                                  file=engine.dump_file_name(), compression=compression().name,
                                  migrations=results["migrations"], counts=results["counts"],
                                  binlog=BinlogPosition.from_dict(results["dump"]) if results["dump"] else None),
            support=support, listings=Listings(packages_from=results["packages"]),
        )

    def _jobs(self, engine, support: dict[str, SupportArchive]) -> dict:
        """The side-by-side jobs of the contents; each hashes the file it made once it is finished."""
        config, listings, old = self.config, Listings(), self.kept_old
        hashed = self._hashed
        jobs = {
            "dump": self._checked(engine.dump_file_name(),
                                  lambda out, checked: engine.create_dump(out, old=old, checked=checked)),
            "counts": lambda: catalog_counts(config, database=str(engine.old) if old else None),
            "migrations": lambda: engine.migrations(old=old),
            "packages": hashed(listings.packages, lambda out: _package_list(config, out)),
            "references": hashed(listings.references,
                                 lambda out: _list_references(config, out, newest_listing(self.listed))),
            "deliveries": hashed(listings.deliveries, lambda out: _list_tree(config.layout.deliveries, out)),
            "pickles": hashed(listings.pickles, lambda out: _list_tree(config.layout.cache_tree("pickles"), out)),
        }
        for label, archive in support.items():
            jobs["support:" + label] = self._checked(archive.file,
                                                     functools.partial(_pack, self._source(Path(archive.target))))
        return jobs

    def _checked(self, rel: str, make):
        """A job that makes the compressed ``rel``, its bytes hashed and tested as they are written
        (``compression.Checked``): the seal reads none of them again."""
        def job():
            out, checked = self.tmp / rel, Checked()
            result = make(out, checked)
            size = out.stat().st_size
            if size != checked.size:  # what passed through is not what the file holds
                raise CrdsOpsError(f"{out} holds {size} bytes, {checked.size} were written to it")
            self.hashed[rel] = FileEntry(size, checked.sha256)
            self.tested[rel] = checked.problem
            return result
        return job

    def _hashed(self, rel: str, make):
        """A job that makes ``rel`` in the backup being built, then keeps its size and sha256."""
        def job():
            out = self.tmp / rel
            result = make(out)
            self.hashed[rel] = FileEntry(out.stat().st_size, digest(out))
            return result
        return job

    def _seal(self) -> None:
        config = self.config
        self.manifest.write(self.tmp, self.hashed)
        failpoints.hit("backup.manifest")
        os.rename(self.tmp, self.final)
        self.tmp = None
        fsync_dir(config.backups.private_dir)
        failpoints.hit("backup.renamed")
        problems = manifest_mod.verify(self.final, deep=True, hashes=False, tested=self.tested)
        record_verification(config, self.final, problems)
        if problems:
            raise CrdsOpsError(f"backup {self.final} does not verify ({'; '.join(problems[:3])}); it was not published")
        size = sum(p.stat().st_size for p in self.final.rglob("*") if p.is_file())
        self.say(f"backup {self.final}: {human(size)}, {config.database.engine} database, "
                 f"{self.manifest.counts.describe()}; verified")

    def _publish(self) -> None:
        published = publish_latest(self.config, self.final, Manifest.load(self.final))
        self.published = True
        self.say(f"shared latest {shared_latest(self.config)} -> {published.name}")

    def _retain(self) -> None:
        made = Entry(self.final, "private", self.manifest, state="ok")
        removed = apply_retention(self.config, [made, *self.listed])
        for path in removed:
            self.say(f"retention: removed {path}")
        self._retain_binlogs([e for e in [made, *self.listed] if e.path not in removed])

    def _retain_binlogs(self, kept: list[Entry]) -> None:
        """Archived binlogs older than the oldest kept backup's coordinates are of no restore's use."""
        from crdsops.data import binlogs

        starts = [e.manifest.database.binlog.file for e in kept
                  if e.manifest is not None and e.manifest.database.binlog is not None]
        if starts and binlogs.archive_dir(self.config).is_dir():
            oldest = min(starts, key=lambda name: int(name.rsplit(".", 1)[-1]))
            for name in binlogs.prune_before(self.config, oldest):
                self.say(f"retention: removed the archived binlog {name} (before the oldest backup kept)")

    def _offsite(self) -> None:
        offsite.after_backup(self.config, self.final, self.manifest)  # warns, never fails the backup

    def _discard(self) -> None:
        """Remove the partial backup (a sealed one stays: it is complete and verified or marked BAD)."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        shared = self.config.backups.shared_dir
        if shared.exists():
            for path in shared.glob(f".{self.config.name}.tmp-*-{os.getpid()}"):
                shutil.rmtree(path, ignore_errors=True)


def create(config: ServerConfig, purpose: str = "backup", publish: bool = True,
           retention: bool = True, kept_old: bool = False) -> Path:
    """Make one backup of ``config``'s server and return its directory.

    The caller holds the server lock (``crdsops.runtime.lock``). ``purpose="safety"``, ``kept_old``
    is what restore and mirror take after their swap, of the old state it kept: never published,
    same format, said only at debug level.
    """
    return BackupRun(config, purpose, publish, retention, kept_old=kept_old).execute()


def _free_name(directory: Path, when: datetime.datetime) -> str:
    base = when.strftime(STAMP)
    name, n = base, 1
    while (directory / name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


def remove_leftovers(config: ServerConfig) -> None:
    """Partial backups of runs that died (we hold the lock: nobody else is writing)."""
    b = config.backups
    for path in b.private_dir.glob(".tmp-*"):
        log.info(f"removing the partial backup {path} left by an interrupted run")
        shutil.rmtree(path, ignore_errors=True)
    if b.shared_dir.exists():
        for path in b.shared_dir.glob(f".{config.name}.tmp-*"):
            log.info(f"removing the partial shared copy {path} left by an interrupted run")
            shutil.rmtree(path, ignore_errors=True)


def _full_disk(config: ServerConfig, err: BaseException, listed: Callable[[], list[Entry]]) -> str | None:
    """The one line for a backup that ran out of space, naming the disk and the space needed."""
    text = str(err)
    hit = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or any(
        marker in text for marker in ("No space left", "disk is full", "ENOSPC"))
    if not hit:
        return None
    disks = []
    for label, where in (("backups.private_dir", config.backups.private_dir),
                         ("backups.shared_dir", config.backups.shared_dir)):
        try:
            disks.append((shutil.disk_usage(where).free, label, where))
        except OSError:
            continue
    if not disks:
        return None
    free, label, where = min(disks)  # the fuller of the two disks a backup writes to
    return (f"the backup disk is full: {where} ({label}) has {human(free)} free, a backup of "
            f"{config.name} needs about {human(_needed(config, listed()))}; the partial backup was removed. "
            f"Free space there (`inv backups` lists the backups; the backups.keep* keys set which stay) "
            f"or move {label}")


def _needed(config: ServerConfig, listed: list[Entry]) -> int:
    """About what a new backup takes: the newest one's size, else the live database's."""
    for entry in listed:
        if entry.size:
            return int(entry.size * 1.1)
    db = Path(config.database.name)
    return db.stat().st_size if not config.database.is_mysql and db.exists() else 0


# --- what goes into one ------------------------------------------------------------------

def _package_list(config: ServerConfig, out: Path) -> str:
    recorded = config.stack.prefix / "crdsops-packages.txt"
    if recorded.exists():
        shutil.copyfile(recorded, out)
        return str(recorded)
    python = config.stack.python
    if not python.exists():
        write_atomic(out, f"# no stack at {config.stack.prefix}\n")
        return "none"
    result = commands.run([python, "-m", "pip", "freeze", "--all"], check=False, timeout=120)
    write_atomic(out, result.stdout if result.ok else f"# pip freeze failed: {result.last_error_line()}\n")
    return "pip freeze"


def _list_references(config: ServerConfig, out: Path, previous: dict) -> None:
    base = config.layout.references
    lines = ["# name\tsize\tmtime_ns\tsha1"]
    if base.exists():
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            interrupts.check()
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            known = previous.get(entry.name)
            if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
                sha1 = known[2]
            else:
                sha1 = digest(Path(entry.path), "sha1")
            lines.append(f"{entry.name}\t{st.st_size}\t{st.st_mtime_ns}\t{sha1}")
    write_atomic(out, "\n".join(lines) + "\n")


def _list_tree(base: Path, out: Path) -> None:
    lines = ["# path\tsize\tmtime_ns"]
    if base.exists():
        for path in sorted(base.rglob("*")):
            if path.is_file():
                st = path.stat()
                lines.append(f"{path.relative_to(base).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}")
    write_atomic(out, "\n".join(lines) + "\n")


def _pack(directory: Path, out: Path, checked: Checked | None = None) -> None:
    """``tar`` the contents of ``directory`` (owners and modes kept), compressed, into ``out``."""
    if directory.exists():
        argv = ["tar", "-C", str(directory), "-cf", "-", "."]
    else:
        argv = ["tar", "-cf", "-", "--files-from=/dev/null"]
    tar = commands.start(argv, what=f"archiving {directory}", stdout=commands.PIPE, stderr=commands.PIPE)
    try:
        comp = compress_stream(tar.stdout, out, checked)
    finally:
        tar.stdout.close()
    try:
        finish([("tar", tar), ("compressor", comp)])
    except CrdsOpsError as err:
        raise CrdsOpsError(f"archiving {directory} failed: {err}") from None
    finally:
        if checked is not None:
            checked.wait()


def _private_modes(directory: Path) -> None:
    os.chmod(directory, 0o700)
    for path in directory.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


# --- the shared latest -----------------------------------------------------------------

def publish_latest(config: ServerConfig, backup: Path, manifest: Manifest) -> Path:
    """Copy a verified backup to the shared dir (checked as it is copied) and point ``<obs>.<kind>`` at it."""
    shared = config.backups.shared_dir
    ensure_dir(shared)
    name = config.name
    target = shared / f".{name}.{backup.name}"
    tmp = shared / f".{name}.tmp-{backup.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        problems = copy_checked(backup, tmp, manifest)
        _private_modes(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if problems:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CrdsOpsError(f"the copy of {backup} in {shared} does not verify ({problems[0]}); "
                           f"the shared latest was left as it was; check that storage")
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
    failpoints.hit("backup.shared_copied")
    _point_latest(config, target)
    return target


def copy_checked(backup: Path, copy: Path, manifest: Manifest, block: int = 1 << 20) -> list[str]:
    """Copy every file of ``backup`` to ``copy``, hashing what is read as it is copied; what differs from ``manifest``.

    The one pass over each file that a publication needs: the bytes written are the bytes hashed,
    and each must have the manifest's size and sha256; a file not in the manifest is a problem too.
    """
    problems = []
    names = sorted(p.relative_to(backup).as_posix() for p in backup.rglob("*") if p.is_file())
    for rel in names:
        interrupts.check()
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        sha, size = hashlib.sha256(), 0
        with open(backup / rel, "rb") as source, open(copy / rel, "wb") as out:
            while chunk := source.read(block):
                sha.update(chunk)
                out.write(chunk)
                size += len(chunk)
        entry = manifest.files.get(rel)
        if rel == manifest_mod.NAME:
            continue
        if entry is None:
            problems.append(f"{rel}: not in the manifest")
        elif (size, sha.hexdigest()) != (entry.size, entry.sha256):
            problems.append(f"{rel}: differs from the manifest (size {size}, sha256 {sha.hexdigest()[:12]}...)")
    problems += [f"{rel}: missing" for rel in sorted(set(manifest.files) - set(names))]
    return problems


def _point_latest(config: ServerConfig, target: Path) -> None:
    """Point ``<shared_dir>/<obs>.<kind>`` at ``target`` with one atomic rename; drop older copies."""
    shared, name = config.backups.shared_dir, config.name
    link = shared_latest(config)
    previous = os.readlink(link) if link.is_symlink() else None
    if link.exists() and not link.is_symlink():  # a directory left by hand: keep it aside
        os.rename(link, shared / f".{name}.replaced-{utcnow().strftime(STAMP)}")
    new_link = shared / f".{name}.link-{os.getpid()}"
    new_link.unlink(missing_ok=True)
    os.symlink(target.name, new_link)
    os.replace(new_link, link)  # the atomic step: readers see the old or the new, never neither
    fsync_dir(shared)
    record_verification(config, link, [])
    failpoints.hit("backup.published")
    keep = {target.name, previous}  # the previous stays for readers that opened it already
    for old in shared.glob(f".{name}.*"):
        if old.name not in keep and not old.name.startswith(f".{name}.tmp-") and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
