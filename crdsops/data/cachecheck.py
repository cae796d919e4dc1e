"""The file cache checked against the catalog: what ``inv check-cache`` finds, and the orphans' quarantine.

Quick mode (the default, and the check ``inv mirror`` and ``inv restore`` end with) costs one
``stat`` per file of ``references/<obs>`` and ``mappings/<obs>``, made by ``find`` in its own
process while this one reads the catalog (``PendingListing``; ``os.scandir`` without GNU find):

* every catalog file of the observatory is there with the catalog's size (``missing``,
  ``size``); mappings, which are small, are also read and checked by sha1 (``damaged``);
* files in those directories that no catalog row knows (``orphan``);
* symbolic links under ``server_files/deliveries`` that point nowhere (``broken-link``;
  the server itself writes none there: deliveries arrive by mirror from the real CRDS);
* rejected or blacklisted files present are *noted* (``rejected``, ``blacklisted``): a CRDS
  server keeps serving them and the clients decide to purge them, so they fail the check
  only with ``strict``.

``sha1=True`` reads every catalog file (or one ``Sample`` slice of them) and compares its sha1
with the catalog's, in parallel threads (hashlib releases the GIL; 1 MiB reads). A file that
cannot be read is ``unreadable``, never ``damaged``. A sha1 pass writes its progress to
``<root>/state/check-cache.progress.json`` (atomically, every few seconds, and when it is
interrupted); ``resume=True`` continues from there. Files are hashed in name order and the
progress file keeps the name up to which every file is done, with the problems found so far.

Refusals (``CacheUnavailable``, nothing checked): the cache directory is missing, or it holds
no references and no mappings of the observatory while the catalog lists files (unmounted or
wiped: calling every file missing would hide that).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import queue
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import commands, failpoints, interrupts, progress
from crdsops.config.model import ServerConfig
from crdsops.db import catalog as catalog_mod
from crdsops.db.catalog import CatalogFile, TreeSizes
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, human, write_atomic
from crdsops.runtime.results import CacheCheckResult

log = logging.getLogger(__name__)

SCHEMA = 1
TREES = ("references", "mappings")
PROBLEMS = ("missing", "size", "damaged", "unreadable", "orphan", "broken-link")
NOTES = ("rejected", "blacklisted")
REPAIRABLE = ("missing", "size", "damaged")  # fetched again from a source server
CHUNK = 1 << 20  # 1 MiB reads
BATCH = 64  # files per unit of work (and of the resume watermark)
PROGRESS_EVERY = 5.0  # seconds between writes of the progress file
QUARANTINE = "quarantine"


class CacheUnavailable(CrdsOpsError):
    """The cache is missing or looks unmounted: nothing was checked."""


@dataclass(frozen=True)
class Problem:
    kind: str  # one of PROBLEMS or NOTES
    tree: str  # references | mappings | deliveries
    name: str  # the file name (for deliveries: the path under deliveries/)
    detail: str = ""

    def line(self, observatory: str) -> str:
        where = f"deliveries/{self.name}" if self.tree == "deliveries" else f"{self.tree}/{observatory}/{self.name}"
        return f"{self.kind:11} {where}" + (f"  ({self.detail})" if self.detail else "")

    def as_dict(self) -> dict:
        return {"kind": self.kind, "tree": self.tree, "name": self.name, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict) -> Problem:
        return cls(str(data["kind"]), str(data["tree"]), str(data["name"]), str(data.get("detail", "")))


@dataclass(frozen=True)
class Sample:
    """The ``k``-th (1-based) of ``n`` slices: the files whose stable name hash mod ``n`` is ``k - 1``."""

    k: int
    n: int

    @classmethod
    def parse(cls, spec: str, today: datetime.date | None = None) -> Sample:
        """``K/N``, or ``auto/N`` (``auto`` alone: ``auto/7``): K from the date, so N nights cover every file once."""
        text = spec.strip().lower()
        if text == "auto":
            text = "auto/7"
        k_text, sep, n_text = text.partition("/")
        if not sep or not n_text.isdigit() or int(n_text) < 1:
            raise CrdsOpsError(f"--sample {spec!r}: give K/N (e.g. 3/7) or auto/N")
        n = int(n_text)
        if k_text == "auto":
            today = today or datetime.datetime.now(datetime.UTC).date()
            return cls(today.toordinal() % n + 1, n)  # consecutive days: consecutive slices, across new year too
        if not k_text.isdigit() or not 1 <= int(k_text) <= n:
            raise CrdsOpsError(f"--sample {spec!r}: K must be 1..{n}")
        return cls(int(k_text), n)

    def covers(self, name: str) -> bool:
        return zlib.crc32(name.encode()) % self.n == self.k - 1

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"


@dataclass
class Report:
    server: str
    observatory: str
    mode: str  # sizes | sha1 | sha1 sample K/N
    catalog_files: int = 0
    checked: int = 0  # catalog files whose presence and size were checked
    hashed: int = 0  # files read and hashed (mappings always; with sha1 the pass's files)
    bytes: int = 0  # bytes hashed
    seconds: float = 0.0
    resumed_after: str | None = None  # a resumed pass: every file up to this name was done before
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    strict: bool = False

    @property
    def failing(self) -> list[Problem]:
        return self.problems + (self.notes if self.strict else [])

    @property
    def ok(self) -> bool:
        return not self.failing

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems + self.notes:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    def summary(self) -> str:
        counts = self.counts()
        failing = (*PROBLEMS, *NOTES) if self.strict else PROBLEMS
        found = ", ".join(f"{counts[k]} {k}" for k in failing if counts.get(k))
        noted = "" if self.strict else ", ".join(f"{counts[k]} {k}" for k in NOTES if counts.get(k))
        hashed = f", {self.hashed} hashed ({human(self.bytes)})" if self.hashed else ""
        resumed = f", resumed after {self.resumed_after}" if self.resumed_after else ""
        return (f"{self.checked} files checked ({self.mode}){hashed}{resumed}, {len(self.failing)} problem(s)"
                + (f": {found}" if found else "") + (f" (noted: {noted} still present)" if noted else "")
                + f" in {self.seconds:.1f}s")

    def as_dict(self) -> dict:
        return {"schema": SCHEMA, "server": self.server, "mode": self.mode, "ok": self.ok, "strict": self.strict,
                "catalog_files": self.catalog_files, "checked": self.checked, "hashed": self.hashed,
                "bytes": self.bytes, "seconds": round(self.seconds, 3), "resumed_after": self.resumed_after,
                "counts": self.counts(), "problems": [p.as_dict() for p in self.problems],
                "notes": [p.as_dict() for p in self.notes]}

    def result(self, keep: int = 100) -> CacheCheckResult:
        """What ``inv status`` keeps (``crdsops.runtime.results``): the counts and at most ``keep`` names per kind."""
        names: dict[str, list[str]] = {}
        for p in self.failing:
            names.setdefault(p.kind, [])
            if len(names[p.kind]) < keep:
                names[p.kind].append(p.name)
        return CacheCheckResult(ok=self.ok, seconds=round(self.seconds, 3), summary=self.summary(), mode=self.mode,
                                checked=self.checked, hashed=self.hashed, bytes=self.bytes, counts=self.counts(),
                                problems=names)


# --- listing ---------------------------------------------------------------------------

class Listing:
    """One directory of the cache: regular files' sizes, and the entries that are not (or not statable).

    A listing by find (``Listing.found``) keeps find's output as it came (``name/size`` entries,
    NUL-terminated: a name has no "/", a size is decimal, ``-`` for an entry that is not a regular
    file) and makes the ``sizes`` and ``odd`` dicts from it only when asked: ``matches`` decides
    the usual case, a tree whose entries are exactly the catalog's ``name/size`` keys, in C.
    """

    def __init__(self, sizes: dict[str, int] | None = None, odd: dict[str, str] | None = None):
        self._sizes = {} if sizes is None else sizes
        self._odd = {} if odd is None else odd  # name -> why it is not a regular file
        self._output: list[bytes] | None = None  # find's entries in the parts they came in, not parsed yet
        self._base: Path | None = None
        self._count = 0
        self._has_odd = False
        self._verdict: tuple[TreeSizes, bool] | None = None  # matches(), worked out while find ran

    @classmethod
    def found(cls, base: Path, output: list[bytes], count: int, has_odd: bool,
              verdict: tuple[TreeSizes, bool] | None = None) -> Listing:
        """find's whole output for ``base`` (in parts of whole entries): ``count`` entries, ``has_odd`` if one
        is ``name/-``."""
        listing = cls()
        listing._output, listing._base, listing._count, listing._has_odd = output, Path(base), count, has_odd
        listing._verdict = verdict
        return listing

    def matches(self, want: TreeSizes) -> bool:
        """True when the directory holds exactly the catalog's files with its sizes and nothing else."""
        if self._output is None:
            return not self._odd and self._sizes == want.sizes
        if self._has_odd:
            return False
        if self._verdict is not None and self._verdict[0] is want:
            return self._verdict[1]
        return _covers(want, self._count, self._output)

    @property
    def sizes(self) -> dict[str, int]:
        self._parse()
        return self._sizes

    @property
    def odd(self) -> dict[str, str]:
        self._parse()
        return self._odd

    def _parse(self) -> None:
        if self._output is None:
            return
        output, self._output, self._verdict = b"".join(self._output), None, None
        for entry in output[:-1].split(b"\0") if output else ():
            raw, _, size = entry.rpartition(b"/")
            name = os.fsdecode(raw)  # the name as os.scandir gives it (surrogateescape)
            if size == b"-":  # a symlink, directory or the like: stat-ed here as scan_tree does
                _add(self, name, lambda n=raw: os.stat(os.path.join(os.fsencode(self._base), n)))
            else:
                self._sizes[name] = int(size)

    def __bool__(self) -> bool:
        return self._count > 0 if self._output is not None else bool(self._sizes or self._odd)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Listing):
            return NotImplemented
        return self.sizes == other.sizes and self.odd == other.odd

    def __repr__(self) -> str:
        return f"Listing(sizes={self.sizes!r}, odd={self.odd!r})"


