"""Make this (the installed) server a copy of a higher-tier server of the same observatory.

Runs on the destination, as ``mirror_server`` did, with the destination serving for as
long as possible. The database and the support directories (catalogs, the cache's config
and mappings) come from the source's shared latest backup, as ``inv backup`` publishes it
(``crdsops.backup``); the rest of the file cache (references, pickles) and the deliveries,
which a backup only lists, come from the source host by rsync over SSH.

1. refuse before touching anything: another observatory, the source being this server, a
   direction other than downward (``allow_upward`` plus confirmation for the rare case),
   a source whose identity read over SSH (its ``inv config``) or at its URL
   (``get_catalog_counts``) is not what its config says, a source latest backup that is
   missing, is another server's, or fails ``crdsops.manifest`` verification;
2. the backup: read in place when this server's ``backups.shared_dir`` holds the same
   manifest the source publishes, else fetched over SSH into ``<root>/mirror/backup`` and
   verified after the fetch;
3. while serving, side by side (``restore.stage_while_serving``): a safety backup of this
   server, the dump into a staging database, the support directories next to their
   targets, and the rsync of references, pickles and deliveries (new and changed files);
4. stopped only for the swap (``restore.swap_and_check``): swap in, start, health check
   against the backup's manifest (context and counts, answering as this server); on
   failure roll back and start the old state again;
5. once the new state is live: delete files the source no longer has (capped, and
   refused when the source looks empty).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import cachesync, health, remote, restore
from crdsops import manifest as manifest_mod
from crdsops.backup import support_dirs
from crdsops.config import TIERS, ServerConfig, load_config
from crdsops.dbdump import engine_for
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir
from crdsops.serverenv import SUBDIRS_OF_CACHE

# what rsync brings from the source host; mappings and config come from the backup instead
SYNCED_CACHE = tuple(sub for sub in SUBDIRS_OF_CACHE if sub not in ("mappings", "config"))


@dataclass
class Plan:
    dest: ServerConfig
    src: ServerConfig
    target: remote.Target
    src_url: str
    upward: bool = False
    src_reported: dict = field(default_factory=dict)  # the source's own `inv config --json`
    src_counts: dict = field(default_factory=dict)  # get_catalog_counts at its URL (live)
    backup_remote: str = ""  # the source's latest on the source host, symlink resolved
    backup_dir: Path | None = None  # that backup here (in place, or where it is fetched to)
    backup_in_place: bool = False
    data: dict = field(default_factory=dict)  # its manifest (verified when in place; else the remote copy)
    steps: list[str] = field(default_factory=list)

    @property
    def work(self) -> Path:
        return self.dest.root / "mirror"

    @property
    def trees(self) -> list[str]:
        return [f"{sub}/{self.dest.observatory}" for sub in SYNCED_CACHE]

    @property
    def name(self) -> str:
        return f"mirror of {self.src.name} onto {self.dest.name}"


# --- 1. refusals and probes ----------------------------------------------------------

def check_direction(dest: ServerConfig, obs: str, src_kind: str, allow_upward: bool) -> bool:
    """Refuse a mirror that is not downward within one observatory; return whether it is upward."""
    if obs != dest.observatory:
        raise CrdsOpsError(
            f"this server is {dest.name}, of {dest.observatory}; it cannot mirror {obs}.{src_kind} "
            f"(run the mirror on a {obs} server)"
        )
    if src_kind == dest.kind:
        raise CrdsOpsError(f"the source {obs}.{src_kind} is this server; name a higher-tier server with --src")
    src = load_config(obs, src_kind)
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


def probe(dest: ServerConfig, src_kind: str, src_url: str | None, src_host: str | None,
          allow_upward: bool, say=print) -> Plan:
    """Every read-only check, run for real (also under --dry-run)."""
    upward = check_direction(dest, dest.observatory, src_kind, allow_upward)
    src = load_config(dest.observatory, src_kind)
    target = remote.target_for(src, host=src_host)
    plan = Plan(dest, src, target, src_url or src.url, upward)

    say(f"checking {src.name} over SSH at {target.where} ...")
    conn = remote.connection(target)
    try:
        res = remote.run_inv(conn, target.checkout, ["config", "--json"], hide=True)
        if res.exited != 0:
            last = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise CrdsOpsError(f"{target.where} could not say which server it is (`inv config`: {last}); "
                               "is crdsops installed there (ssh.checkout)?")
        try:
            plan.src_reported = json.loads(res.stdout)
        except ValueError:
            raise CrdsOpsError(f"{target.where}: `inv config --json` printed something that is not JSON") from None
        ident = (plan.src_reported.get("observatory"), plan.src_reported.get("kind"))
        if ident != (src.observatory, src.kind):
            raise CrdsOpsError(
                f"{target.where} runs {'.'.join(map(str, ident))}, not {src.name} as the config says; "
                "refusing (fix the source's host in the config, or --src-host)"
            )
        cache_files = cachesync.probe_tree(conn, f"{plan.src_reported['cache']}/mappings/{src.observatory}")
        if not cache_files:
            raise CrdsOpsError(
                f"the source's cache {plan.src_reported['cache']} has no mappings for {src.observatory} "
                "(empty or unmounted); refusing"
            )
        _locate_backup(plan, conn)
    finally:
        conn.close()

    say(f"checking {src.name} at {plan.src_url} ...")
    counts = health.rpc(plan.src_url, "get_catalog_counts", timeout=15)
    if (counts.get("observatory"), counts.get("kind")) != (src.observatory, src.kind):
        raise CrdsOpsError(
            f"{plan.src_url} answers as {counts.get('observatory')}.{counts.get('kind')}, not {src.name}; "
            "refusing (fix --src-url or the source's url in the config)"
        )
    plan.src_counts = counts
    plan.steps = _steps(plan)
    return plan


def _locate_backup(plan: Plan, conn) -> None:
    """Find the source's latest on its host; use the copy here if it is the same backup."""
    shared = f"{plan.src_reported['backups']['shared_dir']}/{plan.src.name}"
    missing = (f"{plan.src.name} has no shared latest backup ({shared} on {conn.host}); "
               "run `inv backup` there first")
    # Pin the symlink's target: a backup published meanwhile must not change files under us.
    res = remote.run(conn, ["readlink", "-e", shared])
    if res.exited != 0:
        raise CrdsOpsError(missing)
    plan.backup_remote = res.stdout.strip()
    res = remote.run(conn, ["cat", f"{plan.backup_remote}/{manifest_mod.NAME}"])
    if res.exited != 0:
        raise CrdsOpsError(missing)
    remote_manifest = res.stdout
    try:
        plan.data = json.loads(remote_manifest)
    except ValueError:
        raise CrdsOpsError(f"refusing {plan.src.name}'s latest backup {shared}: its manifest is not JSON; "
                           "run `inv backup` there again") from None
    _check_source(plan, plan.data, shared)
    here = plan.dest.backups.shared_dir / plan.src.name
    try:
        same = (here / manifest_mod.NAME).read_text() == remote_manifest
    except OSError:
        same = False
    if same:
        plan.backup_dir, plan.backup_in_place = here.resolve(), True
        plan.data = verified(plan, plan.backup_dir)
    else:
        plan.backup_dir = plan.work / "backup"


