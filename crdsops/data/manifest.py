"""The manifest of a backup: what it holds, whose it is, and how to check it.

A backup is a directory; ``manifest.json`` is the last file written into it. The
``Manifest`` record is its one description; the JSON says:

    format            "crdsops-backup/1"
    server            {observatory, kind, tier, host, url}
    created           ISO 8601 UTC time the backup was started, to the millisecond (retention dates
                      by this; a point-in-time restore orders it against the swaps in the audit log)
    finished          when it was complete
    crdsops_version
    purpose           "backup" | "safety"
    database          {engine, name, file (the dump), compression, migrations: [[app, name], ...],
                       counts: {references, mappings, contexts, operational_context},
                       binlog: {file, position} (MySQL with a binary log: the dump's snapshot) or null}
    support           {label: {file, target}}   tarballs of the support directories
    listings          {references, deliveries, pickles, packages, packages_from}: file names
    files             {relative path: {size, sha256}} for every other file of the backup

``Manifest.load(path)`` reads and checks it; ``verify(path)`` returns a list of problems
(empty: the backup is intact); ``deep=True`` also reads every compressed file to its end.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import commands
from crdsops.db.catalog import CatalogCounts
from crdsops.errors import CrdsOpsError
from crdsops.files import digest, fsync_dir, write_atomic
from crdsops.records import Record, RecordError

NAME = "manifest.json"
FORMAT = "crdsops-backup/1"


@dataclass(frozen=True)
class ServerIdentity(Record):
    observatory: str
    kind: str
    host: str
    url: str
    tier: str = ""

    @property
    def name(self) -> str:
        return f"{self.observatory}.{self.kind}"


@dataclass(frozen=True)
class BinlogPosition(Record):
    """Where in the database server's binary log the dump's consistent snapshot stands."""

    file: str  # binlog.000042
    position: int

    def describe(self) -> str:
        return f"{self.file}:{self.position}"


@dataclass(frozen=True)
class DatabaseDump(Record):
    engine: str
    file: str  # the dump's name inside the backup
    name: str = ""
    compression: str = ""
    migrations: list = field(default_factory=list)
    counts: CatalogCounts = field(default_factory=CatalogCounts)  # get_catalog_counts when it was made
    binlog: BinlogPosition | None = None  # MySQL with log_bin: the snapshot's binlog coordinates (PITR)


@dataclass(frozen=True)
class SupportArchive(Record):
    file: str
    target: str


@dataclass(frozen=True)
class Listings(Record):
    references: str = "listings/references.tsv"
    deliveries: str = "listings/deliveries.tsv"
    packages: str = "listings/packages.txt"
    packages_from: str = ""
    pickles: str = "listings/pickles.tsv"


@dataclass(frozen=True)
class FileEntry(Record):
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest(Record):
    server: ServerIdentity
    created: datetime.datetime
    crdsops_version: str
    database: DatabaseDump
    files: dict[str, FileEntry] = field(default_factory=dict)
    finished: datetime.datetime | None = None
    purpose: str = "backup"
    support: dict[str, SupportArchive] = field(default_factory=dict)
    listings: Listings = field(default_factory=Listings)
    format: str = FORMAT

    @property
    def counts(self) -> CatalogCounts:
        return self.database.counts

    @property
    def made(self) -> str:
        """When it was made, as the plan and the messages show it."""
        return self.created.isoformat(timespec="seconds")

    def describe(self) -> str:
        return f"{self.server.name} from {self.server.host}, made {self.made}, {self.counts.describe()}"

    @classmethod
    def from_dict(cls, data, where: str = "manifest") -> Manifest:
        """Build the record; CrdsOpsError naming the first field that is missing or malformed."""
        if isinstance(data, dict):
            lacking = problems_of(data)
            if lacking:
                raise CrdsOpsError(f"{where}: {lacking[0]}")
        try:
            return super().from_dict(data, where)
        except RecordError as err:
            raise CrdsOpsError(f"malformed manifest ({err})") from None

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest of the backup at ``path``; CrdsOpsError when missing or unreadable."""
        return cls.from_dict(read_json(path), where=str(Path(path) / NAME))

    def write(self, directory: Path, known: dict[str, FileEntry] | None = None) -> Path:
        """Write this manifest into the backup being built at ``directory`` (its last file).

        ``files`` is computed here from what the directory holds, never taken from the caller:
        ``known`` only spares hashing a file again whose sha256 its writer computed, when the
        size on disk is the one it wrote.
        """
        directory = Path(directory)
        data = dataclasses.replace(self, files=describe_files(directory, known), format=FORMAT).as_dict()
        target = directory / NAME
        write_atomic(target, json.dumps(data, indent=2, sort_keys=True) + "\n")
        fsync_dir(directory)
        return target


