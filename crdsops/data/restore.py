"""``inv restore``: put a server back from a backup, keeping the old state until the new one is healthy.

1. probe: find the backup (``--from`` or the shared latest) and check it before touching
   anything: manifest, sha256 and size of every file, same observatory, same database engine
   (``backup_problems``, the one check ``inv mirror`` uses too, through ``check_backup``);
2. the plan: stage while serving, then swap and check, then, while the new state serves, the
   safety backup of the old state the swap kept and the old state dropped once it verifies
   (``crdsops.data.staging``), after a confirmation unless ``--yes``;
3. the closing check: the quick cache check, its listing made while the state was staged, its
   comparison with the catalog once the new state serves (``cachecheck.closing_check``).

``--to-time`` (MySQL with a binlog archive, ``crdsops.data.binlogs``): the newest verified
backup made before that time, staged as above, then the archived events of this server's
schema from the backup's coordinates up to that time replayed into the staging schema before
the swap; the health check expects the counts of the replayed state.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from crdsops.config.model import ServerConfig
from crdsops.data import inventory, staging
from crdsops.data import manifest as manifest_mod
from crdsops.data.backup import support_dirs
from crdsops.data.manifest import Manifest
from crdsops.db.engines import engine_for
from crdsops.errors import CrdsOpsError
from crdsops.runtime import service
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import BackupRef, RestoreOutcome
from crdsops.steps import Plan

log = logging.getLogger(__name__)


class BackupRefused(CrdsOpsError):
    """The backup failed verification or belongs elsewhere; nothing was touched."""


def identity_problems(config: ServerConfig, manifest: Manifest, cross_engine: bool = False) -> list[str]:
    """Why ``manifest``'s backup does not fit ``config``; ``cross_engine``: a MySQL dump onto SQLite is fine."""
    server = manifest.server
    problems = []
    if server.observatory != config.observatory:
        problems.append(f"it is a backup of {server.observatory!r} ({server.name}), not of {config.observatory}")
    converts = staging.converts(config, manifest)
    if manifest.database.engine != config.database.engine and not (cross_engine and converts):
        problems.append(f"its database is {manifest.database.engine}, this server's is {config.database.engine}")
    return problems


def backup_problems(config: ServerConfig, backup: Path, cross_engine: bool = False) -> tuple[Manifest | None, list]:
    """(its manifest, what is wrong with ``backup`` for ``config``): verification first, then identity."""
    problems = manifest_mod.verify(backup)
    if problems:
        return None, problems
    manifest = Manifest.load(backup)
    return manifest, identity_problems(config, manifest, cross_engine)


def check_backup(config: ServerConfig, backup: Path, cross_engine: bool = False) -> Manifest:
    """The manifest of ``backup`` if it verifies and fits ``config``; else raise BackupRefused."""
    manifest, problems = backup_problems(config, backup, cross_engine)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        whose = f" for {config.name}" if manifest is not None else ""
        raise BackupRefused(f"refusing backup {backup}{whose}: {'; '.join(problems[:3])}{more}; nothing was changed")
    return manifest


@dataclass(frozen=True)
class RestoreFacts:
    """What the probe found: the backup (as named and where it really is), its manifest, why it does not fit."""

    backup: Path
    manifest: Manifest | None
    problems: tuple[str, ...]
    running: bool
    replay: object = None  # binlogs.Replay: a restore to a time replays these events on top

    @property
    def ref(self) -> BackupRef:
        m = self.manifest
        return BackupRef(self.backup.resolve().name, self.backup.resolve(), m.created if m else None,
                         m.server.name if m else "")


