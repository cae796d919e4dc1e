"""``inv check-cache``: check the cache against the catalog, and with ``--repair`` fix what was found.

The check itself is ``crdsops.data.cachecheck`` (read-only: it is this operation's probe, also
under ``--dry-run``). A repair fetches missing and damaged files again from a source server
and moves orphans to a dated quarantine (never deleting them), capped.

The source is named by its kind (``--src test``) and checked as a mirror's is
(``crdsops.remote.source``: same observatory, not this server, its identity read over SSH,
which also says where its cache is). Then one ``rsync -a --ignore-times --files-from=LIST``
brings exactly the listed files: rsync writes each one under a temporary name in its
directory and renames it into place, so the server never serves half a file;
``--ignore-times`` because a damaged file may have the right size and mtime. Every fetched
file is checked against the catalog afterwards.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crdsops.config.model import ServerConfig
from crdsops.data import cachecheck as lib
from crdsops.data.cachecheck import CheckOptions, Problem, Report
from crdsops.errors import CrdsOpsError
from crdsops.runtime import results
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.results import CacheCheckResult
from crdsops.steps import Plan

# A check without --repair (the nightly's, every mirror's and restore's closing one) needs none of
# SSH, rsync or the outcomes' records: they are imported where a repair uses them.
if TYPE_CHECKING:
    from crdsops.remote import ssh
    from crdsops.runtime.outcomes import RepairOutcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    config: ServerConfig
    target: ssh.Target
    cache: str  # the source's cache directory, on its host


@dataclass(frozen=True)
class RepairOptions:
    src: str | None = None  # the kind of the server to fetch from
    src_host: str | None = None
    max_quarantine: int | None = None


@dataclass(frozen=True)
class CacheFacts:
    """The check's report, and what a repair would do about it."""

    report: Report
    fetch: tuple[Problem, ...] = ()
    orphans: tuple[Problem, ...] = ()
    moving: tuple[Path, ...] = ()  # where each orphan goes
    quarantine: Path | None = None
    source: Source | None = None


@dataclass
class Repaired:
    """What a repair did (``--json`` shows it)."""

    fetched: list[str] = field(default_factory=list)
    still_bad: list[Problem] = field(default_factory=list)
    quarantined: list[Path] = field(default_factory=list)


class CheckCache(Operation):
    """``inv check-cache [--sha1 ...] [--repair --src KIND]``: a changing task only with ``--repair``."""

    task = "check-cache"
    notifying = True

    def __init__(self, config: ServerConfig, options: CheckOptions, repair: RepairOptions | None = None):
        super().__init__(config)
        self.options, self.repair = options, repair
        self.facts: CacheFacts | None = None
        self.repaired: Repaired | None = None
        self.started = time.monotonic()

    @property
    def changing(self) -> bool:
        return self.repair is not None

    def check(self) -> None:
        o = self.options
        if (o.sample or o.resume) and not o.sha1:
            raise CrdsOpsError("--sample and --resume go with --sha1 (quick mode reads no file contents)")

    def probe(self) -> CacheFacts:
        try:
            report = lib.check(self.config, self.options)
        except lib.CacheUnavailable as err:
            results.write(self.config.layout, CacheCheckResult(
                ok=False, seconds=round(time.monotonic() - self.started, 3), mode=self.options.mode, error=str(err)))
            raise
        self.facts = CacheFacts(report) if self.repair is None else repair_facts(self.config, report, self.repair)
        return self.facts

    def plan(self, facts: CacheFacts) -> Plan:
        p = Plan(f"repairing the cache of {self.config.name}")
        if self.repair is None:
            return p
        obs, src = self.config.observatory, facts.source
        for problem in facts.fetch:
            p.add(f"fetch {problem.tree}/{obs}/{problem.name} from {src.config.name} ({problem.kind})")
        for problem, dst in zip(facts.orphans, facts.moving, strict=True):
            p.add(f"move orphan {problem.tree}/{obs}/{problem.name} to {dst}")
        if facts.orphans:
            p.add(f"quarantine {len(facts.orphans)} orphan(s) in {facts.quarantine}", self._quarantine,
                  name="quarantining orphans")
        if facts.fetch:
            p.add(f"fetch {len(facts.fetch)} file(s) by one rsync, then check each against the catalog",
                  self._fetch, name="fetching files")
        return p

    def run(self, plan: Plan) -> RepairOutcome | None:
        if self.repair is None:
            return None  # a check only: nothing was to be repaired, and nothing is said about it
        self.repaired = Repaired()
        plan.run()
        self._settle()
        return self.outcome()

    def _quarantine(self) -> None:
        f = self.facts
        _where, moved = lib.quarantine(self.config, list(f.orphans), max_move=self.repair.max_quarantine,
                                       catalog_files=f.report.catalog_files)
        self.repaired.quarantined = moved

    def _fetch(self) -> None:
        f, done = self.facts, self.repaired
        names = [(p.tree, p.name) for p in f.fetch]
        fetch(self.config, f.source, names)
        done.still_bad = lib.recheck(self.config, names)
        for p in done.still_bad:
            log.info(f"still bad after the fetch from {f.source.config.name}: {p.line(self.config.observatory)}")
        bad = {p.name for p in done.still_bad}
        done.fetched = [p.name for p in f.fetch if p.name not in bad]

    def _settle(self) -> None:
        """The report as the repair left it: what was fixed is no longer a problem."""
        f, done, report = self.facts, self.repaired, self.facts.report
        fixed = {(p.kind, p.tree, p.name) for p in (*f.fetch, *f.orphans)}
        report.problems = [p for p in report.problems if (p.kind, p.tree, p.name) not in fixed] + done.still_bad
        if report.strict:
            report.notes = [p for p in report.notes if (p.kind, p.tree, p.name) not in fixed]
        log.info(f"repaired: {len(done.fetched)} fetched, {len(done.quarantined)} orphan(s) quarantined"
                 + (f", {len(done.still_bad)} still bad" if done.still_bad else ""))

    def outcome(self) -> RepairOutcome | None:
        if self.repair is None or self.facts is None:
            return None
        from crdsops.runtime.outcomes import RepairOutcome

        f, done = self.facts, self.repaired or Repaired()
        src = f.source
        return RepairOutcome(src.config.name if src else "", src.target.where if src else "", len(done.fetched),
                             len(done.still_bad), f.quarantine if done.quarantined else None, len(done.quarantined))

    def recheck(self, outcome) -> None:
        results.write(self.config.layout, self.facts.report.result())

    def document(self, dry_run: bool) -> dict | None:
        """The ``repair`` part of ``--json``."""
        if self.repair is None or self.facts is None:
            return None
        f = self.facts
        if dry_run:
            return {"dry_run": True, "fetch": [p.name for p in f.fetch], "quarantine": [str(d) for d in f.moving]}
        done = self.repaired or Repaired()
        return {"dry_run": False, "fetched": done.fetched, "still_bad": [p.as_dict() for p in done.still_bad],
                "quarantine": str(f.quarantine) if done.quarantined else None,
                "quarantined": [str(d) for d in done.quarantined]}


