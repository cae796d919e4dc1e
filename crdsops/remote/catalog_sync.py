"""Sync cache trees from the source by its backup's listing: cost grows with what changed.

``rsync -a --delete`` walks both trees (terabytes on the VMs) to find the 1% that
changed. A backup already lists every reference file (name, size, mtime, sha1), every
pickle and every delivery (name, size, mtime; ``crdsops.data.backup``), so the mirror:

1. trusts a listing only when it is the verified backup's: its size and sha256 are
   checked again, right before it is read, against the verified manifest
   (:func:`trusted_listing`); a listing the manifest does not name means a full pass;
2. stats the destination's tree (``os.scandir``, no reading) and compares name, size and
   mtime (to the second, what rsync's quick check compares) with the listing, streamed:
   new or changed names go to a ``--files-from`` list, names here that the listing lacks
   are the extraneous files (deleted later, capped, as ``crdsops.remote.rsync`` does);
3. runs one ``rsync --files-from`` over the checked SSH for exactly those names (none: no
   rsync at all), with ``--partial-dir`` so an interrupted transfer resumes where it
   stopped, ``--ignore-missing-args`` for files the source deleted since its backup,
   ``--bwlimit`` when asked, and a progress bar on a terminal.

The source's cache is never walked. Every run rewrites ``<root>/mirror/<label>.files-from``
(what it asked for) and ``<root>/mirror/<label>.rsync.log`` (rsync's itemized list of what
it sent), for the operator and the tests.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from crdsops.data.manifest import Manifest
from crdsops.errors import CrdsOpsError
from crdsops.files import digest, ensure_dir
from crdsops.remote.rsync import RSYNC_CODES, SyncResult
from crdsops.remote.ssh import Target, ssh_argv

PARTIAL_DIR = ".crdsops-partial"  # rsync keeps a cut-off file here, per directory, and resumes it


class ListingRefused(CrdsOpsError):
    """A listing that is not the verified backup's; nothing was changed."""


def trusted_listing(backup: Path, manifest: Manifest, rel: str) -> Path | None:
    """``backup/rel`` once its size and sha256 equal the verified manifest's; None if it lists no such file."""
    entry = manifest.files.get(rel)
    if entry is None:
        return None
    path = Path(backup) / rel
    try:
        ok = path.stat().st_size == entry.size and digest(path) == entry.sha256
    except OSError:
        ok = False
    if not ok:
        raise ListingRefused(
            f"refusing the listing {rel} of backup {backup}: it does not match the verified manifest "
            "(changed since it was verified?); nothing was changed; run the mirror again, or pass --full-sync")
    return path


def _key(size: int, mtime_s: int) -> int:
    return (size << 34) | (mtime_s & ((1 << 34) - 1))


