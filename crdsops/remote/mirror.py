"""Make this (the installed) server a copy of a higher-tier server of the same observatory.

Runs on the destination, as ``mirror_server`` did, with the destination serving for as
long as possible. The database and the support directories (catalogs, the cache's config
and mappings) come from the source's shared latest backup, as ``inv backup`` publishes it
(``crdsops.data.backup``); the rest of the file cache (references, pickles) and the deliveries,
which a backup only lists, come from the source host by rsync over SSH.

1. refuse before touching anything: another observatory, the source being this server, a
   direction other than downward (``allow_upward`` plus confirmation for the rare case),
   a source whose identity read over SSH (its ``inv config``) or at its URL
   (``get_catalog_counts``) is not what its config says, a source latest backup that is
   missing, is another server's, or fails ``crdsops.data.manifest`` verification;
2. the backup (with ``fresh_backup``, first made anew on the source: its ``inv backup`` over
   SSH, its lock held there, its output streamed; without, the plan names a backup whose
   context or counts the live source no longer has): read in place when this server's ``backups.shared_dir`` holds the same
   manifest the source publishes, else fetched over SSH into ``<root>/mirror/backup`` and
   verified after the fetch;
3. while serving, side by side (``restore.stage_while_serving``): a safety backup of this
   server, the dump into a staging database, the support directories next to their
   targets, and the rsync of references, pickles and deliveries: exactly the files the
   backup's (verified) listings show new or changed here, compared by stat
   (``crdsops.remote.catalog_sync``; the source's cache is not walked), or one full rsync
   pass with ``full_sync`` or when the backup has no listing;
4. stopped only for the swap (``restore.swap_and_check``): swap in, start, health check
   against the backup's manifest (context and counts, answering as this server); on
   failure roll back and start the old state again;
5. once the new state is live: delete files the source no longer has (capped, and
   refused when the source looks empty).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import failpoints
from crdsops.config.layout import CACHE_TREES
from crdsops.config.loader import load_config
from crdsops.config.model import TIERS, ServerConfig
from crdsops.data import manifest as manifest_mod
from crdsops.data import restore
from crdsops.data.backup import support_dirs
from crdsops.data.manifest import Manifest
from crdsops.data.state import age_text
from crdsops.db.engines import engine_for
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir
from crdsops.remote import catalog_sync, rsync, ssh
from crdsops.runtime import health
from crdsops.steps import Plan

# what rsync brings from the source host; mappings and config come from the backup instead
SYNCED_CACHE = tuple(tree for tree in CACHE_TREES if tree not in ("mappings", "config"))


@dataclass(frozen=True)
class SourceFacts:
    """What the source host says of itself (its `inv config --json`): where its data is there."""

    observatory: str
    kind: str
    cache: str
    server_files: str
    shared_dir: str

    @classmethod
    def from_reported(cls, data: dict, where: str) -> SourceFacts:
        try:
            return cls(data["observatory"], data["kind"], data["cache"], data["server_files"],
                       data["backups"]["shared_dir"])
        except (KeyError, TypeError):
            raise CrdsOpsError(f"{where}: `inv config --json` lacks observatory, kind, cache, server_files or "
                               "backups.shared_dir; is crdsops there too old?") from None


@dataclass
class MirrorRun:
    """One mirror of ``src`` onto ``dest``: what the probes found, then what each step made."""

    dest: ServerConfig
    src: ServerConfig
    target: ssh.Target
    src_url: str
    upward: bool = False
    facts: SourceFacts | None = None  # the source's own account of itself, over SSH
    src_counts: dict = field(default_factory=dict)  # get_catalog_counts at its URL (live)
    backup_remote: str = ""  # the source's latest on the source host, symlink resolved
    backup_dir: Path | None = None  # that backup here (in place, or where it is fetched to)
    backup_in_place: bool = False
    manifest: Manifest | None = None  # verified when in place; else the remote copy, verified after the fetch
    staged: restore.Staged | None = None
    max_delete: int | None = None
    fresh_backup: bool = False  # run `inv backup` on the source first, then mirror that backup
    full_sync: bool = False  # one full rsync pass instead of the backup's listings
    bwlimit: str | None = None
    say: object = print

    @property
    def work(self) -> Path:
        return self.dest.layout.mirror_work

    @property
    def trees(self) -> list[str]:
        return [f"{sub}/{self.dest.observatory}" for sub in SYNCED_CACHE]

    @property
    def name(self) -> str:
        return f"mirror of {self.src.name} onto {self.dest.name}"

    def listings(self) -> tuple[dict[str, str], dict[str, str]]:
        """(cache tree -> listing, deliveries -> listing) named by the manifest; empty: a full pass."""
        if self.full_sync or self.manifest is None:
            return {}, {}
        m = self.manifest
        cache = dict(zip(self.trees, (m.listings.references, m.listings.pickles), strict=True))
        if not all(rel in m.files for rel in cache.values()):
            cache = {}
        deliveries = {"deliveries": m.listings.deliveries} if m.listings.deliveries in m.files else {}
        return cache, deliveries

    def plan(self) -> Plan:
        return _plan(self)

    def execute(self, max_delete: int | None = None) -> None:
        """Steps 2 to 5; the caller holds the destination's lock (``crdsops.runtime.lock``)."""
        self.max_delete = max_delete
        self.plan().run()


