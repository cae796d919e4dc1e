"""Back up a server: database, support directories, listings; complete or absent.

A backup is a dated directory ``<backups.private_dir>/<YYYYmmddTHHMMSSZ>/`` holding

    database.sql.zst | database.sqlite3.zst   the database (see crdsops.dbdump)
    support/catalogs.tar.zst                  server_files/catalogs
    support/config.tar.zst                    <cache>/config/<obs>
    support/mappings.tar.zst                  <cache>/mappings/<obs>
    listings/references.tsv                   name, size, mtime_ns, sha1 of every reference file
    listings/deliveries.tsv                   path, size, mtime_ns under server_files/deliveries
    listings/packages.txt                     the stack's package list
    manifest.json                             written last (crdsops.manifest)

It is built under ``.tmp-<name>-<pid>`` in the same directory and renamed into place
once the manifest is written, so a backup is either complete or invisible. Once it
verifies, it is copied to the shared directory and published as ``<shared_dir>/<obs>.<kind>``
(a symbolic link to ``.<obs>.<kind>.<name>/``, replaced with one atomic rename; the
previous target is kept until the next publication). Then retention runs.

The file cache's references are listed, never copied (terabytes on the VMs): their
sha1 is computed once and reused from the previous listing while size and mtime agree.

Verification results are cached in ``<private_dir>/.verified.json`` (keyed by the
manifest's sha256) for ``inv backups`` and retention.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import __version__, failpoints
from crdsops import manifest as manifest_mod
from crdsops.config import ServerConfig
from crdsops.dbdump import compress_stream, compression, engine_for
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, fsync_dir, write_atomic
from crdsops.serverenv import manage

STAMP = "%Y%m%dT%H%M%SZ"  # the one name template: private dirs and shared targets use it
VERIFIED = ".verified.json"


def support_dirs(config: ServerConfig) -> dict[str, Path]:
    """What a backup carries besides the database, by label."""
    return {
        "catalogs": config.server_files / "catalogs",
        "config": config.cache / "config" / config.observatory,
        "mappings": config.cache / "mappings" / config.observatory,
    }


def shared_latest(config: ServerConfig) -> Path:
    return config.backups.shared_dir / config.name


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


# --- making one ----------------------------------------------------------------------

def plan(config: ServerConfig) -> list[str]:
    """What ``create`` would do, from read-only probes."""
    engine = engine_for(config)
    steps = [f"take the lock {config.root / 'run' / 'crdsops.lock'}",
             f"dump the {engine.describe()} database ({compression().name}) into a new dated directory "
             f"under {config.backups.private_dir} (written as .tmp-*, renamed when complete)"]
    for label, path in support_dirs(config).items():
        steps.append(f"archive {label}: {path}" + ("" if path.exists() else " (missing: archived empty)"))
    steps.append(f"list {config.cache / 'references' / config.observatory} (name, size, sha1) and "
                 f"{config.server_files / 'deliveries'}; record the stack's packages")
    steps.append("write manifest.json last; rename into place; verify it")
    steps.append(f"publish it as the shared latest {shared_latest(config)} (atomic replace)")
    b = config.backups
    steps.append(f"retention: keep the newest {b.keep} and all younger than {b.keep_days} days, "
                 f"at least {b.min_keep}, never the newest verified")
    return steps


def create(config: ServerConfig, say=print, purpose: str = "backup", publish: bool = True,
           retention: bool = True) -> Path:
    """Make one backup of ``config``'s server and return its directory.

    The caller holds the server lock (``crdsops.serverlock``). ``purpose="safety"`` is
    what restore and mirror take first: never published, same format.
    """
    b = config.backups
    ensure_dir(b.private_dir)
    _remove_leftovers(config, say)
    started = utcnow()
    name = _free_name(b.private_dir, started)
    tmp = b.private_dir / f".tmp-{name}-{os.getpid()}"
    ensure_dir(tmp)
    failpoints.hit("backup.started")
    engine = engine_for(config)
    dump_name = engine.dump_file_name()
    ensure_dir(tmp / "support")
    ensure_dir(tmp / "listings")
    previous = newest_listing(config)
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        jobs = {
            "dump": pool.submit(engine.create_dump, tmp / dump_name),
            "counts": pool.submit(_catalog_counts, config),
            "packages": pool.submit(_package_list, config, tmp / "listings" / "packages.txt"),
            "references": pool.submit(_list_references, config, tmp / "listings" / "references.tsv", previous),
            "deliveries": pool.submit(_list_tree, config.server_files / "deliveries",
                                      tmp / "listings" / "deliveries.tsv"),
        }
        support = {}
        for label, path in support_dirs(config).items():
            file = f"support/{label}.tar{compression().suffix}"
            support[label] = {"file": file, "target": str(path)}
            jobs["support:" + label] = pool.submit(_pack, path, tmp / file)
        results = {}
        for key, job in jobs.items():
            try:
                results[key] = job.result()
            except CrdsOpsError as err:
                raise CrdsOpsError(f"backup of {config.name} failed while making {key}: {err}") from None
    failpoints.hit("backup.dumped")
    migrations = engine.migrations()
    _private_modes(tmp)
    data = {
        "server": {"observatory": config.observatory, "kind": config.kind, "tier": config.tier,
                   "host": config.host, "url": config.url},
        "created": started.isoformat(timespec="seconds"),
        "finished": utcnow().isoformat(timespec="seconds"),
        "crdsops_version": __version__,
        "purpose": purpose,
        "database": {
            "engine": config.database.engine,
            "name": config.database.name,
            "file": dump_name,
            "compression": compression().name,
            "migrations": migrations,
            "counts": results["counts"],
        },
        "support": support,
        "listings": {"references": "listings/references.tsv", "deliveries": "listings/deliveries.tsv",
                     "packages": "listings/packages.txt", "packages_from": results["packages"]},
    }
    manifest_mod.write(tmp, data)
    failpoints.hit("backup.manifest")
    final = b.private_dir / name
    os.rename(tmp, final)
    fsync_dir(b.private_dir)
    failpoints.hit("backup.renamed")
    problems = manifest_mod.verify(final, deep=True)
    record_verification(config, final, problems)
    if problems:
        raise CrdsOpsError(f"backup {final} does not verify ({'; '.join(problems[:3])}); it was not published")
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    counts = results["counts"]
    say(f"backup {final}: {_human(size)}, {config.database.engine} database, "
        f"{counts.get('references')} references, {counts.get('mappings')} mappings, "
        f"context {counts.get('operational_context')}; verified")
    if publish:
        published = publish_latest(config, final)
        say(f"shared latest {shared_latest(config)} -> {published.name}")
    if retention:
        removed = apply_retention(config)
        for path in removed:
            say(f"retention: removed {path}")
    return final


def _free_name(directory: Path, when: datetime.datetime) -> str:
    base = when.strftime(STAMP)
    name, n = base, 1
    while (directory / name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


def _remove_leftovers(config: ServerConfig, say) -> None:
    """Partial backups of runs that died (we hold the lock: nobody else is writing)."""
    b = config.backups
    for path in b.private_dir.glob(".tmp-*"):
        say(f"removing the partial backup {path} left by an interrupted run")
        shutil.rmtree(path, ignore_errors=True)
    if b.shared_dir.exists():
        for path in b.shared_dir.glob(f".{config.name}.tmp-*"):
            say(f"removing the partial shared copy {path} left by an interrupted run")
            shutil.rmtree(path, ignore_errors=True)


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


def newest_listing(config: ServerConfig) -> dict[str, tuple[int, int, str]]:
    """{name: (size, mtime_ns, sha1)} from the newest private backup's reference listing."""
    for entry in private_backups(config):
        path = entry.path / "listings" / "references.tsv"
        if path.exists():
            out = {}
            for line in path.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) == 4 and not line.startswith("#"):
                    out[parts[0]] = (int(parts[1]), int(parts[2]), parts[3])
            return out
    return {}


