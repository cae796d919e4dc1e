"""The manifest of a backup: what it holds, whose it is, and how to check it.

A backup is a directory; ``manifest.json`` is the last file written into it. The
``Manifest`` record is its one description; the JSON says:

    format            "crdsops-backup/1"
    server            {observatory, kind, tier, host, url}
    created           ISO 8601 UTC time the backup was started (retention dates by this)
    finished          when it was complete
    crdsops_version
    purpose           "backup" | "safety"
    database          {engine, name, file (the dump), compression, migrations: [[app, name], ...],
                       counts: {references, mappings, contexts, operational_context}}
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
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from crdsops.errors import CrdsOpsError
from crdsops.files import digest, fsync_dir, write_atomic

NAME = "manifest.json"
FORMAT = "crdsops-backup/1"


@dataclass(frozen=True)
class ServerIdentity:
    observatory: str
    kind: str
    host: str
    url: str
    tier: str = ""

    @property
    def name(self) -> str:
        return f"{self.observatory}.{self.kind}"


@dataclass(frozen=True)
class DatabaseDump:
    engine: str
    file: str  # the dump's name inside the backup
    name: str = ""
    compression: str = ""
    migrations: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # get_catalog_counts when it was made


@dataclass(frozen=True)
class SupportArchive:
    file: str
    target: str


@dataclass(frozen=True)
class Listings:
    references: str = "listings/references.tsv"
    deliveries: str = "listings/deliveries.tsv"
    packages: str = "listings/packages.txt"
    packages_from: str = ""
    pickles: str = "listings/pickles.tsv"


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    server: ServerIdentity
    created: str
    crdsops_version: str
    database: DatabaseDump
    files: dict[str, FileEntry] = field(default_factory=dict)
    finished: str = ""
    purpose: str = "backup"
    support: dict[str, SupportArchive] = field(default_factory=dict)
    listings: Listings = field(default_factory=Listings)
    format: str = FORMAT

    @property
    def created_at(self) -> datetime.datetime | None:
        try:
            return datetime.datetime.fromisoformat(self.created)
        except (TypeError, ValueError):
            return None

    @property
    def counts(self) -> dict:
        return self.database.counts

    def describe(self) -> str:
        counts = self.counts
        return (f"{self.server.name} from {self.server.host}, made {self.created}, "
                f"{counts.get('references')} references, {counts.get('mappings')} mappings, "
                f"context {counts.get('operational_context')}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "manifest") -> Manifest:
        """Build the record; CrdsOpsError naming the first field that is missing or malformed."""
        lacking = problems_of(data)
        if lacking:
            raise CrdsOpsError(f"{where}: {lacking[0]}")
        try:
            return cls(
                server=_record(ServerIdentity, data["server"]),
                created=data["created"],
                crdsops_version=data["crdsops_version"],
                database=_record(DatabaseDump, data["database"]),
                files={name: _record(FileEntry, entry) for name, entry in (data.get("files") or {}).items()},
                finished=data.get("finished", ""),
                purpose=data.get("purpose", "backup"),
                support={label: _record(SupportArchive, entry) for label, entry in (data.get("support") or {}).items()},
                listings=_record(Listings, data.get("listings") or {}),
                format=data.get("format", FORMAT),
            )
        except (TypeError, AttributeError) as err:
            raise CrdsOpsError(f"{where}: malformed manifest ({err})") from None

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest of the backup at ``path``; CrdsOpsError when missing or unreadable."""
        return cls.from_dict(read_json(path), where=str(Path(path) / NAME))

    def write(self, directory: Path) -> Path:
        """Write this manifest into the backup being built at ``directory`` (its last file).

        ``files`` is computed here from what the directory holds, never taken from the caller.
        """
        directory = Path(directory)
        data = dataclasses.replace(self, files=describe_files(directory), format=FORMAT).as_dict()
        target = directory / NAME
        write_atomic(target, json.dumps(data, indent=2, sort_keys=True) + "\n")
        fsync_dir(directory)
        return target


def _record(cls, data):
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} is not a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


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


def describe_files(directory: Path) -> dict[str, FileEntry]:
    """{relative path: FileEntry} of every file under ``directory`` except the manifest."""
    directory = Path(directory)
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.relative_to(directory).as_posix() != NAME:
            out[path.relative_to(directory).as_posix()] = FileEntry(path.stat().st_size, digest(path))
    return out


def verify(path: Path, deep: bool = False) -> list[str]:
    """Check a backup against its manifest; return what is wrong (nothing: it is intact).

    Checks the manifest's own fields, that every listed file exists with its size and
    sha256, that no file is missing from or added to the manifest, and that the database
    dump is one of its files. With ``deep``, also decompresses each compressed file to its
    end (a truncated dump fails here).
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
        elif digest(file) != expect.get("sha256"):
            problems.append(f"{name}: sha256 differs from the manifest (changed or corrupt)")
    dump = (data.get("database") or {}).get("file")
    if dump and dump not in files:
        problems.append(f"database dump {dump} is not in the manifest")
    if deep and not problems:
        for name in sorted(files):
            problem = readable_to_end(path / name)
            if problem:
                problems.append(f"{name}: {problem}")
    return problems


def readable_to_end(file: Path) -> str | None:
    """None when a compressed file decompresses to its end; else what is wrong."""
    from crdsops.db.compression import compression_of

    comp = compression_of(file)
    if comp is None:
        return None
    try:
        result = subprocess.run(comp.test_argv(file), capture_output=True, text=True)
    except FileNotFoundError:
        return f"cannot test: {comp.name} is not installed"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"does not decompress to its end ({last})"
    return None