def repair_facts(config: ServerConfig, report: Report, options: RepairOptions) -> CacheFacts:
    """What a repair of ``report`` would do: the files to fetch (and from where), the orphans to move."""
    fetch = tuple(p for p in report.failing if p.kind in lib.REPAIRABLE and p.tree in lib.TREES)
    orphans = tuple(p for p in report.problems if p.kind == "orphan" and p.tree in lib.TREES)
    if fetch and not options.src:
        raise CrdsOpsError(f"{len(fetch)} file(s) need fetching again; name the server to fetch them from with "
                           "--src KIND (e.g. --src test); nothing was changed")
    src = None
    if fetch:
        from crdsops.remote import source

        config_, target, reported = source.identified(config, options.src, options.src_host)
        src = Source(config_, target, reported.cache)
    where, moving = lib.quarantine(config, list(orphans), max_move=options.max_quarantine, dry_run=True,
                                   catalog_files=report.catalog_files)
    return CacheFacts(report, fetch, orphans, tuple(moving), where, src)


def fetch_argv(src: Source, dest: ServerConfig, listing: Path) -> list[str]:
    from crdsops.remote import rsync

    return rsync.rsync_argv(src.target, src.cache, dest.cache,
                            options=("--ignore-times", f"--files-from={listing}"))


def fetch(dest: ServerConfig, src: Source, files: list[tuple[str, str]]) -> float:
    """rsync ``(tree, name)`` files from the source's cache into this one; return the seconds it took.

    A file the source lacks is not an error here (rsync exit 23/24): the re-check names it.
    """
    from crdsops.remote import rsync

    obs = dest.observatory
    lines = sorted({f"{tree}/{obs}/{name}" for tree, name in files})
    fd, listing = tempfile.mkstemp(prefix=".crdsops-repair-", suffix=".list", dir=dest.layout.run)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        log.info(f"fetching {len(lines)} file(s) from {src.config.name} ({src.target.where}:{src.cache}) ...")
        start = time.monotonic()
        code = rsync.run_rsync(fetch_argv(src, dest, Path(listing)), src.target, "fetching",
                               "files already in place were not touched", ok_codes=(0, 23, 24))
    finally:
        Path(listing).unlink(missing_ok=True)
    if code:
        log.warning(f"the source could not send every file (rsync exit {code}: {rsync.RSYNC_CODES[code]})")
    return time.monotonic() - start
