"""``inv mirror``: make this (the installed) server a copy of a higher-tier server of the same observatory.

Runs on the destination, as ``mirror_server`` did, with the destination serving for as
long as possible. The database and the support directories (catalogs, the cache's config
and mappings) come from the source's shared latest backup, as ``inv backup`` publishes it
(``crdsops.data.backup``); the rest of the file cache (references, pickles) and the deliveries,
which a backup only lists, come from the source host by rsync over SSH.

1. check (no probe, no lock): another observatory, the source being this server, a direction
   other than downward (``allow_upward`` plus an interactive yes for the rare case) are refused
   (``crdsops.remote.source``);
2. probe (read-only, also under --dry-run): the source's identity over SSH (its ``inv config``)
   and at its URL (``get_catalog_counts``), its cache not empty, its latest backup (missing, of
   another server, or failing ``crdsops.data.manifest`` verification: refused); the backup is
   read in place when this server's ``backups.shared_dir`` holds the same manifest the source
   publishes, else fetched over SSH into ``<root>/mirror/backup`` and verified after the fetch.
   The plan names a backup whose context or counts the live source no longer has;
   ``fresh_backup`` first runs ``inv backup`` there (its lock held there, its output streamed);
3. while serving, side by side (``staging.stage_while_serving``): the dump into a staging database, the support directories next to their targets,
   and the rsync of references, pickles and deliveries: exactly the files the backup's
   (verified) listings show new or changed here, compared by stat
   (``crdsops.remote.catalog_sync``; the source's cache is not walked), or one full rsync
   pass with ``full_sync`` or when the backup has no listing;
4. the swap under the running server, its requests held for that moment
   (``staging.swap_and_check``), then the health check against the backup's manifest
   (context and counts, answering as this server); on failure the reverse swap; once healthy,
   the safety backup of the old state the swap kept, and the old state dropped once it
   verifies (``staging.keep_safely``: kept, with a warning, if that backup fails);
5. once the new state is live: delete files the source no longer has (capped, and
   refused when the source looks empty); then the quick cache check.

One SSH connection to the source carries all of it: the probes, ``inv backup`` there, the
backup fetch and every rsync ride an OpenSSH ControlMaster that the probes open and the
mirror closes at its end, whatever happens (``crdsops.remote.sshmux``, ``Mirror.resources``).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from crdsops import failpoints
from crdsops.config.layout import CACHE_TREES
from crdsops.config.model import ServerConfig
from crdsops.data import manifest as manifest_mod
from crdsops.data import restore, staging
from crdsops.data.backup import support_dirs
from crdsops.data.manifest import Manifest
from crdsops.db.catalog import CatalogCounts
from crdsops.db.engines import engine_for
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir
from crdsops.remote import catalog_sync, rsync, source, ssh, sshmux
from crdsops.remote.source import SourceFacts
from crdsops.runtime import health, service
from crdsops.runtime.lifecycle import NotConfirmed, Operation, confirm
from crdsops.runtime.outcomes import BackupRef, MirrorOutcome
from crdsops.steps import Plan
from crdsops.timefmt import age_text

log = logging.getLogger(__name__)

# what rsync brings from the source host; mappings and config come from the backup instead
SYNCED_CACHE = tuple(tree for tree in CACHE_TREES if tree not in ("mappings", "config"))


@dataclass(frozen=True)
class MirrorOptions:
    """Every flag of ``inv mirror``, known before the probes."""

    obs: str
    src: str
    src_url: str | None = None
    src_host: str | None = None
    allow_upward: bool = False
    max_delete: int | None = None
    fresh_backup: bool = False  # run `inv backup` on the source first, then mirror that backup
    full_sync: bool = False  # one full rsync pass instead of the backup's listings
    bwlimit: str | None = None


@dataclass(frozen=True)
class SourceBackup:
    """The source's latest backup: where it is there, its manifest, where it is read here."""

    remote: str  # on the source host, the shared latest's symlink resolved
    manifest: Manifest  # verified when in place; else the remote copy, verified again after the fetch
    here: Path
    in_place: bool

    def ref(self, src: ServerConfig) -> BackupRef:
        return BackupRef(Path(self.remote).name, Path(self.remote), self.manifest.created, src.name)