def _list_references(config: ServerConfig, out: Path, previous: dict) -> None:
    base = config.cache / "references" / config.observatory
    lines = ["# name\tsize\tmtime_ns\tsha1"]
    if base.exists():
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            known = previous.get(entry.name)
            if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
                sha1 = known[2]
            else:
                sha1 = _sha1(Path(entry.path))
            lines.append(f"{entry.name}\t{st.st_size}\t{st.st_mtime_ns}\t{sha1}")
    write_atomic(out, "\n".join(lines) + "\n")


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
            raise CrdsOpsError(f"archiving {directory} failed: {label}: {err.strip()[-200:]}")


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
    shutil.copytree(backup, tmp, copy_function=shutil.copyfile)
    _private_modes(tmp)
    problems = manifest_mod.verify(tmp)
    if problems:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CrdsOpsError(f"the copy of {backup} in {shared} does not verify ({problems[0]}); "
                           f"the shared latest was left as it was; check that storage")
    if target.exists():
        shutil.rmtree(target)
    os.rename(tmp, target)
    failpoints.hit("backup.shared_copied")
    link = shared / name
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


# --- listing, verification state, retention ---------------------------------------------

@dataclass
class Entry:
    path: Path
    where: str  # "private" | "shared"
    manifest: dict | None = None
    error: str = ""
    size: int = 0
    state: str = "unverified"
    problems: list = field(default_factory=list)

    @property
    def created(self) -> datetime.datetime | None:
        try:
            return parse_time(self.manifest["created"]) if self.manifest else None
        except (KeyError, ValueError, TypeError):
            return None

    @property
    def engine(self) -> str:
        return ((self.manifest or {}).get("database") or {}).get("engine", "?")

    @property
    def purpose(self) -> str:
        return (self.manifest or {}).get("purpose", "?")