# --- 1. refusals and probes ----------------------------------------------------------

def source_config(dest: ServerConfig, obs: str, src_kind: str) -> ServerConfig:
    """The source's config, from the configs ``dest`` came from; refuse another observatory or itself."""
    if obs != dest.observatory:
        raise CrdsOpsError(
            f"this server is {dest.name}, of {dest.observatory}; it cannot mirror {obs}.{src_kind} "
            f"(run the mirror on a {obs} server)"
        )
    if src_kind == dest.kind:
        raise CrdsOpsError(f"the source {obs}.{src_kind} is this server; name a higher-tier server with --src")
    return load_config(obs, src_kind, dest.configs)


def check_direction(dest: ServerConfig, src: ServerConfig, allow_upward: bool) -> bool:
    """Refuse a mirror that is not downward; return whether it is upward (allowed by override)."""
    if src.tier_rank == dest.tier_rank:
        raise CrdsOpsError(f"{src.name} and {dest.name} are both {dest.tier} tier; a mirror copies from a "
                           f"higher tier ({' > '.join(reversed(TIERS))}) to a lower one")
    if src.tier_rank < dest.tier_rank:
        if not allow_upward:
            raise CrdsOpsError(
                f"refusing to mirror upward: {src.name} ({src.tier}) is below {dest.name} ({dest.tier}); "
                f"data flows {' > '.join(reversed(TIERS))}; nothing was changed"
            )
        return True
    return False


def probe(dest: ServerConfig, src: ServerConfig, src_url: str | None, src_host: str | None,
          upward: bool, say=print) -> MirrorRun:
    """Every read-only check, run for real (also under --dry-run); the direction is checked already."""
    target = ssh.target_for(src, host=src_host)
    run = MirrorRun(dest, src, target, src_url or src.url, upward, say=say)

    say(f"checking {src.name} over SSH at {target.where} ...")
    conn = ssh.connection(target)
    try:
        run.facts = source_facts(conn, target, src)
        cache_files = rsync.probe_tree(conn, f"{run.facts.cache}/mappings/{src.observatory}")
        if not cache_files:
            raise CrdsOpsError(
                f"the source's cache {run.facts.cache} has no mappings for {src.observatory} "
                "(empty or unmounted); refusing"
            )
        _locate_backup(run, conn)
    finally:
        conn.close()

    say(f"checking {src.name} at {run.src_url} ...")
    counts = health.rpc(run.src_url, "get_catalog_counts", timeout=15)
    if (counts.get("observatory"), counts.get("kind")) != (src.observatory, src.kind):
        raise CrdsOpsError(
            f"{run.src_url} answers as {counts.get('observatory')}.{counts.get('kind')}, not {src.name}; "
            "refusing (fix --src-url or the source's url in the config)"
        )
    run.src_counts = counts
    return run


