"""Sync directory trees from another host with rsync over SSH, deletions held back and capped.

One rsync pass copies what is new or changed (rsync writes each file under a temporary
name and renames it, so a server reading the tree never sees half a file) and, because it
runs with ``-ii``, also names every file the source has. The files here that the source
lacks are *not* deleted by rsync: :meth:`SyncResult.delete_extraneous` removes them later,
when the caller says so (a mirror does it once the new database is live), and refuses when

* the source listed no files at all under a tree that must have some (empty or unmounted
  source), or
* more files would go than the cap (``max_delete``; default: 10% of what is here, at
  least 100).

The copy pass costs the same as a plain ``rsync -a --delete`` (one file-list exchange);
the deletions are local unlinks of names the copy pass already listed.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import commands
from crdsops.errors import CrdsOpsError
from crdsops.remote.ssh import Target, ssh_argv

log = logging.getLogger(__name__)

# rsync exit codes worth a sentence
RSYNC_CODES = {
    10: "socket I/O error", 12: "protocol data stream error (connection lost?)",
    23: "some files could not be transferred", 24: "some source files vanished",
    30: "timeout", 35: "timeout waiting for daemon", 255: "SSH failed (connection lost or refused)",
}


@dataclass
class SyncResult:
    local_root: Path
    trees: list[str]
    listed: dict[str, set[str]] = field(default_factory=dict)  # tree -> relative file names at the source
    transferred: int = 0
    seconds: float = 0.0

    @property
    def source_files(self) -> int:
        return sum(len(v) for v in self.listed.values())

    def has_files(self, tree: str) -> bool:
        return bool(self.listed.get(tree))

    def files_here(self) -> int:
        return sum(len(files) for tree in self.trees for _, _, files in os.walk(self.local_root / tree))

    def extraneous(self) -> list[Path]:
        """Files here, under the synced trees, that the source does not have."""
        extra = []
        for tree in self.trees:
            names = self.listed.get(tree, set())
            base = self.local_root / tree
            for dirpath, dirs, files in os.walk(base):
                dirs[:] = [d for d in dirs if d != ".crdsops-partial"]
                rel_dir = os.path.relpath(dirpath, self.local_root)
                for name in files:
                    rel = os.path.normpath(os.path.join(rel_dir, name))
                    if rel not in names:
                        extra.append(self.local_root / rel)
        return sorted(extra)

    def delete_extraneous(self, max_delete: int | None = None, must_have: tuple[str, ...] = (),
                          dry_run: bool = False) -> list[Path]:
        """Delete what the source lacks, unless the source looks empty or too much would go."""
        for tree in must_have:
            if not self.has_files(tree):
                raise CrdsOpsError(
                    f"the source listed no files under {tree}: it looks empty or unmounted; "
                    "deletions refused (check the source's file cache, then run the mirror again)"
                )
        extra = self.extraneous()
        if not extra:
            return []
        if max_delete is None:
            max_delete = max(100, self.files_here() // 10)
        if len(extra) > max_delete:
            raise CrdsOpsError(
                f"{len(extra)} files here are not at the source, more than the cap of {max_delete}; "
                f"deletions refused (check the source; if this is expected, pass --max-delete {len(extra)})"
            )
        if dry_run:
            return extra
        for path in extra:
            path.unlink(missing_ok=True)
        log.info(f"deleted {len(extra)} file(s) the source no longer has")
        return extra


def rsync_argv(target: Target, remote_root: str, local_root: Path, sources: list[str] | tuple[str, ...] = ("",),
               options: tuple[str, ...] = ()) -> list[str]:
    """The one way crdsops spells an rsync from a host: ``rsync -a --protect-args -e SSH OPTIONS HOST:ROOT/SRC... LOCAL/``.

    Over our checked SSH (``crdsops.remote.ssh.ssh_argv``: known hosts, no prompts); with
    ``--protect-args`` remote paths are not split or expanded by the remote shell.
    """
    ssh = " ".join(shlex.quote(a) for a in ssh_argv(target))
    root = remote_root.rstrip("/")
    return ["rsync", "-a", "--protect-args", "-e", ssh, *options,
            *(f"{target.host}:{root}/{src}" for src in sources), str(local_root).rstrip("/") + "/"]


def run_rsync(argv: list[str], target: Target, label: str, after: str, on_line=None,
              ok_codes: tuple[int, ...] = (0,)) -> int:
    """Run an rsync, each line of its output to ``on_line``; its exit code, or one CrdsOpsError line.

    The error: ``LABEL from HOST failed (rsync exit N: what N means; its last stderr line); AFTER``.
    """
    proc = commands.start(argv, what=label, stdout=commands.PIPE, stderr=commands.PIPE, text=True,
                          errors="replace")
    try:
        for line in proc.stdout:
            if on_line is not None:
                on_line(line)
        stderr = proc.stderr.read()
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code not in ok_codes:
        result = commands.Result(tuple(argv), code, "", stderr)
        raise CrdsOpsError(f"{commands.failure_line(f'{label} from {target.where}', result, RSYNC_CODES)}; {after}")
    return code


def full_pass_argv(target: Target, remote_root: str, trees: list[str], local_root: Path,
                   bwlimit: str | None = None) -> list[str]:
    """One full pass over ``trees``: with ``-R`` and ROOT/./TREE/ each tree lands under its own relative
    path here; ``-ii`` names every file the source has (what the deletions are decided from)."""
    options = ("-R", "-ii", "--out-format=%i %n", "--partial-dir=.crdsops-partial",
               *((f"--bwlimit={bwlimit}",) if bwlimit else ()))
    return rsync_argv(target, remote_root, local_root, [f"./{t.strip('/')}/" for t in trees], options)


@dataclass(frozen=True)
class Pull:
    """Where a sync pulls from and to, what its messages call it, and its bandwidth cap (KB/s, or with a unit)."""

    target: Target
    remote_root: str
    local_root: Path
    label: str = "cache"
    bwlimit: str | None = None


def pull(spec: Pull, trees: list[str], progress_every: float = 2.0) -> SyncResult:
    """Copy new and changed files of ``trees`` from the host (one full pass); return what the source listed."""
    target, remote_root, label = spec.target, spec.remote_root, spec.label
    local_root = Path(spec.local_root)
    local_root.mkdir(parents=True, exist_ok=True)
    for tree in trees:
        (local_root / tree).mkdir(parents=True, exist_ok=True)
    result = SyncResult(local_root, [t.strip("/") for t in trees], {t.strip("/"): set() for t in trees})
    argv = full_pass_argv(target, remote_root, trees, local_root, spec.bwlimit)
    log.info(f"{label} sync from {target.name} ({target.host}:{remote_root}): {', '.join(trees)} ...")
    start = last = time.monotonic()
    listed = 0

    def on_line(line: str) -> None:
        nonlocal listed, last
        line = line.rstrip("\n")
        flags, name = line[:11], line[12:]  # "%i %n": the 11 flag characters may hold spaces
        if len(line) < 13 or line[11] != " ":
            return
        if flags[1] == "f":
            listed += 1
            tree = _tree_of(name, result.trees)
            if tree is not None:
                result.listed[tree].add(os.path.normpath(name))
            if flags[0] in "><c":
                result.transferred += 1
        now = time.monotonic()
        if now - last >= progress_every:
            log.info(f"  {label}: {listed} files checked, {result.transferred} copied, {now - start:.0f}s")
            last = now

    run_rsync(argv, target, f"{label} sync", "nothing was deleted here; run the mirror again when the source "
              "is reachable", on_line)
    result.seconds = time.monotonic() - start
    log.info(f"{label} sync: {listed} files at the source, {result.transferred} copied in {result.seconds:.1f}s")
    return result


def _tree_of(name: str, trees: list[str]) -> str | None:
    for tree in trees:
        if name == tree or name.startswith(tree + "/"):
            return tree
    return None


def probe_tree(conn, path: str) -> int | None:
    """How many files the host has under ``path`` (capped at 1000 for speed); None if missing."""
    from crdsops.remote import ssh as remote

    res = remote.run(conn, ["sh", "-c", 'test -d "$1" || exit 3; find "$1" -type f | head -n 1000 | wc -l',
                            "probe", path])
    if res.exited == 3:
        return None
    if res.exited != 0:
        raise CrdsOpsError(f"cannot inspect {path} on {conn.host}: {res.stderr.strip()}")
    return int(res.stdout.strip() or 0)


def pull_dir(target: Target, remote_dir: str, local_dir: Path, label: str = "") -> None:
    """Make ``local_dir`` an exact copy of ``remote_dir`` on the host (a fetch area)."""
    local_dir = Path(local_dir)
    local_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    argv = rsync_argv(target, remote_dir, local_dir, options=("--delete", "--stats"))
    run_rsync(argv, target, f"{label or 'rsync'} of {remote_dir}", "nothing here was changed")
    log.info(f"{label or 'copy'}: {remote_dir} from {target.name} in {time.monotonic() - start:.1f}s")