def _check_source(plan: Plan, data: dict, where) -> None:
    """Refuse a backup of another server than the source (``restore.check_backup`` checks the rest)."""
    server = data.get("server") or {}
    if (server.get("observatory"), server.get("kind")) != (plan.src.observatory, plan.src.kind):
        raise restore.BackupRefused(
            f"refusing backup {where}: it is a backup of {server.get('observatory')}.{server.get('kind')}, "
            f"not of {plan.src.name}; nothing was changed")
    problems = restore.identity_problems(plan.dest, data)
    if problems:
        raise restore.BackupRefused(f"refusing backup {where} for {plan.dest.name}: {'; '.join(problems)} "
                                    "(a mirror needs the same database engine on both); nothing was changed")


def verified(plan: Plan, backup: Path) -> dict:
    """The manifest of ``backup`` once it verifies and is the source's; else BackupRefused listing why."""
    data = restore.check_backup(plan.dest, backup)
    _check_source(plan, data, backup)
    return data


def _steps(p: Plan) -> list[str]:
    d, s = p.dest, p.src
    counts = (p.data.get("database") or {}).get("counts") or {}
    live = p.src_counts
    moved = "" if all(live.get(k) == counts.get(k) for k in restore.COUNT_KEYS) else \
        f" (the source has moved on since: now context {live.get('operational_context')}, " \
        f"{live.get('references')} references)"
    staged = engine_for(d).describe()
    return [
        f"mirror {s.name} ({s.tier}) -> {d.name} ({d.tier}){'  [UPWARD, by override]' if p.upward else ''}",
        f"source: {p.target.where} (checkout {p.target.checkout}), url {p.src_url}",
        f"its latest backup {p.backup_remote}, made {p.data.get('created')}: context "
        f"{counts.get('operational_context')}, {counts.get('references')} references, "
        f"{counts.get('mappings')} mappings{moved}",
        ("read it in place: " + str(p.backup_dir) + " (verified: ok)") if p.backup_in_place else
        f"fetch it over SSH to {p.backup_dir}, then verify it against its manifest",
        f"while {d.name} keeps serving: safety backup into {d.backups.private_dir}; load the dump into "
        f"staging ({staged}); unpack {', '.join(support_dirs(d))} next to their targets; rsync "
        f"{', '.join(p.trees)} from {p.src_reported.get('cache')} and deliveries from "
        f"{p.src_reported.get('server_files')} (new and changed files only)",
        f"stop {d.name}; swap in the database and the support directories; start it",
        f"health check at {d.local_url}: answers as {d.name} with context {counts.get('operational_context')} "
        "and the backup's counts; else roll back and start the old state",
        "then delete files the source no longer has (capped; refused if the source looks empty)",
    ]