@dataclass(frozen=True)
class MirrorFacts:
    """What the probes found about the source."""

    target: ssh.Target
    src_url: str
    reported: SourceFacts  # the source's own account of itself, over SSH
    live: CatalogCounts  # get_catalog_counts at its URL
    backup: SourceBackup
    running: bool = True  # whether this server serves now (its requests are held for the swap)


class Mirror(Operation):
    """``inv mirror --obs OBS --src KIND``: see the module docstring."""

    task = "mirror"
    notifying = True

    def __init__(self, dest: ServerConfig, options: MirrorOptions):
        super().__init__(dest)
        self.options = options
        self.src: ServerConfig | None = None
        self.upward = False
        self.facts: MirrorFacts | None = None
        self.backup: SourceBackup | None = None  # the one mirrored (a fresh backup replaces the probed one)
        self.syncs: dict[str, catalog_sync.ListedSync | rsync.SyncResult] = {}
        self.staged: staging.Staged | None = None
        self.held: float | None = None
        self.deleted: int | None = None
        self.master: sshmux.Master | None = None  # the one SSH connection to the source (resources())

    @property
    def name(self) -> str:
        return f"mirror of {self.src.name} onto {self.config.name}"

    def check(self) -> None:
        o = self.options
        if not o.obs or not o.src:
            raise CrdsOpsError("give --obs and --src (e.g. `inv mirror --obs hst --src test`)")
        self.src = source.source_config(self.config, o.obs, o.src)
        self.upward = source.check_direction(self.config, self.src, o.allow_upward)  # before any connection

    @contextlib.contextmanager
    def resources(self):
        """The mirror's one SSH connection to the source: opened by the probes, closed here whatever happens."""
        self.master = sshmux.Master(ssh.target_for(self.src, host=self.options.src_host))
        try:
            yield
        finally:
            self.master.close()

    def probe(self) -> MirrorFacts:
        self.facts = probe(self.config, self.src, self.options, self.upward, self.master)
        self.backup = self.facts.backup
        return self.facts

    def plan(self, facts: MirrorFacts) -> Plan:
        return MirrorPlanner(self, facts).plan()

    def confirm(self, plan: Plan, yes: bool) -> None:
        if self.upward and not confirm(f"UPWARD mirror {self.src.name} -> {self.config.name}: are you sure?", False):
            raise NotConfirmed("upward mirror not confirmed (it needs an interactive yes); nothing changed")
        if not confirm(plan.confirm, yes):
            raise NotConfirmed("not confirmed (use --yes to skip the question); nothing changed")

    def run(self, plan: Plan) -> MirrorOutcome | None:
        with staging.discarded_unless_swapped(self.config, swapped=lambda: self.held is not None):
            return super().run(plan)

    def outcome(self) -> MirrorOutcome | None:
        if self.src is None:
            return None
        f = self.facts
        return MirrorOutcome(self.src.name, f.target.where if f else "", f.src_url if f else "",
                             self.backup.ref(self.src) if self.backup else None,
                             self.staged.safety if self.staged else None, self.deleted, self.held)

    def recheck(self, outcome) -> None:
        from crdsops.data.cachecheck import closing_check

        log.info(f"mirror {self.src.name} -> {self.config.name}: done")
        closing_check(self.config, "mirror")

    # --- the steps ------------------------------------------------------------------------

    def fresh_backup(self) -> None:
        """Run ``inv backup`` on the source over SSH (its own lock held there, its output streamed); use that backup."""
        target = self.facts.target
        log.info(f"backing up {self.src.name} on {target.where} first (`inv backup` there) ...")
        res = ssh.run_inv(self.master, target.checkout, ["backup"], hide=False)
        if res.exited != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise CrdsOpsError(f"`inv backup` on {target.where} failed (exit {res.exited}: {last}); "
                               "nothing here was changed")
        self.backup = locate_backup(self.config, self.src, self.master, self.facts.reported, self.upward)
        log.info(f"mirroring {self.src.name}'s new backup {self.backup.remote}, made {self.backup.manifest.made}")

    def fetch_backup(self) -> None:
        """The source's latest, here and verified (fetched over SSH unless read in place)."""
        backup = self.backup
        if backup.in_place:
            return
        ensure_dir(self.config.layout.mirror_work)
        rsync.pull_dir(self.facts.target, backup.remote, backup.here, label="backup")
        manifest = verified(self.config, self.src, backup.here, self.upward)
        if manifest != backup.manifest:  # the plan showed (and checked) another manifest than what arrived
            raise CrdsOpsError(f"{self.src.name}'s latest backup changed while it was fetched; run the mirror again")
        log.info(f"backup {backup.here}: {len(manifest.files)} files verified against its manifest")

    def stage(self) -> None:
        failpoints.hit("mirror.staging")
        syncs = Syncs(self)
        ensure_dir(self.config.layout.mirror_work)
        log.info(f"while {self.config.name} serves: staging the database and support directories, "
                 "syncing the cache ...")
        self.staged = staging.stage_while_serving(self.config, self.backup.here, self.backup.manifest,
                                                  what=self.name, alongside=syncs.jobs())

    def swap(self) -> None:
        m = self.backup.manifest
        self.held = staging.swap_and_check(self.config, self.staged, m, what=self.name)
        log.info(f"{self.config.name} now serves {self.src.name}'s state of {m.made} "
                 f"(context {m.counts.operational_context})")

    def delete_extraneous(self) -> None:
        failpoints.hit("mirror.deleting")
        # An unmounted source cache lists nothing; only a backup with no references allows that.
        must_have = (f"references/{self.config.observatory}",) if self.backup.manifest.counts.references else ()
        max_delete = self.options.max_delete
        gone = self.syncs["cache"].delete_extraneous(max_delete=max_delete, must_have=must_have)
        gone += self.syncs["deliveries"].delete_extraneous(max_delete=max_delete)
        self.deleted = len(gone)


