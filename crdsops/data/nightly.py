"""``inv nightly``: the one nightly job (what the old ``nightly.crds.job`` ran), each step in this process.

In order, each step run as its own task would run it, under its own lock, if its task takes one:

1. ``backup``: ``crdsops.data.backup.Backup`` (with the shared publish, and retention);
2. ``rotate-logs``: ``crdsops.runtime.logrotation.RotateLogs`` (no lock, as its task);
3. ``clearsessions``: ``manage.py clearsessions`` (the expired Django sessions; no lock);
4. ``check-cache``: the sha1 slice of tonight, ``check-cache --sha1 --sample auto/N`` (under the
   server lock, its result kept for ``inv status`` as ``inv check-cache`` keeps it);
5. ``runtests``: ``crdsops.runtime.selftest``, only on the tiers in ``nightly.runtests_tiers``
   (dev and test by default: an ops server's clients never meet a test's load).

The steps do not depend on each other's success (a failed backup does not stop the rotation), so
a failed step never stops the later ones; the job fails (exit 1) when any step did.

What it leaves behind: one summary line per step on its output; one audit line per step run,
written as if its own task had run (``taskrun.step``), so ``inv status`` (last backup, runtests,
check-cache), ``inv history --task backup`` and the metrics read a nightly backup as a backup; then
the nightly's own line, whose ``NightlyOutcome`` lists every step's result (skipped ones too), so
``inv history`` shows the whole night in one line. It notifies once, for the whole job, as
``inv backup`` does (a ping at the start and end, mail per ``monitoring.mail_on``): its steps do
not notify on their own, so a dead man's switch sees one run a night.

The nightly job itself takes no lock: each step takes its own, as its task does, so it never
waits on itself, and a step refused because another task holds the lock fails alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from crdsops.config.model import ServerConfig
from crdsops.data import cachecheck
from crdsops.data.backup import Backup
from crdsops.data.cachecheck import CheckOptions, Sample
from crdsops.errors import CrdsOpsError
from crdsops.runtime import environ, results, selftest, taskrun
from crdsops.runtime.lifecycle import Operation, drive
from crdsops.runtime.lock import server_lock
from crdsops.runtime.logrotation import RotateLogs
from crdsops.runtime.outcomes import NightlyOutcome, StepResult
from crdsops.steps import Plan

log = logging.getLogger(__name__)

DEFAULT_SLICES = 7  # as `inv schedule --check-cache`: a full sha1 pass each week


@dataclass(frozen=True)
class NightlyStep:
    task: str  # the task it runs as (its audit line's task)
    text: str  # what the plan says it does
    action: Callable[[], str]  # does it; returns its few words; raises on failure
    skip: str = ""  # why it does not run tonight ("": it runs)


class Nightly(Operation):
    """``inv nightly``: the steps above, each under its own audit line; fails when one failed."""

    task = "nightly"
    notifying = True

    def __init__(self, config: ServerConfig, slices: int = DEFAULT_SLICES):
        super().__init__(config)
        self.slices = slices
        self.steps: tuple[NightlyStep, ...] = ()  # what the plan found
        self.results: list[StepResult] = []

    @property
    def locks(self) -> None:
        return None  # each step takes the lock its own task takes (module docstring)

    def check(self) -> None:
        if self.slices < 1:
            raise CrdsOpsError(f"--slices {self.slices}: give the number of nights a full sha1 pass is spread "
                               "over (>= 1)")

    def probe(self) -> tuple[NightlyStep, ...]:
        cfg = self.config
        tiers = cfg.nightly.runtests_tiers
        skip_tests = "" if cfg.tier in tiers else (
            f"{cfg.name} is on the {cfg.tier} tier; nightly.runtests_tiers: {', '.join(tiers) or 'none'}")
        return (
            NightlyStep("backup", "back up (database, support dirs), publish the shared latest, apply retention",
                        self._backup),
            NightlyStep("rotate-logs", f"rotate the logs that are due ({cfg.layout.logrotate_conf})", self._rotate),
            NightlyStep("clearsessions", "remove the expired Django sessions (manage.py clearsessions)",
                        self._clearsessions),
            NightlyStep("check-cache", f"check tonight's sha1 slice of the cache (--sha1 --sample "
                        f"auto/{self.slices})", self._check_cache),
            NightlyStep("runtests", "run the self-tests (Django suite, live crds client checks)", self._runtests,
                        skip_tests),
        )

    def plan(self, steps: tuple[NightlyStep, ...]) -> Plan:
        p = Plan(f"the nightly job of {self.config.name}")
        for step in steps:
            p.add(f"{step.task}: " + (f"skipped ({step.skip})" if step.skip else step.text))
        self.steps = steps
        return p

    def run(self, plan: Plan) -> NightlyOutcome:
        for step in self.steps:
            self.results.append(self._step(step))
        # together at the end, where the log's reader and the mail's tail find them
        for result in self.results:
            log.info(result.line())
        failed = self.outcome().failed
        if failed:
            raise CrdsOpsError(f"{len(failed)} of {len(self.results)} nightly steps failed: {', '.join(failed)} "
                               "(`inv history` says why)")
        log.info(f"nightly {self.config.name}: every step ok")
        return self.outcome()

    def _step(self, step: NightlyStep) -> StepResult:
        if step.skip:
            return StepResult(step.task, "skipped", 0.0, step.skip)
        log.info(f"nightly: {step.task} ...")
        started, said = time.monotonic(), ""
        with taskrun.step(step.task, self.config, {"nightly": True}) as run:
            said = step.action()
        detail = said if run.result == "ok" else (run.error or "").removeprefix("error: ")
        return StepResult(step.task, run.result, round(time.monotonic() - started, 1), detail)

    def outcome(self) -> NightlyOutcome:
        return NightlyOutcome(tuple(self.results))

    # --- the steps ----------------------------------------------------------------------------

    def _backup(self) -> str:
        outcome = drive(Backup(self.config))
        return outcome.describe() if outcome else ""

    def _rotate(self) -> str:
        outcome = drive(RotateLogs(self.config))
        return "rotated the logs due" if outcome and outcome.rotated else ""

    def _clearsessions(self) -> str:
        environ.manage(self.config, "clearsessions", capture=True)
        return "expired sessions removed"

    def _check_cache(self) -> str:
        cfg, started = self.config, time.monotonic()
        options = CheckOptions(sha1=True, sample=Sample.parse(f"auto/{self.slices}"))
        with server_lock(cfg, "check-cache"):
            try:
                report = cachecheck.check(cfg, options)
            except cachecheck.CacheUnavailable as err:
                results.write(cfg.layout, results.CacheCheckResult(
                    ok=False, seconds=round(time.monotonic() - started, 3), mode=options.mode, error=str(err)))
                raise
            results.write(cfg.layout, report.result())
        for problem in report.failing:
            log.info(problem.line(cfg.observatory))
        if not report.ok:
            raise CrdsOpsError(f"check-cache {cfg.name}: {report.summary()}")
        return report.summary()

    def _runtests(self) -> str:
        checks = selftest.run_recorded(self.config)
        if checks.failed:
            raise CrdsOpsError(f"runtests {self.config.name}: {checks.summary}")
        return checks.summary