def _entry(path: Path, where: str, cache: dict) -> Entry:
    entry = Entry(path=path, where=where)
    try:
        entry.manifest = manifest_mod.load(path)
    except CrdsOpsError as err:
        entry.error = str(err)
        entry.state = "BAD"
        entry.problems = [str(err)]
    entry.size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if entry.manifest is not None:
        known = cache.get(_cache_key(path))
        if known:
            entry.state = "ok" if known["ok"] else "BAD"
            entry.problems = known.get("problems", [])
    return entry


def private_backups(config: ServerConfig) -> list[Entry]:
    """Every dated private backup, newest first (by manifest date; unreadable ones last)."""
    directory = config.backups.private_dir
    if not directory.exists():
        return []
    cache = _read_cache(config)
    entries = [_entry(p, "private", cache) for p in directory.iterdir()
               if p.is_dir() and not p.name.startswith(".")]
    epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return sorted(entries, key=lambda e: (e.created or epoch, e.path.name), reverse=True)


def shared_entry(config: ServerConfig) -> Entry | None:
    link = shared_latest(config)
    if not link.exists():
        return None
    return _entry(link, "shared", _read_cache(config))


def _cache_key(path: Path) -> str:
    try:
        digest = manifest_mod.sha256_of(path / manifest_mod.NAME)
    except OSError:
        digest = "none"
    return f"{path.resolve()}:{digest}"


def _read_cache(config: ServerConfig) -> dict:
    try:
        return json.loads((config.backups.private_dir / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}


def record_verification(config: ServerConfig, path: Path, problems: list[str]) -> None:
    cache = _read_cache(config)
    live = {str(p.resolve()) for p in config.backups.private_dir.iterdir()} if config.backups.private_dir.exists() else set()
    live.add(str(shared_latest(config).resolve()))
    cache = {k: v for k, v in cache.items() if k.rsplit(":", 1)[0] in live}
    cache[_cache_key(path)] = {"ok": not problems, "problems": problems[:20], "at": utcnow().isoformat(timespec="seconds")}
    ensure_dir(config.backups.private_dir)
    write_atomic(config.backups.private_dir / VERIFIED, json.dumps(cache, indent=1, sort_keys=True) + "\n")


def verify_entry(config: ServerConfig, entry: Entry, deep: bool = True) -> Entry:
    entry.problems = manifest_mod.verify(entry.path, deep=deep)
    entry.state = "ok" if not entry.problems else "BAD"
    record_verification(config, entry.path, entry.problems)
    return entry


def retention_plan(config: ServerConfig, now: datetime.datetime | None = None,
                   verify=None) -> tuple[list[Entry], list[Entry]]:
    """(keep, remove) among the private backups with a readable manifest.

    Keep the newest ``keep`` and all younger than ``keep_days`` days; never fewer than
    ``min_keep``; never the newest one that verifies. Dated by the manifest, not the name.
    """
    b = config.backups
    now = now or utcnow()
    entries = [e for e in private_backups(config) if e.created is not None]
    keep: list[Entry] = []
    for i, entry in enumerate(entries):
        if i < b.keep or entry.created >= now - datetime.timedelta(days=b.keep_days):
            keep.append(entry)
    verify = verify or (lambda e: e.state == "ok" or (e.state == "unverified" and verify_entry(config, e).state == "ok"))
    for entry in entries:
        if verify(entry):
            if entry not in keep:
                keep.append(entry)
            break
    for entry in entries:
        if len(keep) >= b.min_keep:
            break
        if entry not in keep:
            keep.append(entry)
    remove = [e for e in entries if e not in keep]
    return keep, remove


def apply_retention(config: ServerConfig) -> list[Path]:
    _keep, remove = retention_plan(config)
    removed = []
    for entry in remove:
        # rename first, so a half-deleted backup never looks like one
        doomed = entry.path.with_name(f".tmp-deleting-{entry.path.name}")
        os.rename(entry.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(entry.path)
    return removed


def find(config: ServerConfig, spec: str | None) -> Path:
    """A backup by ``spec``: None (the shared latest), a path, or a date/name prefix of a private one."""
    if spec is None:
        link = shared_latest(config)
        if not link.exists():
            raise CrdsOpsError(f"{config.name} has no shared latest backup ({link}); run `inv backup` first "
                               "or give --from DATE|PATH")
        return link
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    key = spec.replace("-", "").replace(":", "")
    matches = [e.path for e in private_backups(config) if e.path.name.startswith(key)]
    if not matches:
        raise CrdsOpsError(f"no backup matches {spec!r} in {config.backups.private_dir}; `inv backups` lists them")
    return matches[0]  # the newest of that date (private_backups is newest first); the plan names it


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


human = _human
