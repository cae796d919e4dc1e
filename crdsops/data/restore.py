"""``inv restore``: put a server back from a backup, keeping the old state until the new one is healthy.

1. probe: find the backup (``--from`` or the shared latest) and check it before touching
   anything: manifest, sha256 and size of every file, same observatory, same database engine
   (``backup_problems``, the one check ``inv mirror`` uses too, through ``check_backup``);
2. the plan: stage while serving, then swap and check (``crdsops.data.staging``), after a
   confirmation unless ``--yes``;
3. the closing check: the quick cache check of the staged state, run while it was staged,
   reported and recorded once the swap is healthy (``cachecheck.closing_check``).
"""

from __future__ import annotations

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

    @property
    def ref(self) -> BackupRef:
        m = self.manifest
        return BackupRef(self.backup.resolve().name, self.backup.resolve(), m.created if m else None,
                         m.server.name if m else "")


class Restore(Operation):
    """``inv restore [--from DATE|PATH]``."""

    task = "restore"
    notifying = True

    def __init__(self, config: ServerConfig, source: str | None = None, identity: Path | None = None):
        super().__init__(config)
        self.source = source
        self.identity = identity  # the age key for ``--from offsite:NAME`` (crdsops.data.offsite)
        self.facts: RestoreFacts | None = None
        self.staged: staging.Staged | None = None
        self.held: float | None = None

    def probe(self) -> RestoreFacts:
        from crdsops.data import offsite  # an off-site copy is fetched and decrypted, then restored like any

        backup = (offsite.fetch(self.config, self.source, self.identity) if offsite.names_copy(self.source)
                  else inventory.find(self.config, self.source))
        self.facts = RestoreFacts(backup, None, (), False)  # named already, should the checks fail
        manifest, problems = backup_problems(self.config, backup)
        self.facts = RestoreFacts(backup, manifest, tuple(problems), service.running_pid(self.config) is not None)
        return self.facts

    def plan(self, facts: RestoreFacts) -> Plan:
        config, backup = self.config, facts.backup
        p = Plan(f"restoring {config.name}", problems=list(facts.problems), refusal=f"refusing backup {backup}",
                 confirm=f"replace {config.name}'s database and support directories with this backup?")
        described = f" ({facts.manifest.describe()})" if facts.manifest else ""
        p.add(f"restore {config.name} from {backup.resolve()}{described}")
        p.add("verify its manifest, sha256 and size of every file, observatory and engine: "
              + ("ok" if not facts.problems else "FAILED: " + "; ".join(facts.problems[:3])))
        p.add(f"while serving: safety backup of the current state into {config.backups.private_dir}; "
              f"load the dump into staging ({engine_for(config).describe()}), unpack "
              + ", ".join(support_dirs(config)) + " next to their targets", self._stage, name="staging")
        p.add(staging.swap_text(config, facts.running, "get_server_info answers and the catalog counts equal "
                                "the backup's"), self._swap, name="swapping in")
        return p

    def _stage(self) -> None:
        backup, m = self.facts.backup, self.facts.manifest
        log.info(f"backup {backup} verified ({len(m.files)} files): {m.server.name}, made {m.made}")
        log.info("while serving: taking a safety backup, staging the database and the support directories ...")
        self.staged = staging.stage_while_serving(self.config, backup, m, check_cache=True)

    def _swap(self) -> None:
        config, backup, m = self.config, self.facts.backup, self.facts.manifest
        self.held = staging.swap_and_check(config, self.staged, m, what=f"restore of {config.name} from {backup}")
        log.info(f"restored {config.name} from {backup}: {m.counts.describe()}; healthy")

    def outcome(self) -> RestoreOutcome | None:
        if self.facts is None:
            return None
        return RestoreOutcome(self.facts.ref, self.staged.safety if self.staged else None, self.held)

    def recheck(self, outcome) -> None:
        from crdsops.data.cachecheck import closing_check

        closing_check(self.config, "restore", staged=self.staged.cache_check)