def read_json(path: Path) -> dict:
    """The raw manifest of the backup at ``path``; CrdsOpsError when missing or not ours."""
    file = Path(path) / NAME
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise CrdsOpsError(f"{path}: no {NAME}; not a backup, or an incomplete one") from None
    except (OSError, ValueError) as err:
        raise CrdsOpsError(f"{file}: unreadable manifest ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CrdsOpsError(f"{file}: not a {FORMAT} manifest")
    return data


def problems_of(data: dict) -> list[str]:
    """What the manifest's own fields lack (the names ``Manifest`` needs)."""
    problems = [f"manifest lacks {key!r}" for key in ("server", "created", "crdsops_version", "database", "files")
                if key not in data]
    server = data.get("server") or {}
    problems += [f"manifest lacks server.{key}" for key in ("observatory", "kind", "host", "url")
                 if not isinstance(server, dict) or not server.get(key)]
    database = data.get("database") or {}
    problems += [f"manifest lacks database.{key}" for key in ("engine", "file")
                 if not isinstance(database, dict) or not database.get(key)]
    return problems


def describe_files(directory: Path, known: dict[str, FileEntry] | None = None) -> dict[str, FileEntry]:
    """{relative path: FileEntry} of every file under ``directory`` except the manifest.

    A file whose entry ``known`` holds with the size it has now is not hashed again.
    """
    directory = Path(directory)
    known = known or {}
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel != NAME:
            size = path.stat().st_size
            entry = known.get(rel)
            out[rel] = entry if entry is not None and entry.size == size else FileEntry(size, digest(path))
    return out


def verify(path: Path, deep: bool = False, hashes: bool = True, tested: dict[str, str | None] | None = None) -> list[str]:
    """Check a backup against its manifest; return what is wrong (nothing: it is intact).

    Checks the manifest's own fields, that every listed file exists with its size and
    sha256, that no file is missing from or added to the manifest, and that the database
    dump is one of its files. With ``deep``, also decompresses each compressed file to its
    end (a truncated dump fails here). ``hashes=False`` skips the sha256s: for the backup
    just sealed, whose manifest hashed these very files a moment ago. ``tested``: the files
    already decompressed as they were written (name -> what was wrong, or None), not read again.
    """
    path = Path(path)
    try:
        data = read_json(path)
    except CrdsOpsError as err:
        return [str(err)]
    problems = problems_of(data)
    files = data.get("files") or {}
    if not isinstance(files, dict) or not files:
        return problems + ["manifest lists no files"]
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {NAME}
    for name in sorted(set(files) - present):
        problems.append(f"{name}: missing")
    for name in sorted(present - set(files)):
        problems.append(f"{name}: not in the manifest")
    for name in sorted(set(files) & present):
        expect = files[name] if isinstance(files[name], dict) else {}
        file = path / name
        size = file.stat().st_size
        if size != expect.get("size"):
            problems.append(f"{name}: size {size}, manifest says {expect.get('size')}")
        elif hashes and digest(file) != expect.get("sha256"):
            problems.append(f"{name}: sha256 differs from the manifest (changed or corrupt)")
    dump = (data.get("database") or {}).get("file")
    if dump and dump not in files:
        problems.append(f"database dump {dump} is not in the manifest")
    if deep and not problems:
        tested = tested or {}
        problems += [f"{name}: {problem}" for name, problem in sorted(tested.items()) if problem]
        problems += read_to_end(path, sorted(set(files) - set(tested)))
    return problems


def read_to_end(path: Path, names: list[str]) -> list[str]:
    """Decompress each compressed file of ``names`` to its end, side by side; what is wrong with them."""
    from crdsops.parallel import side_by_side

    tested = side_by_side({name: lambda name=name: readable_to_end(path / name) for name in names})
    return [f"{name}: {tested.results[name]}" for name in names if tested.results[name]]


def readable_to_end(file: Path) -> str | None:
    """None when a compressed file decompresses to its end; else what is wrong."""
    from crdsops.db.compression import compression_of

    comp = compression_of(file)
    if comp is None:
        return None
    try:
        result = commands.run(comp.test_argv(file), check=False)
    except commands.CommandFailed:
        return f"cannot test: {comp.name} is not installed"
    if not result.ok:
        return f"does not decompress to its end ({result.last_error_line() or 'unknown error'})"
    return None
