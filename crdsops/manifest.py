"""The manifest of a backup: what it holds, whose it is, and how to check it.

A backup is a directory; ``manifest.json`` is the last file written into it. It says:

    format            "crdsops-backup/1"
    server            {observatory, kind, tier, host, url}
    created           ISO 8601 UTC time the backup was started (retention dates by this)
    crdsops_version
    purpose           "backup" | "safety"
    database          {engine, name, dump (file name), compression, migrations: [[app, name], ...],
                       counts: {references, mappings, contexts, operational_context}}
    support           {label: {file, target}}   tarballs of the support directories
    listings          {references, deliveries, packages}: file names
    files             {relative path: {size, sha256}} for every other file of the backup

``verify(path)`` returns a list of problems (empty: the backup is intact); ``deep=True``
also reads every compressed file to its end. ``load(path)`` returns the parsed manifest.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from crdsops.errors import CrdsOpsError

NAME = "manifest.json"
FORMAT = "crdsops-backup/1"
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path) -> dict[str, dict]:
    """{relative path: {size, sha256}} of every file under ``directory`` except the manifest."""
    directory = Path(directory)
    out = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.relative_to(directory).as_posix() != NAME:
            out[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": sha256_of(path)}
    return out


def load(path: Path) -> dict:
    """The manifest of the backup at ``path``; CrdsOpsError when missing or unreadable."""
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


def verify(path: Path, deep: bool = False) -> list[str]:
    """Check a backup against its manifest; return what is wrong (nothing: it is intact).

    Checks the manifest's own fields, that every listed file exists with its size and
    sha256, and that no file is missing from or added to the manifest. With ``deep``,
    also decompresses each compressed file to its end (a truncated dump fails here).
    """
    path = Path(path)
    try:
        data = load(path)
    except CrdsOpsError as err:
        return [str(err)]
    problems = []
    for key in ("server", "created", "crdsops_version", "database", "files"):
        if key not in data:
            problems.append(f"manifest lacks {key!r}")
    server = data.get("server") or {}
    for key in ("observatory", "kind", "host", "url"):
        if not server.get(key):
            problems.append(f"manifest lacks server.{key}")
    files = data.get("files") or {}
    if not isinstance(files, dict) or not files:
        return problems + ["manifest lists no files"]
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {NAME}
    for name in sorted(set(files) - present):
        problems.append(f"{name}: missing")
    for name in sorted(present - set(files)):
        problems.append(f"{name}: not in the manifest")
    for name in sorted(set(files) & present):
        expect = files[name]
        file = path / name
        size = file.stat().st_size
        if size != expect.get("size"):
            problems.append(f"{name}: size {size}, manifest says {expect.get('size')}")
        elif sha256_of(file) != expect.get("sha256"):
            problems.append(f"{name}: sha256 differs from the manifest (changed or corrupt)")
    database = data.get("database") or {}
    if database.get("dump") and database["dump"] not in files:
        problems.append(f"database dump {database['dump']} is not in the manifest")
    if deep and not problems:
        for name in sorted(files):
            problem = readable_to_end(path / name)
            if problem:
                problems.append(f"{name}: {problem}")
    return problems


def readable_to_end(file: Path) -> str | None:
    """None when a compressed file decompresses to its end; else what is wrong."""
    from crdsops.dbdump import compression_of

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


def write(path: Path, data: dict) -> Path:
    """Write the manifest of the backup being built at ``path`` (the last file written)."""
    from crdsops.files import fsync_dir, write_atomic

    data = dict(data, format=FORMAT, files=describe_files(path))
    target = Path(path) / NAME
    write_atomic(target, json.dumps(data, indent=2, sort_keys=True) + "\n")
    fsync_dir(path)
    return target
