"""Local conda file channels, built with py-rattler, for machines without conda.

`inv lock` on a machine with no reachable conda channel solves the conda layer against
a file channel made here. `system_channel` builds one that describes the machine's own
Python: a `python` package whose version is that interpreter's and a noarch `pip` whose
version is the pip that interpreter's `ensurepip` installs. These packages carry
metadata only (no files): in the fresh-machine world the stack's interpreter is the
system Python itself, and the conda layer of the lock is its pin.

The tests use `build_package` (of a `Package` record) and `index_channel` to make small channels of
their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import pathlib
import shutil
import tarfile

from crdsops import commands
from crdsops.errors import CrdsOpsError


@dataclasses.dataclass(frozen=True)
class Package:
    """A conda package to write into a channel: its metadata and its files (path -> bytes)."""

    name: str
    version: str
    subdir: str = "noarch"
    build: str = "0"
    build_number: int = 0
    depends: tuple[str, ...] = ()
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    timestamp_ms: int = 1_700_000_000_000

    def index(self) -> dict:
        """Its ``info/index.json``."""
        index = {
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "build_number": self.build_number,
            "depends": list(self.depends),
            "subdir": self.subdir,
            "timestamp": self.timestamp_ms,
            "license": "BSD-3-Clause",
        }
        if self.subdir == "noarch":
            index["noarch"] = "generic"
        else:
            index["platform"], _, arch = self.subdir.partition("-")
            index["arch"] = {"64": "x86_64", "aarch64": "aarch64"}.get(arch, arch)
        return index

    def members(self) -> dict[str, bytes]:
        """Every member of its archive: the info/ files, then its own files."""
        paths = {
            "paths": [
                {"_path": p, "path_type": "hardlink", "size_in_bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()}
                for p, data in sorted(self.files.items())
            ],
            "paths_version": 1,
        }
        return {
            "info/index.json": json.dumps(self.index(), indent=2).encode(),
            "info/paths.json": json.dumps(paths, indent=2).encode(),
            "info/files": "".join(f"{p}\n" for p in sorted(self.files)).encode(),
            **self.files,
        }


def build_package(channel: pathlib.Path, package: Package) -> pathlib.Path:
    """Write NAME-VERSION-BUILD.tar.bz2 of PACKAGE into CHANNEL/SUBDIR; return its path."""
    out_dir = channel / package.subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{package.name}-{package.version}-{package.build}.tar.bz2"
    with tarfile.open(out, "w:bz2") as tar:
        for member, data in package.members().items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o755 if member.startswith("bin/") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return out


def index_channel(channel: pathlib.Path) -> None:
    """Write repodata.json for every subdir of CHANNEL (and an empty noarch)."""
    import asyncio

    from rattler.index import index_fs

    (channel / "noarch").mkdir(parents=True, exist_ok=True)
    asyncio.run(index_fs(channel, force=True, write_zst=False, write_shards=False))
    shutil.rmtree(channel / ".tmp", ignore_errors=True)


def python_facts(python: str) -> dict[str, str]:
    """Version of PYTHON and of the pip its ensurepip bundles."""
    code = (
        "import json, platform, ensurepip;"
        "print(json.dumps({'python': platform.python_version(), 'pip': ensurepip.version()}))"
    )
    result = commands.run([python, "-c", code], what=python, check=False)
    if not result.ok:
        raise CrdsOpsError(
            f"{python} cannot report its version and ensurepip's pip ({result.stderr.strip()[-200:]}); "
            "install python3-venv or pass another --python"
        )
    return json.loads(result.stdout)


def system_channel(channel: pathlib.Path, python: str = "/usr/bin/python3") -> dict[str, str]:
    """Build a file channel that describes PYTHON: `python` (linux-64) and `pip` (noarch)."""
    facts = python_facts(python)
    major_minor = ".".join(facts["python"].split(".")[:2])
    build_package(channel, Package("python", facts["python"], subdir="linux-64", build="system_0"))
    build_package(channel, Package("pip", facts["pip"], build="system_0", depends=(f"python >={major_minor}",)))
    index_channel(channel)
    return facts