class Restore(Operation):
    """``inv restore [--from DATE|PATH]``."""

    task = "restore"
    notifying = True

    def __init__(self, config: ServerConfig, source: str | None = None, to_time: str | None = None,
                 identity: Path | None = None):
        super().__init__(config)
        self.source = source
        self.to_time = to_time
        self.identity = identity  # the age key for ``--from offsite:NAME`` (crdsops.data.offsite)
        self.facts: RestoreFacts | None = None
        self.expected: Manifest | None = None  # what the health check compares with (replayed: the staged counts)
        self.staged: staging.Staged | None = None
        self.held: float | None = None

    def probe(self) -> RestoreFacts:
        from crdsops.data import offsite  # an off-site copy is fetched and decrypted, then restored like any

        when = parse_to_time(self.to_time) if self.to_time else None
        if self.to_time:
            from crdsops.data import binlogs

            why = binlogs.unavailable(self.config)
            if why:
                raise CrdsOpsError(f"{self.config.name} has no point-in-time restore: {why}")
        if self.to_time and not self.source:
            backup = before(self.config, when)
        elif offsite.names_copy(self.source):
            backup = offsite.fetch(self.config, self.source, self.identity)
        else:
            backup = inventory.find(self.config, self.source)
        self.facts = RestoreFacts(backup, None, (), False)  # named already, should the checks fail
        manifest, problems = backup_problems(self.config, backup)
        replay = _replay_for(self.config, manifest, when, count=self.dry_run) if self.to_time and manifest else None
        self.facts = RestoreFacts(backup, manifest, tuple(problems), service.running_pid(self.config) is not None,
                                  replay)
        self.expected = manifest
        return self.facts

    def plan(self, facts: RestoreFacts) -> Plan:
        config, backup = self.config, facts.backup
        p = Plan(f"restoring {config.name}", problems=list(facts.problems), refusal=f"refusing backup {backup}",
                 confirm=f"replace {config.name}'s database and support directories with this backup?")
        described = f" ({facts.manifest.describe()})" if facts.manifest else ""
        p.add(f"restore {config.name} from {backup.resolve()}{described}")
        p.add("verify its manifest, sha256 and size of every file, observatory and engine: "
              + ("ok" if not facts.problems else "FAILED: " + "; ".join(facts.problems[:3])))
        p.add(f"while serving: load the dump into staging ({engine_for(config).describe()}), unpack "
              + ", ".join(support_dirs(config)) + " next to their targets", self._stage, name="staging")
        if facts.replay is not None:
            p.add(f"then replay into the staging schema: {facts.replay.describe()} (binlog archive "
                  f"{facts.replay.files[0].parent})")
        equal = "the replayed state's" if facts.replay is not None else "the backup's"
        p.add(staging.swap_text(config, facts.running, f"get_server_info answers and the catalog counts equal {equal}"),
              self._swap, name="swapping in")
        return p

    def run(self, plan: Plan) -> RestoreOutcome | None:
        with staging.discarded_unless_swapped(self.config, swapped=lambda: self.held is not None):
            return super().run(plan)

    def _stage(self) -> None:
        backup, m = self.facts.backup, self.facts.manifest
        log.info(f"backup {backup} verified ({len(m.files)} files): {m.server.name}, made {m.made}")
        log.info("while serving: staging the database and the support directories ...")
        replay = self._replay if self.facts.replay is not None else None
        self.staged = staging.stage_while_serving(self.config, backup, m, check_cache=True, replay=replay)

    def _replay(self, schema: str) -> None:
        from crdsops.data import binlogs
        from crdsops.db import catalog

        binlogs.replay(self.config, self.facts.replay, schema)
        counts = catalog.counts(self.config, database=schema)
        m = self.facts.manifest
        self.expected = dataclasses.replace(m, database=dataclasses.replace(m.database, counts=counts))

    def _swap(self) -> None:
        config, backup, m = self.config, self.facts.backup, self.expected
        self.held = staging.swap_and_check(config, self.staged, m, what=f"restore of {config.name} from {backup}")
        log.info(f"restored {config.name} from {backup}" + (f" and {self.facts.replay.describe()}"
                 if self.facts.replay is not None else "") + f": {m.counts.describe()}; healthy")

    def outcome(self) -> RestoreOutcome | None:
        if self.facts is None:
            return None
        return RestoreOutcome(self.facts.ref, self.staged.safety if self.staged else None, self.held)

    def recheck(self, outcome) -> None:
        from crdsops.data.cachecheck import closing_check

        closing_check(self.config, "restore", listed=self.staged.listed)


