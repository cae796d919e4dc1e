"""The backups a server has: listing them, their verification state, retention, finding one.

Private backups are the dated directories under ``backups.private_dir`` (newest first by
their manifest's date, not their name); the shared latest is ``<shared_dir>/<obs>.<kind>``.
Verification results are cached in ``<private_dir>/.verified.json``, keyed by the
manifest's sha256, so ``inv backups`` shows them without reading every dump again.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from crdsops.config.model import Backups, ServerConfig
from crdsops.data import manifest as manifest_mod
from crdsops.data.manifest import Manifest
from crdsops.errors import CrdsOpsError
from crdsops.files import digest, ensure_dir, human, list_dir, write_atomic  # noqa: F401 - human: inventory.human
from crdsops.runtime.outcomes import BackupRef

STAMP = "%Y%m%dT%H%M%SZ"  # the one name template: private dirs and shared targets use it
VERIFIED = ".verified.json"
SCHEMA = 1  # of the --json documents of `inv backups` and `inv verify` (README, JSON output)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def shared_latest(config: ServerConfig) -> Path:
    return config.backups.shared_dir / config.name


@dataclass
class Entry:
    path: Path
    where: str  # "private" | "shared" | "given"
    manifest: Manifest | None = None
    error: str = ""
    size: int = 0
    state: str = "unverified"  # "ok" | "BAD" | "unverified"
    problems: list = field(default_factory=list)

    @property
    def created(self) -> datetime.datetime | None:
        return self.manifest.created if self.manifest else None

    @property
    def ref(self) -> BackupRef:
        return BackupRef(self.path.resolve().name, self.path, self.created,
                         self.manifest.server.name if self.manifest else "")

    @property
    def engine(self) -> str:
        return self.manifest.database.engine if self.manifest else "?"

    @property
    def purpose(self) -> str:
        return self.manifest.purpose if self.manifest else "?"


def entry_dict(entry: Entry, now: datetime.datetime | None = None, verdict: Verdict | None = None) -> dict:
    """One backup in the ``--json`` documents (``SCHEMA``); ``verdict``: what retention says of it."""
    now = now or utcnow()
    m = entry.manifest
    return {
        "where": entry.where,
        "path": str(entry.path),
        "name": entry.path.resolve().name,
        "created": entry.created.isoformat() if entry.created else None,
        "age_seconds": int((now - entry.created).total_seconds()) if entry.created else None,
        "size": entry.size,
        "engine": entry.engine if m else None,
        "purpose": entry.purpose if m else None,
        "server": m.server.name if m else None,
        "counts": m.counts.as_dict() if m else None,
        "verified": entry.state,
        "problems": list(entry.problems),
        # null for the shared latest (retention never touches it); reasons [] = removed next time
        "retention": {"keep": verdict.kept, "reasons": list(verdict.reasons)} if verdict else None,
    }


def entry_of(path: Path, where: str, cache: dict | None = None) -> Entry:
    entry = Entry(path=path, where=where)
    try:
        entry.manifest = Manifest.load(path)
    except CrdsOpsError as err:
        entry.error = str(err)
        entry.state = "BAD"
        entry.problems = [str(err)]
    entry.size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if entry.manifest is not None:
        known = (cache or {}).get(_cache_key(path))
        if known:
            entry.state = "ok" if known["ok"] else "BAD"
            entry.problems = known.get("problems", [])
    return entry


BINLOG_ARCHIVE = "binlogs"  # crdsops.data.binlogs.ARCHIVE_DIR: the binlog archive beside the backups


def private_backups(config: ServerConfig) -> list[Entry]:
    """Every dated private backup, newest first (by manifest date; unreadable ones last)."""
    directory = config.backups.private_dir
    if not directory.exists():
        return []
    cache = _read_cache(config)
    entries = [entry_of(p, "private", cache) for p in list_dir(directory)
               if p.is_dir() and not p.name.startswith(".") and p.name != BINLOG_ARCHIVE]
    epoch = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return sorted(entries, key=lambda e: (e.created or epoch, e.path.name), reverse=True)


def shared_entry(config: ServerConfig) -> Entry | None:
    link = shared_latest(config)
    if not link.exists():
        return None
    return entry_of(link, "shared", _read_cache(config))


def all_entries(config: ServerConfig) -> list[Entry]:
    """The private backups, newest first, then the shared latest."""
    entries = private_backups(config)
    shared = shared_entry(config)
    return entries + ([shared] if shared else [])


# --- verification state -------------------------------------------------------------------

def _cache_key(path: Path) -> str:
    try:
        sha = digest(path / manifest_mod.NAME)
    except OSError:
        sha = "none"
    return f"{path.resolve()}:{sha}"


def _read_cache(config: ServerConfig) -> dict:
    try:
        return json.loads((config.backups.private_dir / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}


def record_verification(config: ServerConfig, path: Path, problems: list[str]) -> None:
    cache = _read_cache(config)
    private = config.backups.private_dir
    live = {str(p.resolve()) for p in private.iterdir()} if private.exists() else set()
    live.add(str(shared_latest(config).resolve()))
    cache = {k: v for k, v in cache.items() if k.rsplit(":", 1)[0] in live}
    cache[_cache_key(path)] = {"ok": not problems, "problems": problems[:20], "at": utcnow().isoformat(timespec="seconds")}
    ensure_dir(private)
    write_atomic(private / VERIFIED, json.dumps(cache, indent=1, sort_keys=True) + "\n")


def verify_entry(config: ServerConfig, entry: Entry, deep: bool = True) -> Entry:
    entry.problems = manifest_mod.verify(entry.path, deep=deep)
    entry.state = "ok" if not entry.problems else "BAD"
    record_verification(config, entry.path, entry.problems)
    return entry


# --- retention ------------------------------------------------------------------------------

# The tiers: the label of a backup's period, by its manifest's creation time in UTC (the name
# may lie, and a local date would move a backup between days with the machine's time zone).
PERIODS = {
    "daily": lambda t: t.strftime("%Y-%m-%d"),
    "weekly": lambda t: "{:04d}-W{:02d}".format(*t.isocalendar()[:2]),  # ISO weeks, as restic/borg
    "monthly": lambda t: t.strftime("%Y-%m"),
}


@dataclass(frozen=True)
class Verdict:
    """What retention says of one private backup: why it stays, or (no reasons) that it goes."""
    entry: Entry
    reasons: tuple[str, ...]

    @property
    def kept(self) -> bool:
        return bool(self.reasons)


def retention_rule(backups: Backups) -> str:
    """The rule in words, as the backup plan shows it."""
    b = backups
    tiers = [f"{n} {unit}" for n, unit in ((b.keep_daily, "days"), (b.keep_weekly, "weeks"),
                                            (b.keep_monthly, "months")) if n]
    tiered = f", the newest of each of the last {', '.join(tiers)} that have one" if tiers else ""
    return (f"keep the newest {b.keep} and all younger than {b.keep_days} days{tiered}, "
            f"at least {b.min_keep}, and always the newest verified")


def _tier(entries: list[Entry], period: str, count: int):
    """(index, label) of the newest backup of each of the ``count`` newest periods that have one.

    ``entries`` are newest first, so the first one met of a period is its newest. A backup
    recorded as BAD holds no period: a monthly that cannot be restored is no monthly.
    """
    labels: list[str] = []
    for i, entry in enumerate(entries):
        if len(labels) >= count:
            return
        if entry.state == "BAD":
            continue
        label = PERIODS[period](entry.created.astimezone(datetime.UTC))
        if label not in labels:
            labels.append(label)
            yield i, label


def retention_verdicts(config: ServerConfig, listed: list[Entry], now: datetime.datetime | None = None,
                       verify=None) -> list[Verdict]:
    """A ``Verdict`` for each of ``listed`` (``private_backups``, newest first) with a readable manifest.

    Every rule is applied to all backups and a backup stays if any keeps it (restic's
    ``forget``): the newest ``keep``; all younger than ``keep_days`` days; the newest of each
    of the last ``keep_daily`` days, ``keep_weekly`` weeks, ``keep_monthly`` months that have
    one; the newest one that verifies (``verify(entry)``; by default the recorded result, or a
    verification now); then the newest others until ``min_keep`` stay. Dated by the manifest.
    """
    b = config.backups
    now = now or utcnow()
    entries = [e for e in listed if e.created is not None]
    reasons: list[list[str]] = [[] for _ in entries]
    for i, entry in enumerate(entries):
        if i < b.keep:
            reasons[i].append(f"newest {b.keep}")
        if entry.created >= now - datetime.timedelta(days=b.keep_days):
            reasons[i].append(f"within {b.keep_days} days")
    for period, count in (("daily", b.keep_daily), ("weekly", b.keep_weekly), ("monthly", b.keep_monthly)):
        for i, label in _tier(entries, period, count):
            reasons[i].append(f"{period} {label}")
    verify = verify or (lambda e: e.state == "ok"
                        or (e.state == "unverified" and verify_entry(config, e).state == "ok"))
    for i, entry in enumerate(entries):
        if verify(entry):
            reasons[i].append("newest verified")
            break
    short = b.min_keep - sum(1 for r in reasons if r)
    for i in range(len(entries)):
        if short <= 0:
            break
        if not reasons[i]:
            reasons[i].append("min_keep")
            short -= 1
    return [Verdict(entry, tuple(why)) for entry, why in zip(entries, reasons, strict=True)]


def retention_plan(config: ServerConfig, listed: list[Entry], now: datetime.datetime | None = None,
                   verify=None) -> tuple[list[Entry], list[Entry]]:
    """(keep, remove) among ``listed``, as ``retention_verdicts`` decides."""
    verdicts = retention_verdicts(config, listed, now, verify)
    return [v.entry for v in verdicts if v.kept], [v.entry for v in verdicts if not v.kept]


def apply_retention(config: ServerConfig, listed: list[Entry]) -> list[Path]:
    """Remove what ``retention_plan`` says goes, of ``listed`` (the private backups, newest first)."""
    _keep, remove = retention_plan(config, listed)
    removed = []
    for entry in remove:
        # rename first, so a half-deleted backup never looks like one
        doomed = entry.path.with_name(f".tmp-deleting-{entry.path.name}")
        os.rename(entry.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(entry.path)
    return removed


# --- finding one -----------------------------------------------------------------------------

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
    backups = private_backups(config)
    exact = [e.path for e in backups if e.path.name == spec]  # a name as `inv backups` shows it (…Z-1 too)
    if exact:
        return exact[0]
    key = spec.replace("-", "").replace(":", "")
    matches = [e.path for e in backups if e.path.name.startswith(key)]
    if not matches:
        raise CrdsOpsError(f"no backup matches {spec!r} in {config.backups.private_dir}; `inv backups` lists them")
    return matches[0]  # the newest of that date (private_backups is newest first); the plan names it


def newest_listing(listed: list[Entry]) -> dict[str, tuple[int, int, str]]:
    """{name: (size, mtime_ns, sha1)} from the newest reference listing among ``listed`` (newest first)."""
    for entry in listed:
        path = entry.path / (entry.manifest.listings.references if entry.manifest else "listings/references.tsv")
        if path.exists():
            return read_listing(path)
    return {}


def read_listing(path: Path) -> dict[str, tuple[int, int, str]]:
    """A references listing: ``name<TAB>size<TAB>mtime_ns<TAB>sha1`` lines, ``#`` comments."""
    out = {}
    with open(path) as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 4 and not line.startswith("#"):
                out[parts[0]] = (int(parts[1]), int(parts[2]), parts[3])
    return out

