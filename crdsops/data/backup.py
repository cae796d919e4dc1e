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
runs (``crdsops.data.inventory``).

The file cache's references are listed, never copied (terabytes on the VMs): their
sha1 is computed once and reused from the previous listing while size and mtime agree.
A mirror fetches by these listings (``crdsops.remote.catalog_sync``), not by walking the
source's cache.
"""

from __future__ import annotations

import datetime
import errno
import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

from crdsops import __version__, failpoints, interrupts
from crdsops.config.model import ServerConfig
from crdsops.data import manifest as manifest_mod
from crdsops.data.inventory import (
    STAMP,
    apply_retention,
    human,
    newest_listing,
    private_backups,
    record_verification,
    shared_latest,
    utcnow,
)
from crdsops.data.manifest import DatabaseDump, Listings, Manifest, ServerIdentity, SupportArchive
from crdsops.db.compression import compress_stream, compression, stage_failure
from crdsops.db.engines import engine_for
from crdsops.errors import CrdsOpsError
from crdsops.files import digest, ensure_dir, fsync_dir, write_atomic
from crdsops.parallel import JobsFailed, side_by_side
from crdsops.runtime.environ import manage
from crdsops.steps import Plan


def support_dirs(config: ServerConfig) -> dict[str, Path]:
    """What a backup carries besides the database, by label."""
    layout = config.layout
    return {"catalogs": layout.catalogs, "config": layout.cache_tree("config"), "mappings": layout.mappings}


class BackupRun:
    """One backup being made: its plan, its temporary directory, what it produced."""

    def __init__(self, config: ServerConfig, say=print, purpose: str = "backup", publish: bool = True,
                 retention: bool = True):
        self.config, self.say, self.purpose = config, say, purpose
        self.publish, self.retention = publish, retention
        self.started: datetime.datetime | None = None
        self.tmp: Path | None = None
        self.final: Path | None = None
        self.manifest: Manifest | None = None

    def plan(self) -> Plan:
        config, b = self.config, self.config.backups
        engine = engine_for(config)
        what = "safety backup" if self.purpose == "safety" else "backup"
        p = Plan(f"backing up {config.name}" if self.purpose == "backup" else f"a safety backup of {config.name}")
        p.add(f"hold the lock {config.layout.lock} (taken by the task)")
        archives = "; ".join(f"archive {label} {path}" + ("" if path.exists() else " (missing: archived empty)")
                             for label, path in support_dirs(config).items())
        p.add(f"side by side, into a new dated directory under {b.private_dir} (written as .tmp-*): dump the "
              f"{engine.describe()} database ({compression().name}); {archives}; list {config.layout.references} "
              f"(name, size, sha1) and {config.layout.deliveries}; record the stack's packages",
              self._make_contents, name=f"{what}: dumping")
        p.add("write manifest.json last; rename the directory into place; verify it", self._seal,
              name=f"{what}: sealing")
        if self.publish:
            p.add(f"publish it as the shared latest {shared_latest(config)} (atomic replace)", self._publish,
                  name=f"{what}: publishing")
        if self.retention:
            p.add(f"retention: keep the newest {b.keep} and all younger than {b.keep_days} days, "
                  f"at least {b.min_keep}, never the newest verified", self._retain, name=f"{what}: retention")
        return p

    def run(self) -> Path:
        """Make the backup; on any failure or interrupt remove what was made, then raise."""
        config = self.config
        ensure_dir(config.backups.private_dir)
        remove_leftovers(config, self.say)
        steps = self.plan()
        try:
            steps.run()
        except BaseException as err:
            with interrupts.shielded():
                self._discard()
            if isinstance(err, KeyboardInterrupt):
                raise
            full = _full_disk(config, err)
            if full:
                raise CrdsOpsError(full) from None
            if isinstance(err, JobsFailed):
                raise CrdsOpsError(f"backup of {config.name} failed while making {err}; "
                                   "the partial backup was removed") from None
            raise
        return self.final

    # --- the steps ----------------------------------------------------------------------

    def _make_contents(self) -> None:
        config, b = self.config, self.config.backups
        self.started = utcnow()
        name = _free_name(b.private_dir, self.started)
        self.tmp = b.private_dir / f".tmp-{name}-{os.getpid()}"
        self.final = b.private_dir / name
        ensure_dir(self.tmp)
        failpoints.hit("backup.started")
        tmp = self.tmp
        engine = engine_for(config)
        dump_name = engine.dump_file_name()
        ensure_dir(tmp / "support")
        ensure_dir(tmp / "listings")
        listings = Listings()
        previous = newest_listing(config)
        support = {label: SupportArchive(f"support/{label}.tar{compression().suffix}", str(path))
                   for label, path in support_dirs(config).items()}
        jobs = {
            "dump": lambda: engine.create_dump(tmp / dump_name),
            "counts": lambda: _catalog_counts(config),
            "packages": lambda: _package_list(config, tmp / listings.packages),
            "references": lambda: _list_references(config, tmp / listings.references, previous),
            "deliveries": lambda: _list_tree(config.layout.deliveries, tmp / listings.deliveries),
            "pickles": lambda: _list_tree(config.layout.cache_tree("pickles"), tmp / listings.pickles),
        }
        for label, archive in support.items():
            jobs["support:" + label] = functools.partial(_pack, Path(archive.target), tmp / archive.file)
        results = side_by_side(jobs).results
        failpoints.hit("backup.dumped")
        _private_modes(tmp)
        self.manifest = Manifest(
            server=ServerIdentity(config.observatory, config.kind, config.host, config.url, config.tier),
            created=self.started.isoformat(timespec="seconds"),
            finished=utcnow().isoformat(timespec="seconds"),
            crdsops_version=__version__,
            purpose=self.purpose,
            database=DatabaseDump(engine=config.database.engine, name=config.database.name, file=dump_name,
                                  compression=compression().name, migrations=engine.migrations(),
                                  counts=results["counts"]),
            support=support,
            listings=Listings(packages_from=results["packages"]),
        )

    def _seal(self) -> None:
        config, b = self.config, self.config.backups
        self.manifest.write(self.tmp)
        failpoints.hit("backup.manifest")
        os.rename(self.tmp, self.final)
        self.tmp = None
        fsync_dir(b.private_dir)
        failpoints.hit("backup.renamed")
        problems = manifest_mod.verify(self.final, deep=True)
        record_verification(config, self.final, problems)
        if problems:
            raise CrdsOpsError(f"backup {self.final} does not verify ({'; '.join(problems[:3])}); it was not published")
        size = sum(p.stat().st_size for p in self.final.rglob("*") if p.is_file())
        counts = self.manifest.counts
        self.say(f"backup {self.final}: {human(size)}, {config.database.engine} database, "
                 f"{counts.get('references')} references, {counts.get('mappings')} mappings, "
                 f"context {counts.get('operational_context')}; verified")

    def _publish(self) -> None:
        published = publish_latest(self.config, self.final)
        self.say(f"shared latest {shared_latest(self.config)} -> {published.name}")

    def _retain(self) -> None:
        for path in apply_retention(self.config):
            self.say(f"retention: removed {path}")

    def _discard(self) -> None:
        """Remove the partial backup (a sealed one stays: it is complete and verified or marked BAD)."""
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        shared = self.config.backups.shared_dir
        if shared.exists():
            for path in shared.glob(f".{self.config.name}.tmp-*-{os.getpid()}"):
                shutil.rmtree(path, ignore_errors=True)


def create(config: ServerConfig, say=print, purpose: str = "backup", publish: bool = True,
           retention: bool = True) -> Path:
    """Make one backup of ``config``'s server and return its directory.

    The caller holds the server lock (``crdsops.runtime.lock``). ``purpose="safety"`` is
    what restore and mirror take first: never published, same format.
    """
    return BackupRun(config, say, purpose, publish, retention).run()


def plan(config: ServerConfig) -> Plan:
    """The steps ``create`` runs, for ``inv backup --dry-run``."""
    return BackupRun(config).plan()


def _free_name(directory: Path, when: datetime.datetime) -> str:
    base = when.strftime(STAMP)
    name, n = base, 1
    while (directory / name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


def remove_leftovers(config: ServerConfig, say=print) -> None:
    """Partial backups of runs that died (we hold the lock: nobody else is writing)."""
    b = config.backups
    for path in b.private_dir.glob(".tmp-*"):
        say(f"removing the partial backup {path} left by an interrupted run")
        shutil.rmtree(path, ignore_errors=True)
    if b.shared_dir.exists():
        for path in b.shared_dir.glob(f".{config.name}.tmp-*"):
            say(f"removing the partial shared copy {path} left by an interrupted run")
            shutil.rmtree(path, ignore_errors=True)


def _full_disk(config: ServerConfig, err: BaseException) -> str | None:
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
            f"{config.name} needs about {human(_needed(config))}; the partial backup was removed. "
            f"Free space there (`inv backups` lists the backups; backups.keep sets how many stay) or move {label}")


def _needed(config: ServerConfig) -> int:
    """About what a new backup takes: the newest one's size, else the live database's."""
    for entry in private_backups(config):
        if entry.size:
            return int(entry.size * 1.1)
    db = Path(config.database.name)
    return db.stat().st_size if not config.database.is_mysql and db.exists() else 0


# --- what goes into one ------------------------------------------------------------------

def _catalog_counts(config: ServerConfig) -> dict:
    result = manage(config, "catalog_counts", capture=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise CrdsOpsError(f"manage.py catalog_counts printed no JSON ({result.stdout.strip()[:80]!r})") from None


def _package_list(config: ServerConfig, out: Path) -> str:
    recorded = config.stack.prefix / "crdsops-packages.txt"
    if recorded.exists():
        shutil.copyfile(recorded, out)
        return str(recorded)
    python = config.stack.python
    if not python.exists():
        write_atomic(out, f"# no stack at {config.stack.prefix}\n")
        return "none"
    result = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], capture_output=True, text=True)
    write_atomic(out, result.stdout if result.returncode == 0 else f"# pip freeze failed: {result.stderr.strip()}\n")
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


def _pack(directory: Path, out: Path) -> None:
    """``tar`` the contents of ``directory`` (owners and modes kept), compressed, into ``out``."""
    if directory.exists():
        argv = ["tar", "-C", str(directory), "-cf", "-", "."]
    else:
        argv = ["tar", "-cf", "-", "--files-from=/dev/null"]
    tar = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        comp = compress_stream(tar.stdout, out)
    finally:
        tar.stdout.close()
    for label, proc in (("tar", tar), ("compressor", comp)):
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise CrdsOpsError(f"archiving {directory} failed: {stage_failure(label, proc.returncode, err)}")


def _private_modes(directory: Path) -> None:
    os.chmod(directory, 0o700)
    for path in directory.rglob("*"):
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


# --- the shared latest -----------------------------------------------------------------

def publish_latest(config: ServerConfig, backup: Path) -> Path:
    """Copy a verified backup to the shared dir and point ``<obs>.<kind>`` at it atomically."""
    shared = config.backups.shared_dir
    ensure_dir(shared)
    name = config.name
    target = shared / f".{name}.{backup.name}"
    tmp = shared / f".{name}.tmp-{backup.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(backup, tmp, copy_function=shutil.copyfile)
        _private_modes(tmp)
        problems = manifest_mod.verify(tmp)
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
    return target