def source_facts(conn, target: ssh.Target, src: ServerConfig) -> SourceFacts:
    """What the source host says of itself (its `inv config --json`), refused unless it is ``src``."""
    res = ssh.run_inv(conn, target.checkout, ["config", "--json"], hide=True)
    if res.exited != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise CrdsOpsError(f"{target.where} could not say which server it is (`inv config`: {last}); "
                           "is crdsops installed there (ssh.checkout)?")
    try:
        reported = json.loads(res.stdout)
    except ValueError:
        raise CrdsOpsError(f"{target.where}: `inv config --json` printed something that is not JSON") from None
    ident = (reported.get("observatory"), reported.get("kind"))
    if ident != (src.observatory, src.kind):
        raise CrdsOpsError(
            f"{target.where} runs {'.'.join(map(str, ident))}, not {src.name} as the config says; "
            "refusing (fix the source's host in the config, or --src-host)"
        )
    return SourceFacts.from_reported(reported, target.where)


def _locate_backup(run: MirrorRun, conn) -> None:
    """Find the source's latest on its host; use the copy here if it is the same backup."""
    shared = f"{run.facts.shared_dir}/{run.src.name}"
    missing = (f"{run.src.name} has no shared latest backup ({shared} on {conn.host}); "
               "run `inv backup` there first")
    # Pin the symlink's target: a backup published meanwhile must not change files under us.
    res = ssh.run(conn, ["readlink", "-e", shared])
    if res.exited != 0:
        raise CrdsOpsError(missing)
    run.backup_remote = res.stdout.strip()
    res = ssh.run(conn, ["cat", f"{run.backup_remote}/{manifest_mod.NAME}"])
    if res.exited != 0:
        raise CrdsOpsError(missing)
    remote_manifest = res.stdout
    try:
        data = json.loads(remote_manifest)
    except ValueError:
        raise CrdsOpsError(f"refusing {run.src.name}'s latest backup {shared}: its manifest is not JSON; "
                           "run `inv backup` there again") from None
    try:
        run.manifest = Manifest.from_dict(data, where=f"{shared}/{manifest_mod.NAME}")
    except CrdsOpsError as err:
        raise restore.BackupRefused(f"refusing {run.src.name}'s latest backup: {err}; nothing was changed") from None
    _check_source(run, run.manifest, shared)
    here = run.dest.backups.shared_dir / run.src.name
    try:
        same = (here / manifest_mod.NAME).read_text() == remote_manifest
    except OSError:
        same = False
    if same:
        run.backup_dir, run.backup_in_place = here.resolve(), True
        run.manifest = verified(run, run.backup_dir)
    else:
        run.backup_dir = run.work / "backup"


def _check_source(run: MirrorRun, manifest: Manifest, where) -> None:
    """Refuse a backup of another server than the source (``restore.check_backup`` checks the rest)."""
    server = manifest.server
    if (server.observatory, server.kind) != (run.src.observatory, run.src.kind):
        raise restore.BackupRefused(
            f"refusing backup {where}: it is a backup of {server.name}, not of {run.src.name}; nothing was changed")
    problems = restore.identity_problems(run.dest, manifest, cross_engine=not run.upward)
    if problems:
        raise restore.BackupRefused(f"refusing backup {where} for {run.dest.name}: {'; '.join(problems)} "
                                    "(a mirror needs the same database engine on both, or a MySQL source "
                                    "mirrored down onto SQLite); nothing was changed")


def verified(run: MirrorRun, backup: Path) -> Manifest:
    """The manifest of ``backup`` once it verifies and is the source's; else BackupRefused listing why."""
    manifest = restore.check_backup(run.dest, backup, cross_engine=not run.upward)
    _check_source(run, manifest, backup)
    return manifest