def _covers(want: TreeSizes, count: int, outputs: list[bytes]) -> bool:
    """Whether ``count`` entries in ``outputs`` are exactly ``want``'s keys: every key among them, and as many."""
    unseen = set(want.keys)
    for output in outputs:
        unseen.difference_update(output[:-1].split(b"\0"))
    return not unseen and count == len(want)  # each key seen, no more entries than keys: no other entry


# find prints "name/size\0" for each regular file and "name/-\0" for anything else (a name has
# no "/" and no NUL); ``-H`` follows the directory itself when it is a symlink (a cache on other
# storage), as scandir does.
FIND_EXPRESSION = ("-mindepth", "1", "-maxdepth", "1", "-type", "f", "-printf", "%f/%s\\0",
                   "-o", "-printf", "%f/-\\0")
ODD_MARK = b"/-\0"  # an entry that is not a regular file; a size is digits, a name has no "/"
PART = 1 << 20  # find's output is taken in 1 MiB parts


class _Taken:
    """find's output taken in as it comes, whole entries at a time.

    Once the catalog's keys are known (``expect``), each part is also struck off them as it
    arrives: every key struck off and no more entries than keys is a match (``_covers``), and
    when find ends only its last part is left to do.
    """

    def __init__(self):
        self.parts: list[bytes] = []  # whole entries, as they came
        self.rest = b""  # an entry not finished yet
        self.count = 0
        self.has_odd = False
        self.well_formed = True  # one "/" per entry: anything else is not our find's output
        self.want: TreeSizes | None = None
        self.unseen: set[bytes] | None = None  # the catalog's keys not listed so far

    def expect(self, want: TreeSizes) -> None:
        self.want, self.unseen = want, set(want.keys)
        for part in self.parts:
            self.unseen.difference_update(part[:-1].split(b"\0"))

    def feed(self, chunk: bytes) -> None:
        data = self.rest + chunk if self.rest else chunk
        end = data.rfind(b"\0") + 1
        part, self.rest = data[:end], data[end:]
        if not part:
            return
        entries = part.count(b"\0")
        self.well_formed = self.well_formed and part.count(b"/") == entries
        self.has_odd = self.has_odd or ODD_MARK in part
        self.count += entries
        self.parts.append(part)
        if self.unseen is not None and not self.has_odd:
            self.unseen.difference_update(part[:-1].split(b"\0"))

    def listing(self, base: Path) -> Listing | None:
        """The Listing, or None if the output was cut short or is not find's."""
        if self.rest or not self.well_formed:
            return None
        verdict = None
        if self.want is not None and not self.has_odd:
            verdict = (self.want, not self.unseen and self.count == len(self.want))
        return Listing.found(base, self.parts, self.count, self.has_odd, verdict)