class Syncs:
    """The two rsync jobs a mirror runs beside the staging: the cache trees and the deliveries."""

    def __init__(self, mirror: Mirror):
        self.mirror = mirror
        self.cache, self.deliveries = listings(mirror.backup.manifest, mirror.config, mirror.options.full_sync)
        here = mirror.backup.here
        # checked again right before reading: only the verified backup's listing decides what to fetch
        self.cache = {tree: catalog_sync.trusted_listing(here, mirror.backup.manifest, rel)
                      for tree, rel in self.cache.items()}
        self.deliveries = {tree: catalog_sync.trusted_listing(here, mirror.backup.manifest, rel)
                           for tree, rel in self.deliveries.items()}

    def jobs(self) -> dict:
        return {"cache sync": lambda: self._sync("cache", self.mirror.facts.reported.cache, self.mirror.config.cache,
                                                 self.cache, trees(self.mirror.config)),
                "deliveries sync": lambda: self._sync("deliveries", self.mirror.facts.reported.server_files,
                                                      self.mirror.config.server_files, self.deliveries,
                                                      ["deliveries"])}

    def _sync(self, label: str, remote_root: str, local_root: Path, listed: dict, full_trees: list[str]):
        m = self.mirror
        spec = rsync.Pull(m.facts.target, remote_root, local_root, label, m.options.bwlimit)
        if listed:
            result = catalog_sync.pull_listed(spec, listed, m.config.layout.mirror_work)
        else:
            result = rsync.pull(spec, full_trees)
        m.syncs[label] = result
        return result


def trees(dest: ServerConfig) -> list[str]:
    return [f"{sub}/{dest.observatory}" for sub in SYNCED_CACHE]


