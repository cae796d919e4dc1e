"""A conda-compatible front end on py-rattler, for machines that have no conda.

conda-lock drives a conda executable through a handful of commands. This module
answers exactly those, with py-rattler doing the work, so that the real conda-lock can
lock (and install) against file channels on a machine where no conda and no conda
channel is reachable (CI, a laptop, this repository's tests):

    conda --version
    conda info --json                                   (package cache dirs)
    conda config --json list pkgs_dirs
    conda create --prefix P --dry-run --json [--override-channels]
                 --channel C ... SPEC ...                (the solve conda-lock runs)
    conda create [--quiet] [--copy] --file EXPLICIT --yes --prefix P
                                                         (install an @EXPLICIT list)
    conda run --prefix P CMD ...                         (conda-lock install's pip step)

Run it as ``python -m crdsops.stack.rattler ...``; `crdsops.stack.rattler_conda_exe`
writes a small executable that does so, for conda-lock's ``--conda``.
"""

from __future__ import annotations

import json
import os
import sys

VERSION = "conda 24.11.0 (crdsops py-rattler front end)"


def _platform() -> str:
    return os.environ.get("CONDA_SUBDIR") or "linux-64"


def _pkgs_dir() -> str:
    dirs = os.environ.get("CONDA_PKGS_DIRS")
    if dirs:
        return dirs.split(",")[0]
    return os.path.join(os.path.expanduser("~"), ".cache", "crdsops", "conda-pkgs")


def _channel(url: str):
    import rattler

    if url.startswith("/"):
        url = "file://" + url
    return rattler.Channel(url)


def _fail(message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"success": False, "error": message, "message": message}))
    print(f"conda (py-rattler): {message}", file=sys.stderr)
    return 1


def _parse(argv: list[str]) -> tuple[dict, list[str]]:
    opts: dict = {"channels": [], "flags": set()}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in ("--prefix", "-p"):
            opts["prefix"] = next(it)
        elif arg in ("--name", "-n"):
            opts["name"] = next(it)
        elif arg in ("--channel", "-c"):
            opts["channels"].append(next(it))
        elif arg == "--file":
            opts["file"] = next(it)
        elif arg.startswith("--") and arg[2:] in (
            "dry-run", "json", "override-channels", "yes", "quiet", "copy",
            "no-capture-output", "live-stream",
        ):
            opts["flags"].add(arg[2:])
        elif arg == "-y":
            opts["flags"].add("yes")
        elif arg == "-q":
            opts["flags"].add("quiet")
        else:
            rest.append(arg)
    return opts, rest


def _record_json(record) -> dict:
    data = json.loads(record.to_json())
    data.setdefault("name", record.name.normalized)
    data.setdefault("version", str(record.version))
    data.setdefault("build", record.build)
    data["url"] = record.url
    data["fn"] = record.file_name
    data["channel"] = record.channel
    if record.md5 is not None:
        data["md5"] = record.md5.hex()
    if record.sha256 is not None:
        data["sha256"] = record.sha256.hex()
    data.setdefault("depends", list(record.depends))
    return data


def _solve(opts: dict, specs: list[str]) -> int:
    import asyncio

    import rattler

    if not opts["channels"]:
        return _fail("no channel given; pass --channel (there is no default channel)", True)
    platform = _platform()
    try:
        records = asyncio.run(
            rattler.solve(
                sources=[_channel(c) for c in opts["channels"]],
                specs=specs,
                platforms=[platform, "noarch"],
            )
        )
    except Exception as err:  # rattler raises its own types; report them as conda does
        return _fail(f"could not solve {' '.join(specs)}: {err}", True)
    fetch = [_record_json(r) for r in records]
    print(json.dumps({"success": True, "dry_run": True, "actions": {"FETCH": fetch, "LINK": fetch}}))
    return 0


def _install_explicit(opts: dict) -> int:
    """Install an @EXPLICIT file: every URL fetched, its md5/sha256 checked, linked."""
    import asyncio
    import hashlib
    import urllib.parse
    import urllib.request

    import rattler

    prefix = opts.get("prefix")
    if not prefix:
        return _fail("create --file needs --prefix", False)
    urls = []
    with open(opts["file"], encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("#") or line == "@EXPLICIT":
                continue
            urls.append(line)
    cache = os.path.join(_pkgs_dir(), "downloads")
    os.makedirs(cache, exist_ok=True)
    records = []
    for entry in urls:
        url, _, digest = entry.partition("#")
        name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        local = os.path.join(cache, name)
        try:
            with urllib.request.urlopen(url) as resp:
                data = resp.read()
        except OSError as err:
            return _fail(f"cannot fetch {url}: {err}", False)
        with open(local, "wb") as out:
            out.write(data)
        if digest:
            algo = "sha256" if digest.startswith("sha256:") or len(digest) == 64 else "md5"
            expected = digest.split(":", 1)[-1]
            actual = hashlib.new(algo, data).hexdigest()
            if actual != expected:
                return _fail(f"{name}: {algo} {actual} does not match the expected {expected}", False)
        records.append(asyncio.run(rattler.RepoDataRecord.from_package_archive(local)))
    try:
        asyncio.run(
            rattler.install(records, prefix, cache_dir=_pkgs_dir(), show_progress=False,
                            platform=rattler.Subdir(_platform()))
        )
    except Exception as err:  # rattler's own exception types
        return _fail(f"cannot install into {prefix}: {err}", False)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("--version", "-V"):
        print(VERSION)
        return 0
    command, args = argv[0], argv[1:]
    if command == "info":
        print(json.dumps({"pkgs_dirs": [_pkgs_dir()], "platform": _platform(),
                          "conda_version": VERSION.split()[1]}))
        return 0
    if command == "config":
        print(json.dumps({"pkgs_dirs": [_pkgs_dir()]}))
        return 0
    if command == "run":
        opts, rest = _parse(args)
        prefix = opts.get("prefix")
        if not prefix or not rest:
            return _fail("run needs --prefix and a command", False)
        exe = os.path.join(prefix, "bin", rest[0])
        os.execv(exe, [exe, *rest[1:]])
    if command == "create":
        opts, rest = _parse(args)
        if "file" in opts:
            return _install_explicit(opts)
        if "dry-run" in opts["flags"]:
            return _solve(opts, rest)
        return _fail("only `create --dry-run` (solve) and `create --file` (install) are supported", "json" in opts["flags"])
    return _fail(f"unsupported command {command!r}", False)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # py-rattler's runtime threads can crash the interpreter's teardown (SIGSEGV after
    # the answer was printed); there is nothing left to clean up, so leave at once.
    os._exit(code)