class PendingListing:
    """One directory being listed by ``find`` in its own process, while this one reads the catalog.

    A process, not a thread: each stat in a thread waits for the catalog thread's GIL switch
    interval (measured slower than in sequence), and find's stat loop costs less per file than
    Python's (0.77 s against 1.03-1.15 s for 200,000 files, alternating, on a loaded machine).
    Its output comes through a socket that a thread only reads, 1 MiB at a time (``MSG_WAITALL``:
    one wake-up per MiB, where a pipe's reader wakes for each 4 KiB that find writes, each time
    taking the GIL from the catalog read: 5,000 futex calls for 200,000 files), and queues;
    ``result(want)`` takes in the parts as they come, striking them off the catalog's keys
    (``_Taken``), so that little is left when find ends.
    ``result()`` falls back to ``scan_tree`` (os.scandir) without GNU find, when find fails (a
    missing or unreadable directory, an entry that vanished) or lists nothing, so that it decides.
    """

    def __init__(self, base: Path):
        self.base = Path(base)
        self.parts: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.reader: threading.Thread | None = None
        self.failed = False
        argv = ["find", "-H", os.path.abspath(self.base), *FIND_EXPRESSION]
        self.output, theirs = socket.socketpair()
        try:
            self.proc = commands.start(argv, what="the cache listing", stdout=theirs.fileno(), stderr=commands.DEVNULL)
        except (commands.NotInstalled, OSError):
            self.proc = None
            self.output.close()
            return
        finally:
            theirs.close()  # find's end: ours reads to the end of its output once find has exited
        self.reader = threading.Thread(target=self._read, name="cache listing", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            while chunk := self.output.recv(PART, socket.MSG_WAITALL):
                self.parts.put(chunk)
        except OSError:
            self.failed = True  # the listing falls back to os.scandir
        finally:
            self.parts.put(None)

    def result(self, want: TreeSizes | None = None) -> Listing | None:
        """The listing (find's, or os.scandir's when find could not give it); ``want``: the catalog's keys to
        compare with while find runs (``Listing.matches``)."""
        try:
            listing = None
            if self.proc is not None:
                taken = _Taken()
                if want is not None:
                    taken.expect(want)
                for chunk in iter(self.parts.get, None):
                    taken.feed(chunk)
                if self.proc.wait() == 0 and not self.failed:
                    listing = taken.listing(self.base)
            # nothing listed may be an empty directory or a file where it should be: scandir says which
            return listing or scan_tree(self.base)
        finally:
            self.close()

    def close(self) -> None:
        """End find if it still runs (the check failed or was interrupted before it waited)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.reader is not None:
            self.reader.join()  # find has ended: its output is at its end
        self.output.close()


def parse_find(base: Path, output: bytes) -> Listing | None:
    """The Listing in find's whole output (``FIND_EXPRESSION``); None if it is cut short."""
    taken = _Taken()
    taken.feed(output)
    return taken.listing(base)


def _add(listing: Listing, name: str, stat) -> None:
    """One entry into the listing, by ``stat()`` (following symlinks): its size, or why it is odd."""
    try:
        st = stat()
    except OSError as err:
        listing.odd[name] = err.strerror or str(err)
        return
    if st.st_mode & 0o170000 == 0o100000:
        listing.sizes[name] = st.st_size
    else:
        listing.odd[name] = "not a regular file"


def list_tree(base: Path) -> Listing | None:
    """The entries directly in ``base`` (one stat each, by find); None if it is missing."""
    return PendingListing(base).result()


def scan_tree(base: Path) -> Listing | None:
    """``list_tree`` by os.scandir; None if ``base`` is missing, CacheUnavailable if it cannot be listed."""
    try:
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CacheUnavailable(f"cannot list {base} ({err.strerror}); check its mount and permissions; "
                               "nothing was checked") from None
    listing = Listing()
    try:
        with os.scandir(fd) as scan:  # by its descriptor: each DirEntry.stat is an fstatat, no path walk
            for entry in scan:
                _add(listing, entry.name, entry.stat)
    finally:
        os.close(fd)
    return listing


def tree_roots(config: ServerConfig, mappings: Path | None = None) -> dict[str, Path]:
    """The directory of each checked tree: the live cache's, or ``mappings`` for that tree."""
    roots = {tree: config.layout.cache_tree(tree) for tree in TREES}
    if mappings is not None:
        roots["mappings"] = Path(mappings)
    return roots


def list_trees(config: ServerConfig, mappings: Path | None = None) -> dict[str, Listing | None]:
    """Every checked tree's listing, the trees listed side by side."""
    pending = {tree: PendingListing(root) for tree, root in tree_roots(config, mappings).items()}
    try:
        return {tree: waiting.result() for tree, waiting in pending.items()}
    finally:
        for waiting in pending.values():
            waiting.close()


def _broken_links(base: Path) -> list[Problem]:
    found = []
    for dirpath, dirs, files in os.walk(base):
        for name in (*dirs, *files):
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and not os.path.exists(path):
                found.append(Problem("broken-link", "deliveries", os.path.relpath(path, base),
                                     f"points at {os.readlink(path)}, which does not exist"))
    return found


# --- hashing ---------------------------------------------------------------------------

def sha1_of(path: str, buffer: bytearray) -> tuple[str, int]:
    """(sha1 hex, bytes read) of a file, read in ``len(buffer)`` chunks."""
    h = hashlib.sha1()
    view = memoryview(buffer)
    total = 0
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            h.update(view[:n])
            total += n
    return h.hexdigest(), total


def _hash_problem(row: CatalogFile, path: str, buffer: bytearray) -> tuple[Problem | None, int]:
    try:
        sha1, size = sha1_of(path, buffer)
    except FileNotFoundError:
        return Problem("missing", row.tree, row.name, "vanished while checked"), 0
    except OSError as err:
        return Problem("unreadable", row.tree, row.name, err.strerror or str(err)), 0
    if size != row.size:
        return Problem("size", row.tree, row.name, f"{size} bytes, the catalog says {row.size}"), size
    if sha1 != row.sha1:
        return Problem("damaged", row.tree, row.name, f"sha1 {sha1}, the catalog says {row.sha1}"), size
    return None, size


class _Pass:
    """One parallel hashing pass over ``rows`` (sorted by name), keeping a resumable watermark."""

    def __init__(self, config: ServerConfig, rows: list[CatalogFile], mode: str, roots: dict[str, Path],
                 resumed: Resumed):
        self.config, self.rows, self.mode = config, rows, mode
        self.roots = roots  # tree -> directory (``tree_roots``)
        self.progress = None  # a tqdm bar on a terminal (``progress.terminal_bar``)
        self.show_progress = False
        self.batches = [rows[i:i + BATCH] for i in range(0, len(rows), BATCH)]
        self.next = 0
        self.done: set[int] = set()
        self.prefix = 0  # batches [0, prefix) are all done
        self.found: dict[int, list[Problem]] = {}
        self.prior, self.after = list(resumed.problems), resumed.after
        self.hashed = self.bytes = 0
        self.lock = threading.Lock()
        self.last_write = time.monotonic()
        self.started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

    def work(self) -> None:
        buffer = bytearray(CHUNK)
        while True:
            with self.lock:
                if self.next >= len(self.batches):
                    return
                index = self.next
                self.next += 1
            found, nbytes = [], 0
            for row in self.batches[index]:
                interrupts.check()
                base = self.roots[row.tree]
                problem, size = _hash_problem(row, os.path.join(base, row.name), buffer)
                nbytes += size
                if problem is not None:
                    found.append(problem)
            with self.lock:
                self.found[index] = found
                self.done.add(index)
                while self.prefix in self.done:
                    self.prefix += 1
                self.hashed += len(self.batches[index])
                self.bytes += nbytes
                if self.progress is not None:
                    self.progress.set_postfix_str(f"{self.hashed}/{len(self.rows)} files", refresh=False)
                    self.progress.update(nbytes)
                due = time.monotonic() - self.last_write >= PROGRESS_EVERY
                if due:
                    self.last_write = time.monotonic()
                    self.save()
            failpoints.hit("check-cache.batch")

    def problems(self) -> list[Problem]:
        return self.prior + [p for i in sorted(self.found) for p in self.found[i]]

    def save(self) -> None:
        """Write the resumable state (call with the lock held, or once the workers stopped)."""
        if self.prefix == 0:
            return
        upto = self.batches[self.prefix - 1][-1].name
        done = [p for i in range(self.prefix) for p in self.found.get(i, [])]
        data = {"schema": SCHEMA, "mode": self.mode, "after": upto, "started": self.started,
                "updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "problems": [p.as_dict() for p in self.prior + done]}
        ensure_dir(self.config.layout.state)
        write_atomic(progress_file(self.config), json.dumps(data) + "\n")


def progress_file(config: ServerConfig) -> Path:
    return config.layout.state / "check-cache.progress.json"


@dataclass(frozen=True)
class Resumed:
    """Where an interrupted sha1 pass stopped: every file up to ``after`` was done, with these problems."""

    after: str | None = None
    problems: tuple[Problem, ...] = ()


def read_progress(config: ServerConfig, mode: str) -> Resumed:
    """Where an interrupted pass of ``mode`` stopped; ``Resumed()`` if there is none."""
    try:
        data = json.loads(progress_file(config).read_text())
        if data.get("mode") != mode:
            return Resumed()
        return Resumed(str(data["after"]), tuple(Problem.from_dict(p) for p in data.get("problems", [])))
    except (OSError, ValueError, KeyError, TypeError):
        return Resumed()


def _hash_all(run: _Pass, workers: int, resumable: bool) -> _Pass:
    """Hash ``run``'s rows in ``workers`` threads; save where it got to when it is stopped."""
    if not run.rows:
        return run
    threads = max(1, min(workers, len(run.batches)))
    run.progress = progress.terminal_bar(sum(r.size for r in run.rows), "sha1") if run.show_progress else None
    try:
        if threads == 1 and threading.current_thread() is threading.main_thread():
            # one batch (quick mode's mappings, often) in `inv check-cache` itself: no pool to start.
            # Inside another job (a restore's check), side_by_side as ever: the outer call's stop ends it.
            run.work()
        else:
            from crdsops.parallel import side_by_side

            jobs = {f"sha1 worker {i + 1}": run.work for i in range(threads)}
            side_by_side(jobs, own_processes=False)  # it may run inside a restore's job, next to its mysqldump
    except BaseException:
        if resumable:
            with interrupts.shielded("saving the check's progress"):
                run.save()
        raise
    finally:
        if run.progress is not None:
            run.progress.close()
    return run


# --- the check -------------------------------------------------------------------------

def default_workers() -> int:
    return max(2, min(16, os.cpu_count() or 2))


@dataclass(frozen=True)
class CheckOptions:
    """How much to check: sizes only (quick), or sha1 of everything or of one ``sample`` slice."""

    sha1: bool = False
    sample: Sample | None = None
    resume: bool = False  # continue the interrupted sha1 pass
    strict: bool = False  # rejected or blacklisted files present are problems, not notes
    workers: int | None = None  # hashing threads (default: the CPUs, at least 2)
    progress: bool = False  # a bar on a terminal during the sha1 pass

    @property
    def mode(self) -> str:
        return "sizes" if not self.sha1 else ("sha1" if self.sample is None else f"sha1 sample {self.sample}")


@dataclass(frozen=True)
class CheckSource:
    """What to check instead of the live state: a restore checks what it staged, before the swap.

    ``database``: the catalog to read (a staging schema or file); ``mappings``: the mappings
    directory; ``listed``: the trees as ``list_trees`` found them (listed while the rows loaded).
    """

    database: str | None = None
    mappings: Path | None = None
    listed: dict[str, Listing | None] | None = None


def check(config: ServerConfig, options: CheckOptions = CheckOptions(), source: CheckSource = CheckSource()) -> Report:
    """Check the cache against the catalog (see the module docstring); raise CacheUnavailable to refuse."""
    start = time.monotonic()
    report = Report(config.name, config.observatory, options.mode, strict=options.strict)
    if not config.cache.is_dir():
        raise CacheUnavailable(f"the file cache {config.cache} (cache) is missing: is its storage mounted? "
                               "nothing was checked")
    roots = tree_roots(config, source.mappings)
    # find lists the trees in its own processes while this one reads the catalog (PendingListing)
    pending = {} if source.listed is not None else {tree: PendingListing(root) for tree, root in roots.items()}
    try:
        known = catalog_mod.for_quick_check(config, source.database)
        expected, flagged = known.trees, known.flagged  # {tree: TreeSizes}: compared in C, as sets
        listings = source.listed if source.listed is not None else {t: p.result(expected[t])
                                                                     for t, p in pending.items()}
    finally:
        for waiting in pending.values():
            waiting.close()
    total = sum(len(v) for v in expected.values())
    report.catalog_files = report.checked = total
    if total and not any(listings.values()):
        raise CacheUnavailable(
            f"the file cache {config.cache} holds no references or mappings of {config.observatory} while the "
            f"catalog lists {total} files: it looks unmounted or wiped; nothing was checked (mount it, or "
            "bring the files back with `inv mirror`)")
    bad = _compare_sizes(report, expected, listings)
    _note_flagged(report, flagged, expected, bad)
    report.problems.extend(_broken_links(config.layout.deliveries))
    run = _hash_pass(config, options, source.database, roots, bad)
    if run.after is not None:
        report.resumed_after = run.after
    report.problems.extend(run.problems())
    report.hashed, report.bytes = run.hashed, run.bytes
    if options.sha1:
        progress_file(config).unlink(missing_ok=True)  # the pass is complete
    order = {k: i for i, k in enumerate(PROBLEMS)}
    report.problems.sort(key=lambda p: (order.get(p.kind, 99), p.tree, p.name))
    report.seconds = time.monotonic() - start
    return report


def _compare_sizes(report: Report, expected: dict[str, TreeSizes], listings: dict) -> set[str]:
    """Missing, wrong-size and orphan files, tree by tree; the names of catalog files not present with their size."""
    bad: set[str] = set()
    for tree in TREES:
        listing = listings[tree] or Listing()
        if listing.matches(expected[tree]):
            continue  # the usual case, decided in C
        want, have, odd = expected[tree].sizes, listing.sizes, listing.odd
        for name, size in sorted(want.items() - have.items()):
            bad.add(name)
            if name in odd:
                kind = "missing" if odd[name] == "not a regular file" else "unreadable"
                report.problems.append(Problem(kind, tree, name, odd[name]))
            elif name not in have:
                report.problems.append(Problem("missing", tree, name))
            else:
                short = "truncated: " if have[name] < size else ""
                report.problems.append(Problem("size", tree, name,
                                               f"{short}{have[name]} bytes, the catalog says {size}"))
        for name in sorted(have.keys() - want.keys()):
            report.problems.append(Problem("orphan", tree, name, f"{have[name]} bytes, in no catalog row"))
        for name in sorted(odd.keys() - want.keys()):
            report.problems.append(Problem("orphan", tree, name, f"{odd[name]}, in no catalog row"))
    return bad


def _note_flagged(report: Report, flagged: list[CatalogFile], expected: dict[str, TreeSizes], bad: set[str]) -> None:
    """Rejected and blacklisted files still present (``flagged`` rows): notes (problems with ``strict``)."""
    for row in flagged:
        if row.name in bad or not expected[row.tree].lists(row.name, row.size):
            continue
        if row.rejected:
            report.notes.append(Problem("rejected", row.tree, row.name, "rejected in the catalog, still in the cache"))
        if row.blacklisted:
            report.notes.append(Problem("blacklisted", row.tree, row.name,
                                        "blacklisted in the catalog, still in the cache"))


def _hash_pass(config: ServerConfig, options: CheckOptions, database: str | None, roots: dict[str, Path],
               bad: set[str]) -> _Pass:
    """The mappings always, and with sha1 every file (or the sample's): read and compared by sha1."""
    sample = options.sample
    rows = catalog_mod.files(config, None if options.sha1 else "mapping", database)
    to_hash = sorted((r for r in rows if r.name not in bad
                      and (r.tree == "mappings" or sample is None or sample.covers(r.name))), key=lambda r: r.name)
    resumed = Resumed()
    if options.sha1 and options.resume:
        resumed = read_progress(config, options.mode)
        if resumed.after is None:
            log.info(f"no interrupted `{options.mode}` pass to resume; checking every file")
        else:
            to_hash = [r for r in to_hash if r.name > resumed.after]
            resumed = Resumed(resumed.after, tuple(p for p in resumed.problems if p.name <= resumed.after))
    run = _Pass(config, to_hash, options.mode, roots, resumed)
    run.show_progress = options.progress and options.sha1
    return _hash_all(run, options.workers or default_workers(), resumable=options.sha1)


# --- orphans into quarantine -------------------------------------------------------------

def quarantine_dir(config: ServerConfig, when: datetime.datetime | None = None) -> Path:
    """``<cache>/quarantine/<YYYYMMDDTHHMMSSZ>``: orphans are moved there, never deleted."""
    when = when or datetime.datetime.now(datetime.UTC)
    return config.cache / QUARANTINE / when.strftime("%Y%m%dT%H%M%SZ")


def quarantine_cap(config: ServerConfig, listed: int) -> int:
    """Like the mirror's deletions: 10% of the cache's files, at least 100."""
    return max(100, listed // 10)


def quarantine(config: ServerConfig, orphans: list[Problem], max_move: int | None = None, dry_run: bool = False,
               catalog_files: int = 0) -> tuple[Path, list[Path]]:
    """Move orphans to a dated quarantine under the cache; refuse more than the cap. (where, moved files)."""
    orphans = [p for p in orphans if p.kind == "orphan" and p.tree in TREES]
    target = quarantine_dir(config)
    if not orphans:
        return target, []
    cap = quarantine_cap(config, catalog_files + len(orphans)) if max_move is None else max_move
    if len(orphans) > cap:
        raise CrdsOpsError(f"{len(orphans)} orphans, more than the cap of {cap}; quarantine refused (check the "
                           f"catalog and the cache; if this is expected, pass --max-quarantine {len(orphans)})")
    moved = []
    for p in orphans:
        src = config.layout.cache_tree(p.tree) / p.name
        dst = target / p.tree / config.observatory / p.name
        moved.append(dst)
        if dry_run:
            continue
        ensure_dir(dst.parent, mode=0o755)
        os.rename(src, dst)  # same filesystem: the cache's own directory
    if not dry_run:
        log.info(f"moved {len(moved)} orphan(s) to {target}")
    return target, moved


def recheck(config: ServerConfig, names: list[tuple[str, str]]) -> list[Problem]:
    """Size and sha1 of the given (tree, name) files against the catalog, after a repair."""
    rows = {(r.tree, r.name): r for r in catalog_mod.files(config)}
    buffer = bytearray(CHUNK)
    out = []
    for key in names:
        row = rows.get(key)
        if row is None:
            continue
        problem, _size = _hash_problem(row, str(config.layout.cache_tree(row.tree) / row.name), buffer)
        if problem is not None:
            out.append(problem)
    return out


# --- the check restore and mirror end with -------------------------------------------------

def closing_check(config: ServerConfig, after: str, listed: dict | CrdsOpsError | None = None) -> Report | None:
    """The quick check ``inv mirror`` and ``inv restore`` end with: reported and recorded, never fatal.

    ``listed``: the trees a restore listed while it staged them (``list_trees``; they are live
    now), or the error that refused it; None lists them now.
    """
    from crdsops.runtime import results

    start = time.monotonic()
    try:
        if isinstance(listed, BaseException):
            raise listed
        report = check(config, source=CheckSource(listed=listed))
    except CrdsOpsError as err:
        results.write(config.layout, CacheCheckResult(ok=False, seconds=round(time.monotonic() - start, 3),
                                                      error=str(err)))
        log.warning(f"the cache check after the {after} could not run: {err}")
        return None
    results.write(config.layout, report.result())
    if report.ok:
        log.info(f"cache check after the {after}: {report.summary()}")
        return report
    for problem in report.failing[:20]:
        log.info(f"  {problem.line(config.observatory)}")
    more = " (first 20 shown; `inv check-cache` lists all)" if len(report.failing) > 20 else ""
    log.warning(f"cache check after the {after}: {report.summary()}{more}; the {after} itself is not rolled "
                "back; fix with `inv check-cache --repair --src KIND`")
    return report