def staleness(run: MirrorRun, now: datetime.datetime | None = None) -> str:
    """One line when the source's live context or counts differ from its latest backup's; else ""."""
    counts, live = run.manifest.counts, run.src_counts
    differs = [f"{'context' if k == 'operational_context' else k} {counts.get(k)} -> {live.get(k)}"
               for k in restore.COUNT_KEYS if live.get(k) != counts.get(k)]
    if not differs:
        return ""
    made = run.manifest.created_at
    age = age_text((now or datetime.datetime.now(datetime.UTC)) - made) if made else "of unknown age"
    return (f"{run.src.name} has changed since its latest backup (made {age} ago): {', '.join(differs)}; "
            "this mirror copies the backup's state; pass --fresh-backup to back the source up first")


def fresh_backup(run: MirrorRun) -> Manifest:
    """Run ``inv backup`` on the source over SSH (its own lock held there, its output streamed); use that backup."""
    run.say(f"backing up {run.src.name} on {run.target.where} first (`inv backup` there) ...")
    conn = ssh.connection(run.target)
    try:
        res = ssh.run_inv(conn, run.target.checkout, ["backup"], hide=False)
        if res.exited != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise CrdsOpsError(f"`inv backup` on {run.target.where} failed (exit {res.exited}: {last}); "
                               "nothing here was changed")
        _locate_backup(run, conn)
    finally:
        conn.close()
    run.say(f"mirroring {run.src.name}'s new backup {run.backup_remote}, made {run.manifest.created}")
    return run.manifest


def _plan(run: MirrorRun) -> Plan:
    d, s = run.dest, run.src
    counts = run.manifest.counts
    stale = "" if run.fresh_backup else staleness(run)
    staged = engine_for(d).describe()
    if restore.converts(d, run.manifest):
        staged += (f", converted from {s.name}'s MySQL dump: Django's migrations make the schema, "
                   "then its rows are bulk-loaded")
    p = Plan(f"mirroring {s.name} onto {d.name}")
    p.add(f"mirror {s.name} ({s.tier}) -> {d.name} ({d.tier}){'  [UPWARD, by override]' if run.upward else ''}")
    p.add(f"source: {run.target.where} (checkout {run.target.checkout}), url {run.src_url}")
    p.add(f"its latest backup {run.backup_remote}, made {run.manifest.created}: context "
          f"{counts.get('operational_context')}, {counts.get('references')} references, "
          f"{counts.get('mappings')} mappings")
    if stale:
        p.add(f"NOTE: {stale}")
    if run.fresh_backup:
        p.add(f"first back up {s.name} there: `inv backup` on {run.target.where} over SSH (its lock held, its "
              "output streamed); then mirror that new backup, read in place or fetched and verified",
              lambda: fresh_backup(run), name="backing up the source")
        p.add("fetch the new backup over SSH unless this server's shared dir holds it; verify it",
              lambda: fetch_backup(run), name="fetching the backup")
    elif run.backup_in_place:
        p.add(f"read it in place: {run.backup_dir} (verified: ok)")
    else:
        p.add(f"fetch it over SSH to {run.backup_dir}, then verify it against its manifest",
              lambda: fetch_backup(run), name="fetching the backup")
    cache_listed, deliveries_listed = run.listings()
    how = []
    for label, listed in ((f"{', '.join(run.trees)} from {run.facts.cache}", cache_listed),
                          (f"deliveries from {run.facts.server_files}", deliveries_listed)):
        how.append(f"{label} (" + ("the files its backup's listing shows new or changed here, compared by "
                                   "stat, by rsync --files-from; the source's cache is not walked" if listed else
                                   "one full rsync pass" + ("" if run.full_sync else
                                                            ": its backup has no listing of them")) + ")")
    p.add(f"while {d.name} keeps serving: safety backup into {d.backups.private_dir}; load the dump into "
          f"staging ({staged}); unpack {', '.join(support_dirs(d))} next to their targets; rsync "
          + "; ".join(how) + (f"; bandwidth limit {run.bwlimit} KB/s" if run.bwlimit else ""),
          lambda: _stage(run), name="staging")
    p.add(f"stop {d.name}; swap in the database and the support directories; start it; health check at "
          f"{d.local_url}: answers as {d.name} with context {counts.get('operational_context')} and the "
          "backup's counts; else roll back and start the old state", lambda: _swap(run), name="swapping in")
    p.add("then delete files the source no longer has (capped; refused if the source looks empty)",
          lambda: _delete_extraneous(run), name="deleting what the source no longer has")
    return p