def parse_to_time(text: str) -> datetime.datetime | None:
    """``latest`` (None: every archived event) or ``YYYY-MM-DD HH:MM:SS``, in UTC."""
    if text.strip().lower() == "latest":
        return None
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return datetime.datetime.strptime(text.strip(), fmt).replace(tzinfo=datetime.UTC)
        except ValueError:
            continue
    raise CrdsOpsError(f"--to-time {text!r}: say 'YYYY-MM-DD HH:MM:SS' (UTC) or latest")


def before(config: ServerConfig, when: datetime.datetime | None) -> Path:
    """The newest verified private backup with binlog coordinates made before ``when`` (None: the newest)."""
    entries = [e for e in inventory.private_backups(config) if e.state == "ok" and e.manifest is not None
               and e.manifest.purpose == "backup" and e.manifest.database.binlog is not None]
    fit = [e for e in entries if when is None or e.created < when]
    if not fit:
        oldest = min((e.created for e in entries), default=None)
        have = f"the oldest verified backup with binlog coordinates was made {oldest:%Y-%m-%d %H:%M:%S} UTC" \
            if oldest else "no verified backup has binlog coordinates (made with the binary log on)"
        raise CrdsOpsError(f"no backup of {config.name} was made before {when:%Y-%m-%d %H:%M:%S} UTC: {have}"
                           if when else f"no backup of {config.name} to replay from: {have}")
    return fit[0].path


def _replay_for(config: ServerConfig, manifest: Manifest, when: datetime.datetime | None, count: bool):
    from crdsops.data import binlogs

    start = manifest.database.binlog
    if start is None:
        raise CrdsOpsError("that backup has no binlog coordinates (made with the binary log off); "
                           "give --to-time without --from, or another backup")
    if when is not None and manifest.created >= when:
        raise CrdsOpsError(f"that backup was made {manifest.made}, after --to-time")
    swapped = _swapped_between(config, manifest.created, when)
    if swapped:
        raise CrdsOpsError(f"{swapped} replaced the database between the backup ({manifest.made}) and "
                           f"{'--to-time' if when else 'now'}: its binlog events cannot be replayed across that; "
                           "restore to a time before it, or from a backup made after it (`inv backup` after a restore)")
    binlogs.seal(config)
    return binlogs.plan_replay(config, start, when, count=count)


def _swapped_between(config: ServerConfig, start: datetime.datetime, end: datetime.datetime | None) -> str:
    """The restore or mirror that swapped this server's database in (start, end], as a few words ("": none).

    Its staging schema was loaded under another name and renamed in, so the binlog events of the
    live schema alone do not describe the state after it."""
    from crdsops.runtime import audit

    for entry in audit.history(config.layout, limit=None):
        if entry.task not in ("restore", "mirror") or not entry.ok or entry.when is None:
            continue
        # the server's lock serializes backups and swaps (it refuses, never waits): one that began
        # at or after the backup ran after it
        if _at_or_after(entry.when, start) and (end is None or entry.when <= end):
            return f"the {entry.task} of {entry.when:%Y-%m-%d %H:%M:%S} UTC"
    return ""


def _at_or_after(swap: datetime.datetime, backup: datetime.datetime) -> bool:
    """Whether the swap began at or after the backup, as exactly as both times are known.

    Both are kept to the millisecond; a time kept to the second (an older audit line or manifest)
    is compared by its second, so a swap in the backup's second counts as after it (refused)."""
    if swap.microsecond and backup.microsecond:
        return swap >= backup
    return swap.replace(microsecond=0) >= backup.replace(microsecond=0)