# --- 2. to 5. the whole mirror ----------------------------------------------------------

def fetch_backup(plan: Plan, say=print) -> dict:
    """The source's latest, here and verified (fetched over SSH unless read in place)."""
    if plan.backup_in_place:
        return plan.data
    ensure_dir(plan.work)
    cachesync.pull_dir(plan.target, plan.backup_remote, plan.backup_dir, say=say, label="backup")
    data = verified(plan, plan.backup_dir)
    if data != plan.data:  # the plan showed (and checked) another manifest than what arrived
        raise CrdsOpsError(f"{plan.src.name}'s latest backup changed while it was fetched; run the mirror again")
    say(f"backup {plan.backup_dir}: {len(data['files'])} files verified against its manifest")
    return data


def execute(plan: Plan, max_delete: int | None = None, say=print) -> None:
    """Steps 2 to 5; the caller holds the destination's lock (``crdsops.serverlock``)."""
    dest, src = plan.dest, plan.src
    data = fetch_backup(plan, say=say)
    reported = plan.src_reported

    def sync_cache():
        return cachesync.pull(plan.target, reported["cache"], plan.trees, dest.cache, say=say)

    def sync_deliveries():
        return cachesync.pull(plan.target, reported["server_files"], ["deliveries"], dest.server_files,
                              say=say, label="deliveries")

    say(f"while {dest.name} serves: safety backup, staging the database and support directories, "
        "syncing the cache ...")
    staged = restore.stage_while_serving(dest, plan.backup_dir, data, say=say, what=plan.name,
                                         extra={"cache sync": sync_cache, "deliveries sync": sync_deliveries})
    restore.swap_and_check(dest, staged, data, say=say, what=plan.name)
    counts = data["database"].get("counts") or {}
    say(f"{dest.name} now serves {src.name}'s state of {data.get('created')} "
        f"(context {counts.get('operational_context')})")
    # An unmounted source cache lists nothing; only a backup with no references allows that.
    must_have = (f"references/{dest.observatory}",) if counts.get("references") else ()
    staged.results["cache sync"].delete_extraneous(max_delete=max_delete, must_have=must_have, say=say)
    staged.results["deliveries sync"].delete_extraneous(max_delete=max_delete, say=say)