# --- 2. to 5. the whole mirror ----------------------------------------------------------

def fetch_backup(run: MirrorRun) -> Manifest:
    """The source's latest, here and verified (fetched over SSH unless read in place)."""
    if run.backup_in_place:
        return run.manifest
    ensure_dir(run.work)
    rsync.pull_dir(run.target, run.backup_remote, run.backup_dir, say=run.say, label="backup")
    manifest = verified(run, run.backup_dir)
    if manifest != run.manifest:  # the plan showed (and checked) another manifest than what arrived
        raise CrdsOpsError(f"{run.src.name}'s latest backup changed while it was fetched; run the mirror again")
    run.say(f"backup {run.backup_dir}: {len(manifest.files)} files verified against its manifest")
    return manifest


def _stage(run: MirrorRun) -> None:
    failpoints.hit("mirror.staging")
    dest, facts, say = run.dest, run.facts, run.say

    cache_listed, deliveries_listed = run.listings()

    def trusted(listed: dict[str, str]) -> dict[str, Path]:
        # checked again right before reading: only the verified backup's listing decides what to fetch
        return {tree: catalog_sync.trusted_listing(run.backup_dir, run.manifest, rel) for tree, rel in listed.items()}

    cache_listings, deliveries_listings = trusted(cache_listed), trusted(deliveries_listed)
    ensure_dir(run.work)

    def sync_cache():
        if cache_listings:
            return catalog_sync.pull_listed(run.target, facts.cache, dest.cache, cache_listings, run.work,
                                            say=say, bwlimit=run.bwlimit)
        return rsync.pull(run.target, facts.cache, run.trees, dest.cache, say=say, bwlimit=run.bwlimit)

    def sync_deliveries():
        if deliveries_listings:
            return catalog_sync.pull_listed(run.target, facts.server_files, dest.server_files,
                                            deliveries_listings, run.work, say=say, label="deliveries",
                                            bwlimit=run.bwlimit)
        return rsync.pull(run.target, facts.server_files, ["deliveries"], dest.server_files,
                          say=say, label="deliveries", bwlimit=run.bwlimit)

    say(f"while {dest.name} serves: safety backup, staging the database and support directories, "
        "syncing the cache ...")
    run.staged = restore.stage_while_serving(dest, run.backup_dir, run.manifest, say=say, what=run.name,
                                             extra={"cache sync": sync_cache, "deliveries sync": sync_deliveries})


def _swap(run: MirrorRun) -> None:
    restore.swap_and_check(run.dest, run.staged, run.manifest, say=run.say, what=run.name)
    counts = run.manifest.counts
    run.say(f"{run.dest.name} now serves {run.src.name}'s state of {run.manifest.created} "
            f"(context {counts.get('operational_context')})")


def _delete_extraneous(run: MirrorRun) -> None:
    failpoints.hit("mirror.deleting")
    # An unmounted source cache lists nothing; only a backup with no references allows that.
    must_have = (f"references/{run.dest.observatory}",) if run.manifest.counts.get("references") else ()
    results = run.staged.results
    results["cache sync"].delete_extraneous(max_delete=run.max_delete, must_have=must_have, say=run.say)
    results["deliveries sync"].delete_extraneous(max_delete=run.max_delete, say=run.say)