def local_files(base: Path) -> dict[str, int]:
    """{name relative to ``base``: size and mtime key} of every file under it, by stat only."""
    out: dict[str, int] = {}
    stack = [("", str(base))]
    while stack:
        prefix, directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except FileNotFoundError:
            continue
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != PARTIAL_DIR:
                        stack.append((prefix + entry.name + "/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    out[prefix + entry.name] = _key(st.st_size, st.st_mtime_ns // 1_000_000_000)
    return out


def listing_entries(path: Path):
    """(name, size, mtime_s) of each line of a backup listing (``name<TAB>size<TAB>mtime_ns[<TAB>...]``)."""
    with open(path) as handle:
        for line in handle:
            if line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t", 3)
            if len(parts) >= 3:
                yield parts[0], int(parts[1]), int(parts[2]) // 1_000_000_000


@dataclass
class ListedSync(SyncResult):
    """A sync planned from a listing: what to fetch was written to ``files_from``; ``extra`` is what goes."""

    counts: dict[str, int] = field(default_factory=dict)  # tree -> files the listing has
    extra: list[Path] = field(default_factory=list)
    here: int = 0  # files under the trees here before the sync
    fetch: int = 0
    fetch_bytes: int = 0
    files_from: Path | None = None
    sent: list[str] = field(default_factory=list)  # what rsync itemized as sent

    @property
    def source_files(self) -> int:
        return sum(self.counts.values())

    def has_files(self, tree: str) -> bool:
        return bool(self.counts.get(tree))

    def extraneous(self) -> list[Path]:
        return list(self.extra)

    def files_here(self) -> int:
        return self.here


def plan_sync(local_root: Path, trees: dict[str, Path], files_from: Path) -> ListedSync:
    """Compare each tree here with its listing (``trees``: tree -> listing file); write the fetch list."""
    local_root = Path(local_root)
    result = ListedSync(local_root, list(trees))
    ensure_dir(files_from.parent)
    tmp = files_from.with_name(files_from.name + ".tmp")
    with open(tmp, "w") as out:
        for tree, listing in trees.items():
            here = local_files(local_root / tree)
            result.here += len(here)
            listed = 0
            for name, size, mtime_s in listing_entries(listing):
                listed += 1
                if here.pop(name, None) != _key(size, mtime_s):
                    out.write(f"{tree}/{name}\0")
                    result.fetch += 1
                    result.fetch_bytes += size
            result.counts[tree] = listed
            result.extra.extend(local_root / tree / name for name in sorted(here))
            del here
    os.replace(tmp, files_from)
    result.files_from = files_from
    return result


def rsync_argv(target: Target, remote_root: str, local_root: Path, files_from: Path,
               bwlimit: str | None = None) -> list[str]:
    ssh = " ".join(shlex.quote(a) for a in ssh_argv(target))
    argv = ["rsync", "-a", f"--files-from={files_from}", "--from0", "--ignore-missing-args",
            f"--partial-dir={PARTIAL_DIR}", "--out-format=%i %l %n", "--protect-args", "-e", ssh]
    if bwlimit:
        argv.append(f"--bwlimit={bwlimit}")
    return argv + [f"{target.host}:{remote_root.rstrip('/')}/", str(local_root) + "/"]


def _progress_bar(total_bytes: int, files: int, label: str):
    """A tqdm bar on a terminal (files and bytes to go, rate, ETA); None otherwise or without tqdm."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{label}: {files} files",
                file=sys.stderr, leave=False, dynamic_ncols=True)


def pull_listed(target: Target, remote_root: str, local_root: Path, trees: dict[str, Path], work: Path,
                say=print, label: str = "cache", bwlimit: str | None = None,
                progress_every: float = 5.0) -> ListedSync:
    """Fetch exactly the new and changed files of ``trees`` (tree -> trusted listing); deletions held back."""
    local_root = Path(local_root)
    for tree in trees:
        (local_root / tree).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    result = plan_sync(local_root, trees, Path(work) / f"{label}.files-from")
    log_path = Path(work) / f"{label}.rsync.log"
    say(f"{label} sync from {target.name} by its backup's listing: {result.source_files} files there, "
        f"{result.fetch} new or changed ({_human(result.fetch_bytes)}), {len(result.extra)} not at the source")
    if not result.fetch:
        log_path.write_text("")
        result.seconds = time.monotonic() - start
        return result
    argv = rsync_argv(target, remote_root, local_root, result.files_from, bwlimit)
    bar = _progress_bar(result.fetch_bytes, result.fetch, label)
    done_bytes, last = 0, time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, errors="replace")
    try:
        with open(log_path, "w") as log:
            for line in proc.stdout:
                log.write(line)
                flags, _, rest = line.rstrip("\n").partition(" ")
                if len(flags) != 11 or flags[1] != "f" or flags[0] not in "<>c":
                    continue
                size, _, name = rest.partition(" ")
                result.sent.append(name)
                result.transferred += 1
                done_bytes += int(size) if size.isdigit() else 0
                if bar is not None:
                    bar.update(int(size) if size.isdigit() else 0)
                    bar.set_postfix_str(f"{result.fetch - result.transferred} files to go", refresh=False)
                elif time.monotonic() - last >= progress_every:
                    last = time.monotonic()
                    rate = done_bytes / max(last - start, 1e-6)
                    eta = (result.fetch_bytes - done_bytes) / rate if rate else 0
                    say(f"  {label}: {result.fetch - result.transferred} files, "
                        f"{_human(result.fetch_bytes - done_bytes)} to go, {_human(rate)}/s, ETA {eta:.0f}s")
        stderr = proc.stderr.read()
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.monotonic() - start
    if code != 0:
        last_err = (stderr.strip().splitlines() or [""])[-1]
        raise CrdsOpsError(
            f"{label} sync from {target.where} failed (rsync exit {code}: {RSYNC_CODES.get(code, 'error')}; "
            f"{last_err}); nothing was deleted here; run the mirror again: it resumes where this one stopped")
    say(f"{label} sync: {result.transferred} files copied in {result.seconds:.1f}s")
    return result


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"
