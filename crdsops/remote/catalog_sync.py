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

A sync that ended (its deletions done) records what it left (``<root>/mirror/<label>.synced/``):
each tree's listing and the mtime of every directory of the tree. The next sync trusts that
record for a tree whose directories all keep their mtimes (a file added, removed or renamed
here changes its directory's): it compares the new listing with the recorded one (set
differences, no stat of files), and skips the tree when the listing is the same. Any other
case, or a record that does not match, is the full stat pass of step 2. A file rewritten in
place here is not seen by the shortcut; the quick cache check the mirror ends with is (a stat
of every file, by the catalog), and ``--full-sync`` compares everything.

The source's cache is never walked. Every run rewrites ``<root>/mirror/<label>.files-from``
(what it asked for) and ``<root>/mirror/<label>.rsync.log`` (rsync's itemized list of what
it sent), for the operator and the tests.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import progress
from crdsops.data.inventory import human
from crdsops.data.manifest import Manifest
from crdsops.errors import CrdsOpsError
from crdsops.files import digest, ensure_dir
from crdsops.remote import rsync
from crdsops.remote.rsync import SyncResult
from crdsops.remote.ssh import Target

log = logging.getLogger(__name__)

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


def local_files(base: Path, dirs: set[str] | None = None) -> dict[str, int]:
    """{name relative to ``base``: size and mtime key} of every file under it, by stat only.

    ``dirs``, when given, receives every directory walked ("" for ``base``), for the record.
    """
    out: dict[str, int] = {}
    stack = [("", str(base))]
    while stack:
        prefix, directory = stack.pop()
        try:
            entries = os.scandir(directory)
        except FileNotFoundError:
            continue
        if dirs is not None:
            dirs.add(prefix.rstrip("/"))
        with entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name != PARTIAL_DIR:
                        stack.append((prefix + entry.name + "/", entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    out[prefix + entry.name] = _key(st.st_size, st.st_mtime_ns // 1_000_000_000)
    return out


def _dir_mtimes(base: Path, dirs) -> dict[str, int] | None:
    """{directory: mtime_ns} of ``dirs`` under ``base``; None when one of them is gone."""
    out = {}
    for rel in dirs:
        try:
            out[rel] = os.stat(base / rel if rel else base).st_mtime_ns
        except FileNotFoundError:
            return None
    return out


class SyncRecord:
    """What the last finished sync left in each tree here: its listing and its directories' mtimes."""

    def __init__(self, work: Path, label: str):
        self.dir = Path(work) / f"{label}.synced"
        self.state_path = self.dir / "state.json"
        try:
            self.state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            self.state = {}

    def _copy_of(self, tree: str) -> Path:
        return self.dir / (tree.strip("/").replace("/", "__") + ".tsv")

    def unchanged_here(self, tree: str, base: Path) -> tuple[Path, dict] | None:
        """The recorded listing of ``tree`` if nothing was added, removed or renamed under it since."""
        entry = self.state.get(tree)
        if not entry or entry.get("root") != str(base) or not self._copy_of(tree).is_file():
            return None
        if _dir_mtimes(base, entry["dirs"]) != entry["dirs"]:
            return None
        return self._copy_of(tree), entry

    def forget(self) -> None:
        """Drop the record before a sync changes the trees: an interrupted sync leaves none."""
        self.state = {}
        self.state_path.unlink(missing_ok=True)

    def write(self, local_root: Path, trees: dict[str, Path], dirs: dict[str, set[str]]) -> None:
        ensure_dir(self.dir)
        state = {}
        for tree, listing in trees.items():
            base = local_root / tree
            mtimes = _dir_mtimes(base, dirs.get(tree, ()))
            if mtimes is None:
                continue
            shutil.copyfile(listing, self._copy_of(tree))
            state[tree] = {"root": str(base), "sha256": digest(listing), "dirs": mtimes}
        tmp = self.state_path.with_name("state.json.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)
        self.state = state


def _listing_lines(path: Path) -> set[bytes]:
    with open(path, "rb") as handle:
        return {line for line in handle if not line.startswith(b"#")}


def _parse(line: bytes) -> tuple[str, int]:
    parts = line.rstrip(b"\n").split(b"\t", 3)
    return parts[0].decode(), int(parts[1])


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
    listings: dict[str, Path] = field(default_factory=dict)
    dirs: dict[str, set[str]] = field(default_factory=dict)  # tree -> its directories, for the record
    record: SyncRecord | None = None
    shortcut: list[str] = field(default_factory=list)  # trees planned from the record, not by a walk
    complete: bool = False  # every name asked for is here (the source may have lost one since its backup)

    @property
    def source_files(self) -> int:
        return sum(self.counts.values())

    def has_files(self, tree: str) -> bool:
        return bool(self.counts.get(tree))

    def extraneous(self) -> list[Path]:
        return list(self.extra)

    def files_here(self) -> int:
        return self.here

    def delete_extraneous(self, max_delete: int | None = None, must_have: tuple[str, ...] = (),
                          dry_run: bool = False) -> list[Path]:
        gone = super().delete_extraneous(max_delete=max_delete, must_have=must_have, dry_run=dry_run)
        if not dry_run and self.complete and self.record is not None:  # the trees are what the listings say
            self.record.write(self.local_root, self.listings, self.dirs)
        return gone


def plan_sync(local_root: Path, trees: dict[str, Path], files_from: Path,
              record: SyncRecord | None = None) -> ListedSync:
    """Compare each tree here with its listing (``trees``: tree -> listing file); write the fetch list.

    With a ``record`` of the last finished sync, a tree unchanged here since is compared by
    listings alone; the record is then dropped until this sync's deletions are done.
    """
    local_root = Path(local_root)
    result = ListedSync(local_root, list(trees), listings=dict(trees), record=record)
    ensure_dir(files_from.parent)
    tmp = files_from.with_name(files_from.name + ".tmp")
    with open(tmp, "w") as out:
        for tree, listing in trees.items():
            recorded = record.unchanged_here(tree, local_root / tree) if record else None
            if recorded is not None:
                _plan_from_record(result, tree, listing, *recorded, out)
                continue
            dirs: set[str] = set()
            here = local_files(local_root / tree, dirs)
            result.dirs[tree] = dirs
            result.here += len(here)
            listed = 0
            for name, size, mtime_s in listing_entries(listing):
                listed += 1
                if here.pop(name, None) != _key(size, mtime_s):
                    out.write(f"{tree}/{name}\0")
                    result.fetch += 1
                    result.fetch_bytes += size
                    _add_parents(dirs, name)
            result.counts[tree] = listed
            result.extra.extend(local_root / tree / name for name in sorted(here))
            del here
    os.replace(tmp, files_from)
    result.files_from = files_from
    if record is not None:
        record.forget()
    return result


def _add_parents(dirs: set[str], name: str) -> None:
    parent = os.path.dirname(name)
    while parent and parent not in dirs:
        dirs.add(parent)
        parent = os.path.dirname(parent)


def _plan_from_record(result: ListedSync, tree: str, listing: Path, previous: Path, entry: dict, out) -> None:
    """Plan ``tree`` by the difference of its new listing and the one the last sync left here."""
    dirs = set(entry["dirs"])
    result.dirs[tree] = dirs
    result.shortcut.append(tree)
    if digest(listing) == entry["sha256"]:  # the same listing: nothing to fetch, nothing extra
        count = sum(1 for line in open(listing, "rb") if not line.startswith(b"#"))
        result.counts[tree], result.here = count, result.here + count
        return
    if dirs == {""}:  # a flat tree (references/<obs>): its listings are sorted by name, merge them
        counts, fetch, gone = _merged_difference(listing, previous)
    else:  # names with directories are sorted by path, not by string: set differences
        counts, fetch, gone = _set_difference(listing, previous)
    result.counts[tree], result.here = counts[0], result.here + counts[1]
    for name, size in fetch:
        out.write(f"{tree}/{name}\0")
        result.fetch += 1
        result.fetch_bytes += size
        _add_parents(dirs, name)
    result.extra.extend(result.local_root / tree / name for name in sorted(gone))


def _merged_difference(new_path: Path, old_path: Path):
    """((new count, old count), [(name, size) to fetch], [names gone]) of two name-sorted listings.

    Memory grows with the difference only (the target is ~200 bytes per cache file, and the
    two listings alone are ~80 bytes per file each); unchanged runs cost one comparison a line.
    """
    fetch, gone, counts = [], [], [0, 0]

    def lines(path, i):
        with open(path, "rb") as handle:
            for line in handle:
                if not line.startswith(b"#"):
                    counts[i] += 1
                    yield line

    new, old = lines(new_path, 0), lines(old_path, 1)
    n, o = next(new, None), next(old, None)
    while n is not None or o is not None:
        if n == o:
            n, o = next(new, None), next(old, None)
            continue
        n_name = n.split(b"\t", 1)[0] if n is not None else None
        o_name = o.split(b"\t", 1)[0] if o is not None else None
        if o is None or (n is not None and n_name < o_name):
            fetch.append(_parse(n))
            n = next(new, None)
        elif n is None or o_name < n_name:
            gone.append(o_name.decode())
            o = next(old, None)
        else:  # the same name, changed
            fetch.append(_parse(n))
            n, o = next(new, None), next(old, None)
    return counts, fetch, gone


def _set_difference(new_path: Path, old_path: Path):
    new, old = _listing_lines(new_path), _listing_lines(old_path)
    fetch = [_parse(line) for line in new - old]
    fetched = {name for name, _ in fetch}
    gone = {_parse(line)[0] for line in old - new} - fetched
    return (len(new), len(old)), fetch, gone


def listed_argv(target: Target, remote_root: str, local_root: Path, files_from: Path,
                bwlimit: str | None = None) -> list[str]:
    """The rsync of exactly the names in ``files_from`` (NUL-separated), resumable, sizes in its itemized list."""
    options = (f"--files-from={files_from}", "--from0", "--ignore-missing-args", f"--partial-dir={PARTIAL_DIR}",
               "--out-format=%i %l %n", *((f"--bwlimit={bwlimit}",) if bwlimit else ()))
    return rsync.rsync_argv(target, remote_root, local_root, options=options)


def pull_listed(spec: rsync.Pull, trees: dict[str, Path], work: Path) -> ListedSync:
    """Fetch exactly the new and changed files of ``trees`` (tree -> trusted listing); deletions held back.

    ``work`` keeps the fetch list, rsync's itemized log and the record of the last finished sync.
    """
    target, label = spec.target, spec.label
    local_root = Path(spec.local_root)
    for tree in trees:
        (local_root / tree).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    result = plan_sync(local_root, trees, Path(work) / f"{label}.files-from", SyncRecord(work, label))
    log_path = Path(work) / f"{label}.rsync.log"
    log.info(f"{label} sync from {target.name} by its backup's listing: {result.source_files} files there, "
             f"{result.fetch} new or changed ({human(result.fetch_bytes)}), {len(result.extra)} not at the source")
    if not result.fetch:
        log_path.write_text("")
        result.seconds = time.monotonic() - start
        result.complete = True
        return result
    argv = listed_argv(target, spec.remote_root, local_root, result.files_from, spec.bwlimit)
    with open(log_path, "w") as itemized, _Transferring(result, label, itemized) as seen:
        rsync.run_rsync(argv, target, f"{label} sync", "nothing was deleted here; run the mirror again: it "
                        "resumes where this one stopped", seen.line)
    result.seconds = time.monotonic() - start
    log.info(f"{label} sync: {result.transferred} files copied in {result.seconds:.1f}s")
    result.complete = _all_here(local_root, result.files_from)
    return result


class _Transferring:
    """What an rsync of a fetch list says, line by line: kept in its log, counted, shown as progress."""

    EVERY = 5.0  # seconds between progress lines off a terminal

    def __init__(self, result: ListedSync, label: str, itemized):
        self.result, self.label, self.itemized = result, label, itemized
        self.bar = progress.terminal_bar(result.fetch_bytes, f"{label}: {result.fetch} files", leave=False)
        self.done_bytes, self.start = 0, time.monotonic()
        self.last = self.start

    def __enter__(self) -> _Transferring:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def line(self, line: str) -> None:
        self.itemized.write(line)
        flags, _, rest = line.rstrip("\n").partition(" ")
        if len(flags) != 11 or flags[1] != "f" or flags[0] not in "<>c":
            return
        size, _, name = rest.partition(" ")
        nbytes = int(size) if size.isdigit() else 0
        result = self.result
        result.sent.append(name)
        result.transferred += 1
        self.done_bytes += nbytes
        if self.bar is not None:
            self.bar.update(nbytes)
            self.bar.set_postfix_str(f"{result.fetch - result.transferred} files to go", refresh=False)
        elif time.monotonic() - self.last >= self.EVERY:
            self.last = time.monotonic()
            rate = self.done_bytes / max(self.last - self.start, 1e-6)
            eta = (result.fetch_bytes - self.done_bytes) / rate if rate else 0
            log.info(f"  {self.label}: {result.fetch - result.transferred} files, "
                     f"{human(result.fetch_bytes - self.done_bytes)} to go, {human(rate)}/s, ETA {eta:.0f}s")


def _all_here(local_root: Path, files_from: Path) -> bool:
    """Whether every name of the fetch list is here now (--ignore-missing-args skips what the source lost)."""
    with open(files_from, "rb") as handle:
        names = handle.read().split(b"\0")
    return all(os.path.lexists(local_root / name.decode()) for name in names if name)