def listings(manifest: Manifest, dest: ServerConfig, full_sync: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(cache tree -> listing, deliveries -> listing) named by the manifest; empty: a full pass."""
    if full_sync:
        return {}, {}
    cache = dict(zip(trees(dest), (manifest.listings.references, manifest.listings.pickles), strict=True))
    if not all(rel in manifest.files for rel in cache.values()):
        cache = {}
    deliveries = ({"deliveries": manifest.listings.deliveries} if manifest.listings.deliveries in manifest.files
                  else {})
    return cache, deliveries


# --- the probes -----------------------------------------------------------------------------

def probe(dest: ServerConfig, src: ServerConfig, options: MirrorOptions, upward: bool,
          master: sshmux.Master) -> MirrorFacts:
    """Every read-only check, run for real (also under --dry-run); the direction is checked already.

    The SSH probes open ``master``, the mirror's one connection; the facts' target rides it."""
    target = master.plain
    src_url = options.src_url or src.url
    log.info(f"checking {src.name} over SSH at {target.where} ...")
    master.open()
    reported = source.source_facts(master, target, src)
    cache_files = rsync.probe_tree(master, f"{reported.cache}/mappings/{src.observatory}")
    if not cache_files:
        raise CrdsOpsError(
            f"the source's cache {reported.cache} has no mappings for {src.observatory} "
            "(empty or unmounted); refusing"
        )
    backup = locate_backup(dest, src, master, reported, upward)
    log.info(f"checking {src.name} at {src_url} ...")
    live = health.catalog_counts(src_url, timeout=15)
    if (live.observatory, live.kind) != (src.observatory, src.kind):
        raise CrdsOpsError(f"{src_url} answers as {live.server}, not {src.name}; "
                           "refusing (fix --src-url or the source's url in the config)")
    return MirrorFacts(master.target, src_url, reported, live, backup, service.running_pid(dest) is not None)


def locate_backup(dest: ServerConfig, src: ServerConfig, conn, reported: SourceFacts, upward: bool) -> SourceBackup:
    """Find the source's latest on its host; use the copy here if it is the same backup."""
    shared = f"{reported.shared_dir}/{src.name}"
    missing = f"{src.name} has no shared latest backup ({shared} on {conn.host}); run `inv backup` there first"
    # Pin the symlink's target: a backup published meanwhile must not change files under us.
    res = ssh.run(conn, ["readlink", "-e", shared])
    if res.exited != 0:
        raise CrdsOpsError(missing)
    remote = res.stdout.strip()
    res = ssh.run(conn, ["cat", f"{remote}/{manifest_mod.NAME}"])
    if res.exited != 0:
        raise CrdsOpsError(missing)
    manifest = _remote_manifest(res.stdout, src, shared)
    check_source(dest, src, manifest, shared, upward)
    here = dest.backups.shared_dir / src.name
    try:
        same = (here / manifest_mod.NAME).read_text() == res.stdout
    except OSError:
        same = False
    if same:
        return SourceBackup(remote, verified(dest, src, here.resolve(), upward), here.resolve(), True)
    return SourceBackup(remote, manifest, dest.layout.mirror_work / "backup", False)


def _remote_manifest(text: str, src: ServerConfig, shared: str) -> Manifest:
    try:
        data = json.loads(text)
    except ValueError:
        raise CrdsOpsError(f"refusing {src.name}'s latest backup {shared}: its manifest is not JSON; "
                           "run `inv backup` there again") from None
    try:
        return Manifest.from_dict(data, where=f"{shared}/{manifest_mod.NAME}")
    except CrdsOpsError as err:
        raise restore.BackupRefused(f"refusing {src.name}'s latest backup: {err}; nothing was changed") from None


def check_source(dest: ServerConfig, src: ServerConfig, manifest: Manifest, where, upward: bool) -> None:
    """Refuse a backup of another server than the source (``restore.check_backup`` checks the rest)."""
    server = manifest.server
    if (server.observatory, server.kind) != (src.observatory, src.kind):
        raise restore.BackupRefused(
            f"refusing backup {where}: it is a backup of {server.name}, not of {src.name}; nothing was changed")
    problems = restore.identity_problems(dest, manifest, cross_engine=not upward)
    if problems:
        raise restore.BackupRefused(f"refusing backup {where} for {dest.name}: {'; '.join(problems)} "
                                    "(a mirror needs the same database engine on both, or a MySQL source "
                                    "mirrored down onto SQLite); nothing was changed")


def verified(dest: ServerConfig, src: ServerConfig, backup: Path, upward: bool) -> Manifest:
    """The manifest of ``backup`` once it verifies and is the source's; else BackupRefused listing why."""
    manifest = restore.check_backup(dest, backup, cross_engine=not upward)
    check_source(dest, src, manifest, backup, upward)
    return manifest


def staleness(src: ServerConfig, manifest: Manifest, live: CatalogCounts, now: datetime.datetime | None = None) -> str:
    """One line when the source's live context or counts differ from its latest backup's; else ""."""
    differs = [f"{CatalogCounts.label(name)} {theirs} -> {mine}"
               for name, mine, theirs in live.differences(manifest.counts)]
    if not differs:
        return ""
    age = age_text((now or datetime.datetime.now(datetime.UTC)) - manifest.created)
    return (f"{src.name} has changed since its latest backup (made {age} ago): {', '.join(differs)}; "
            "this mirror copies the backup's state; pass --fresh-backup to back the source up first")


# --- the plan -------------------------------------------------------------------------------

class MirrorPlanner:
    """The steps of one mirror, written from its facts."""

    def __init__(self, mirror: Mirror, facts: MirrorFacts):
        self.m, self.facts = mirror, facts

    def plan(self) -> Plan:
        m, f = self.m, self.facts
        d, s = m.config, m.src
        p = Plan(f"mirroring {s.name} onto {d.name}",
                 confirm=f"replace {d.name}'s database, support files and cache with {s.name}'s?")
        p.add(f"mirror {s.name} ({s.tier}) -> {d.name} ({d.tier}){'  [UPWARD, by override]' if m.upward else ''}")
        p.add(f"source: {f.target.where} (checkout {f.target.checkout}), url {f.src_url}")
        counts = f.backup.manifest.counts
        p.add(f"its latest backup {f.backup.remote}, made {f.backup.manifest.made}: context "
              f"{counts.operational_context}, {counts.references} references, {counts.mappings} mappings")
        stale = "" if m.options.fresh_backup else staleness(s, f.backup.manifest, f.live)
        if stale:
            p.add(f"NOTE: {stale}")
        self._backup_steps(p)
        p.add(f"while {d.name} keeps serving: load the dump into "
              f"staging ({self._staged_text()}); unpack {', '.join(support_dirs(d))} next to their targets; rsync "
              + "; ".join(self._sync_texts()) + (f"; bandwidth limit {m.options.bwlimit} KB/s"
                                                 if m.options.bwlimit else ""), m.stage, name="staging")
        p.add(staging.swap_text(d, f.running, f"answers as {d.name} with context {counts.operational_context} "
                                "and the backup's counts"), m.swap, name="swapping in")
        p.add("then delete files the source no longer has (capped; refused if the source looks empty)",
              m.delete_extraneous, name="deleting what the source no longer has")
        return p

    def _backup_steps(self, p: Plan) -> None:
        m, f = self.m, self.facts
        if m.options.fresh_backup:
            p.add(f"first back up {m.src.name} there: `inv backup` on {f.target.where} over SSH (its lock held, its "
                  "output streamed); then mirror that new backup, read in place or fetched and verified",
                  m.fresh_backup, name="backing up the source")
            p.add("fetch the new backup over SSH unless this server's shared dir holds it; verify it",
                  m.fetch_backup, name="fetching the backup")
        elif f.backup.in_place:
            p.add(f"read it in place: {f.backup.here} (verified: ok)")
        else:
            p.add(f"fetch it over SSH to {f.backup.here}, then verify it against its manifest",
                  m.fetch_backup, name="fetching the backup")

    def _staged_text(self) -> str:
        d, s, manifest = self.m.config, self.m.src, self.facts.backup.manifest
        text = engine_for(d).describe()
        if staging.converts(d, manifest):
            text += (f", converted from {s.name}'s MySQL dump: Django's migrations make the schema, "
                     "then its rows are bulk-loaded")
        return text

    def _sync_texts(self) -> list[str]:
        m, f = self.m, self.facts
        cache_listed, deliveries_listed = listings(f.backup.manifest, m.config, m.options.full_sync)
        how = []
        for label, listed in ((f"{', '.join(trees(m.config))} from {f.reported.cache}", cache_listed),
                              (f"deliveries from {f.reported.server_files}", deliveries_listed)):
            if listed:
                how.append(f"{label} (the files its backup's listing shows new or changed here, compared by "
                           "stat, by rsync --files-from; the source's cache is not walked)")
            else:
                why = "" if m.options.full_sync else ": its backup has no listing of them"
                how.append(f"{label} (one full rsync pass{why})")
        return how
