"""A server's state, as ``inv status`` reports it: the questions an operator asks in the morning.

Is it up and answering, with which context and counts; the newest private backup (its age,
whether it verified), the shared latest (what a mirror would copy); the last backup run, the
last restore and mirror (when, from what, how it ended: from the audit log, which also gives
every task's last run to the metrics, ``crdsops.data.metrics``); the last runtests
and cache check (from ``Layout.last_result``). ``monitoring:`` thresholds turn stale results
into warnings:

* ``backup_max_age``: the newest verified private backup (purpose ``backup``: restore's safety
  backups do not count) is older, or there is none and the server is older than that (its
  age: its secret key's, which the first install writes);
* ``shared_max_age``: the same for the shared latest;
* ``runtests_max_age``, ``check_cache_max_age``: the last result is older; a last result that
  failed is always a warning.

With ``backups.offsite`` on, the last off-site upload is one line (``offsite``): a failed one is a
warning (the backup it followed succeeded, so nothing else says so), and so is a verified backup
with no upload at all.

Maintenance mode (``inv maintenance on``) is shown, and is a warning for as long as it is on. A
pause of the cron lines in force (``inv schedule --pause-until``) is one line, not a warning: it
ends by itself, and the backup's age warns if it lasts too long.

A failed backup, restore or mirror run is shown, not warned about: its alert went out when it
failed, and a missed backup turns stale within hours. Exit codes: 0 ok, 1 down, 2 warning.

``Report.document()`` is the ``--json`` document as a record, ``StatusDocument`` (``schema`` 1;
README "JSON output"), and ``Report.as_dict()`` its JSON. Another machine reads a host's
document back with ``StatusDocument.from_dict`` (``crdsops.remote.fleet``): times are datetimes,
counts a ``CatalogCounts``, a check's result its ``CheckResult``, and a run's ``touched`` its
task's outcome through ``RunSummary.outcome(task)``.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crdsops.config.model import Monitoring, ServerConfig, format_duration
from crdsops.data import boot, inventory, releaselist
from crdsops.data.inventory import Entry
from crdsops.data.releaselist import Serving
from crdsops.db.catalog import CatalogCounts
from crdsops.errors import CrdsOpsError
from crdsops.records import Record
from crdsops.runtime import audit, cronpause, maintenance, outcomes, results, service
from crdsops.runtime.audit import Entry as AuditEntry
from crdsops.runtime.maintenance import MaintenanceNotice
from crdsops.runtime.results import CacheCheckResult, CheckResult, OffsiteResult, RuntestsResult
from crdsops.timefmt import age_text

SCHEMA = 1
EXIT_OK, EXIT_DOWN, EXIT_WARN = 0, 1, 2


# --- the --json document, as records (field order is the JSON's key order) ----------------------

@dataclass(frozen=True)
class DatabaseInfo(Record):
    engine: str = ""
    name: str = ""


@dataclass(frozen=True, kw_only=True)
class ServerInfo(Record):
    """Which server this is, and where."""

    name: str
    observatory: str = ""
    kind: str = ""
    tier: str = ""
    host: str = ""
    url: str = ""
    local_url: str = ""
    database: DatabaseInfo = field(default_factory=DatabaseInfo)

    @classmethod
    def of(cls, config: ServerConfig) -> ServerInfo:
        return cls(name=config.name, observatory=config.observatory, kind=config.kind, tier=config.tier,
                   host=config.host, url=config.url, local_url=config.local_url,
                   database=DatabaseInfo(config.database.engine, config.database.name))


@dataclass(frozen=True, kw_only=True)
class BackupSummary(Record):
    """One backup: ``backup`` (the newest private one), ``verified_backup``, ``shared``."""

    name: str
    path: Path
    where: str = ""  # private | shared
    created: datetime.datetime | None = None
    age_seconds: int | None = None
    verified: str = "unverified"  # ok | BAD | unverified
    problems: tuple[str, ...] = ()
    size: int = 0
    purpose: str = "?"


@dataclass(frozen=True, kw_only=True)
class RunSummary(Record):
    """A task's last run from the audit log: ``last_backup``, ``last_restore``, ``last_mirror``."""

    at: datetime.datetime | None = None
    age_seconds: int | None = None
    result: str  # ok | failed | interrupted
    error: str | None = None
    seconds: float = 0.0
    by: str = ""
    flags: dict[str, Any] = field(default_factory=dict)
    touched: dict[str, Any] = field(default_factory=dict)  # the run's outcome, as its audit line has it

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def outcome(self, task: str) -> outcomes.Outcome | None:
        """What the run touched, as the outcome record of ``task``; None when it says nothing readable."""
        return outcomes.read(task, self.touched)


@dataclass(frozen=True, kw_only=True)
class CheckSummary(Record):
    """A check's last result: ``runtests``, ``check_cache``."""

    at: datetime.datetime | None = None
    age_seconds: int | None = None
    ok: bool = False
    summary: str = ""
    result: CheckResult  # the record as the check wrote it


@dataclass(frozen=True, kw_only=True)
class RuntestsSummary(CheckSummary):
    result: RuntestsResult


@dataclass(frozen=True, kw_only=True)
class CacheCheckSummary(CheckSummary):
    result: CacheCheckResult


@dataclass(frozen=True, kw_only=True)
class OffsiteSummary(CheckSummary):
    result: OffsiteResult


@dataclass(frozen=True)
class Thresholds(Record):
    """The ``monitoring:`` limits, in seconds (None: off)."""

    backup_max_age: int | None = None
    shared_max_age: int | None = None
    runtests_max_age: int | None = None
    check_cache_max_age: int | None = None
    binlog_max_lag: int | None = None

    @classmethod
    def of(cls, monitoring: Monitoring) -> Thresholds:
        limits = {f.name: getattr(monitoring, f.name) for f in dataclasses.fields(cls)}
        return cls(**{name: None if limit is None else int(limit.total_seconds()) for name, limit in limits.items()})


@dataclass(frozen=True, kw_only=True)
class StatusDocument(Record):
    """``inv status --json`` (schema 1; README "JSON output")."""

    schema: int = SCHEMA
    server: ServerInfo
    state: str = ""  # ok | warn | down
    exit: int = EXIT_OK
    up: bool = False
    pid: int | None = None
    answers: bool = False
    problem: str | None = None
    maintenance: MaintenanceNotice | None = None  # on: JSON-RPC refuses clients (inv maintenance)
    context: str | None = None
    counts: CatalogCounts | None = None
    backup: BackupSummary | None = None
    verified_backup: BackupSummary | None = None
    shared: BackupSummary | None = None
    last_backup: RunSummary | None = None
    last_restore: RunSummary | None = None
    last_mirror: RunSummary | None = None
    runtests: RuntestsSummary | None = None
    check_cache: CacheCheckSummary | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    warnings: tuple[str, ...] = ()  # "line: why", the line being maintenance, backup, shared, runtests or check-cache
    cron_paused_until: datetime.datetime | None = None  # crdsops' cron lines do nothing until then
    release: Serving | None = None  # the release that serves (None: the checkout's code; inv upgrade)
    pitr: str | None = None  # point-in-time restore: available and how far the binlog archive lags, or why not
    offsite: OffsiteSummary | None = None  # the last off-site upload (backups.offsite)

    def warning(self, line: str) -> str | None:
        """Why ``line`` warns, or None."""
        for text in self.warnings:
            key, _, why = text.partition(": ")
            if key == line:
                return why
        return None


@dataclass
class Report:
    config: ServerConfig
    now: datetime.datetime
    status: service.Status
    maintenance: MaintenanceNotice | None = None
    cron_pause: cronpause.CronPause | None = None  # in force: the cron lines do nothing until its time
    newest: Entry | None = None  # the newest private backup
    verified: Entry | None = None  # the newest private backup that verified
    shared: Entry | None = None
    last_backup: AuditEntry | None = None
    last_restore: AuditEntry | None = None
    last_mirror: AuditEntry | None = None
    last_runs: dict[str, AuditEntry] = field(default_factory=dict)  # task -> its newest audit line
    runtests: CheckResult | None = None
    check_cache: CheckResult | None = None
    offsite: CheckResult | None = None  # the last off-site upload
    release: Serving | None = None  # the release that serves (None: the checkout's code)
    pitr: str = ""  # point-in-time restore (MySQL): the binlog archive's state, or why there is none
    boot: str = ""  # whether it starts at boot, and how (``crdsops.data.boot.describe``); text only
    since: datetime.datetime | None = None  # when the server was first installed
    warnings: dict[str, str] = field(default_factory=dict)  # line key -> why it is a warning

    @property
    def state(self) -> str:
        if not self.status.up:
            return "down"
        return "warn" if self.warnings else "ok"

    @property
    def exit_code(self) -> int:
        return {"down": EXIT_DOWN, "warn": EXIT_WARN, "ok": EXIT_OK}[self.state]

    def age(self, when: datetime.datetime | None) -> datetime.timedelta | None:
        return None if when is None else self.now - when

    # --- the text of `inv status` -------------------------------------------------------

    def lines(self) -> list[tuple[str, str]]:
        cfg, st = self.config, self.status
        context = st.context or "-"
        counts = st.counts or CatalogCounts()
        out = [
            ("server", f"{cfg.name} ({cfg.tier} tier) on {cfg.host}"),
            ("url", f"{cfg.url}  (local {cfg.local_url})"),
            ("pid", f"{st.pid if st.pid else 'not running'}"),
            ("answers", "yes" if st.answers else "no" + (f" ({st.problem})" if st.problem else "")),
            *([("maintenance", self.maintenance.describe())] if self.maintenance else []),
            ("context", f"{context}"),
            ("catalog", f"{_or_dash(counts.references)} references, {_or_dash(counts.mappings)} mappings"),
            ("database", f"{cfg.database.engine} {cfg.database.name}"),
            ("release", self.release.describe() if self.release else "none: the checkout's code serves"),
            ("backup", self._backup_text()),
            *([("pitr", self.pitr)] if self.pitr else []),
            ("shared", self._entry_text(self.shared, "none published")),
            ("last backup", self._run_text(self.last_backup)),
            ("restore", self._run_text(self.last_restore)),
            ("mirror", self._run_text(self.last_mirror)),
            ("runtests", self._result_text(self.runtests)),
            ("check-cache", self._result_text(self.check_cache)),
            *([("offsite", self._offsite_text())] if cfg.backups.offsite.enabled or self.offsite else []),
            *([("boot", self.boot)] if self.boot else []),
            *([("cron", f"{self.cron_pause.describe()}; `inv schedule --resume` ends it")] if self.cron_pause else []),
        ]
        shown = []
        for key, text in out:
            warn = self.warnings.get(key)
            shown.append((key, f"{text}  WARN: {warn}" if warn else text))
        verdict = {"ok": "ok", "down": "DOWN"}.get(self.state) or f"WARN ({len(self.warnings)})"
        if self.state == "down" and self.warnings:
            verdict += f", and {len(self.warnings)} warning(s)"
        shown.append(("state", verdict))
        return shown

    def text(self) -> str:
        return "\n".join(f"{key + ':':11} {value}" for key, value in self.lines())

    def _entry_text(self, entry: Entry | None, none: str) -> str:
        if entry is None:
            return none
        made = entry.created.strftime("%Y-%m-%d %H:%M UTC") if entry.created else "?"
        state = {"ok": "verified", "BAD": "BAD", "unverified": "not verified"}[entry.state]
        text = f"{self._name(entry)} made {made}, {age_text(self.age(entry.created))} ago, {state}"
        if entry.state == "BAD" and entry.problems:
            text += f" ({entry.problems[0]})"
        return text

    def _name(self, entry: Entry) -> str:
        """A backup's dated name (the shared latest's target is ``.<obs>.<kind>.<name>``)."""
        return entry.path.resolve().name.removeprefix(f".{self.config.name}.")

    def _backup_text(self) -> str:
        text = self._entry_text(self.newest, "none yet")
        if self.newest is not None and self.verified is not self.newest:
            text += "; newest verified: " + (
                f"{self.verified.path.name}, {age_text(self.age(self.verified.created))} ago" if self.verified else "none")
        return text

    def _run_text(self, entry: AuditEntry | None) -> str:
        if entry is None:
            return "never (in the audit log)"
        result = {"ok": "ok", "failed": "FAILED", "interrupted": "INTERRUPTED"}.get(entry.result, entry.result)
        text = f"{result} {age_text(self.age(entry.when))} ago by {entry.who.describe()}"
        what = from_what(entry)
        if what:
            text += f", {what}"
        if entry.error:
            text += f": {entry.error}"
        return text

    def _offsite_text(self) -> str:
        if not self.config.backups.offsite.enabled:
            return "off (backups.offsite.remote is null); " + self._result_text(self.offsite)
        if self.offsite is None:
            return f"no upload yet to {self.config.backups.offsite.remote}"
        return self._result_text(self.offsite)

    def _result_text(self, result: CheckResult | None) -> str:
        if result is None:
            return "never run"
        return f"{'ok' if result.ok else 'FAILED'} {age_text(self.age(result.at))} ago: {result.line()}"

    # --- the --json document -------------------------------------------------------------

    def document(self) -> StatusDocument:
        st = self.status
        return StatusDocument(
            server=ServerInfo.of(self.config), state=self.state, exit=self.exit_code, up=st.up, pid=st.pid,
            answers=st.answers, problem=st.problem or None, maintenance=self.maintenance,
            context=st.context, counts=st.counts,
            backup=self._backup(self.newest), verified_backup=self._backup(self.verified),
            shared=self._backup(self.shared), last_backup=self._run(self.last_backup),
            last_restore=self._run(self.last_restore), last_mirror=self._run(self.last_mirror),
            runtests=self._check(RuntestsSummary, self.runtests),
            check_cache=self._check(CacheCheckSummary, self.check_cache),
            offsite=self._check(OffsiteSummary, self.offsite),
            thresholds=Thresholds.of(self.config.monitoring),
            warnings=tuple(f"{key}: {why}" for key, why in self.warnings.items()),
            cron_paused_until=self.cron_pause.until if self.cron_pause else None,
            release=self.release, pitr=self.pitr or None,
        )

    def as_dict(self) -> dict:
        """The ``--json`` document."""
        return self.document().as_dict()

    def _seconds(self, when: datetime.datetime | None) -> int | None:
        delta = self.age(when)
        return None if delta is None else int(delta.total_seconds())

    def _backup(self, entry: Entry | None) -> BackupSummary | None:
        if entry is None:
            return None
        return BackupSummary(name=self._name(entry), path=entry.path, where=entry.where, created=entry.created,
                             age_seconds=self._seconds(entry.created), verified=entry.state,
                             problems=tuple(entry.problems), size=entry.size, purpose=entry.purpose)

    def _run(self, entry: AuditEntry | None) -> RunSummary | None:
        if entry is None:
            return None
        return RunSummary(at=entry.when, age_seconds=self._seconds(entry.when), result=entry.result,
                          error=entry.error, seconds=entry.seconds, by=entry.who.describe(), flags=entry.flags,
                          touched=entry.touched)

    def _check(self, kind: type[CheckSummary], result: CheckResult | None) -> CheckSummary | None:
        if result is None:
            return None
        return kind(at=result.at, age_seconds=self._seconds(result.at), ok=result.ok, summary=result.line(),
                    result=result)


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


def from_what(entry: AuditEntry) -> str:
    """What a run touched, in a few words: ``from hst.test (its backup ...)``, a backup's name."""
    outcome = outcomes.read(entry.task, entry.touched)
    return outcome.describe() if outcome is not None else ""


def report(config: ServerConfig, now: datetime.datetime | None = None) -> Report:
    """Probe the server and read its records; the warnings are decided here."""
    now = now or datetime.datetime.now(datetime.UTC)
    layout = config.layout
    rep = Report(config, now, service.status(config), maintenance=maintenance.read(layout),
                 cron_pause=cronpause.in_force(layout, now), release=releaselist.serving(config))
    nightly = [e for e in inventory.private_backups(config) if e.manifest is None or e.purpose == "backup"]
    rep.newest = nightly[0] if nightly else None
    rep.verified = next((e for e in nightly if e.state == "ok"), None)
    rep.shared = inventory.shared_entry(config)
    # the whole log, newest first: each task's last run (the metrics name every task); a server
    # that never mirrored read it all before too, looking for its last mirror
    for entry in audit.newest_first(layout):
        rep.last_runs.setdefault(entry.task, entry)
    rep.last_backup, rep.last_restore, rep.last_mirror = (rep.last_runs.get(t) for t in ("backup", "restore", "mirror"))
    rep.runtests = results.read(layout, "runtests")
    rep.check_cache = results.read(layout, "check-cache")
    rep.offsite = results.read(layout, "offsite")
    rep.boot = _boot_text(config)
    rep.pitr = _pitr_text(rep)
    try:
        rep.since = datetime.datetime.fromtimestamp(layout.secret_key.stat().st_mtime, datetime.UTC)
    except OSError:
        rep.since = None
    _judge(rep)
    return rep


def _pitr_text(rep: Report) -> str:
    """The binlog archive's state (MySQL kinds); a WARN when it is down or behind ``monitoring.binlog_max_lag``."""
    from crdsops.data import binlogs

    config = rep.config
    if not config.database.is_mysql:
        return ""
    why = binlogs.unavailable(config)
    if why:
        return f"unavailable: {why}"
    if not binlogs.archive_dir(config).is_dir():
        return "no binlog archive (`inv binlog-archive` starts one): a restore goes back to the newest backup"
    pid = binlogs.running_pid(config)
    try:
        lag = binlogs.lag(config)
    except CrdsOpsError as err:
        rep.warnings["pitr"] = f"cannot ask the database server ({str(err).splitlines()[0]})"
        return "binlog archive: lag unknown"
    limit = config.monitoring.binlog_max_lag
    if pid is None:
        rep.warnings["pitr"] = "the binlog archive is not running; `inv binlog-archive` starts it"
    elif limit is not None and lag.behind and lag.seconds > limit.total_seconds():
        rep.warnings["pitr"] = f"the binlog archive is behind more than {format_duration(limit)} (monitoring.binlog_max_lag)"
    return f"binlog archive {'running' if pid else 'NOT running'}, {lag.describe()}"


def _boot_text(config: ServerConfig) -> str:
    """``enabled (systemd unit ...)``, ``disabled (cron ...)``; empty when neither can be asked (no crontab)."""
    try:
        return boot.describe(config, boot.probe(config)).removeprefix("boot start: ")
    except CrdsOpsError:
        return ""


def _judge(rep: Report) -> None:
    if rep.maintenance is not None:  # on purpose, but a notice forgotten is an outage that looks healthy
        rep.warnings["maintenance"] = "JSON-RPC refuses every client (503); `inv maintenance off` when done"
    m = rep.config.monitoring
    shared_ok = rep.shared if rep.shared is not None and rep.shared.state != "BAD" else None
    for key, entry, limit, name in (("backup", rep.verified, m.backup_max_age, "backup_max_age"),
                                    ("shared", shared_ok, m.shared_max_age, "shared_max_age")):
        if limit is None:
            continue
        what = "the newest verified backup" if key == "backup" else "the shared latest"
        if entry is not None and entry.created is not None:
            if rep.now - entry.created > limit:
                rep.warnings[key] = f"{what} is {age_text(rep.now - entry.created)} old, " \
                                    f"more than {format_duration(limit)} (monitoring.{name})"
        elif rep.since is None or rep.now - rep.since > limit:
            installed = f"installed {age_text(rep.now - rep.since)} ago, " if rep.since else ""
            rep.warnings[key] = f"no {what.removeprefix('the ')} ({installed}monitoring.{name} {format_duration(limit)})"
    _judge_offsite(rep)
    for key, result, limit, name in (("runtests", rep.runtests, m.runtests_max_age, "runtests_max_age"),
                                     ("check-cache", rep.check_cache, m.check_cache_max_age, "check_cache_max_age")):
        if result is not None and not result.ok:
            rep.warnings[key] = "the last run failed"
        elif limit is not None:
            if result is None or result.at is None:
                rep.warnings[key] = f"never run (monitoring.{name} {format_duration(limit)})"
            elif rep.now - result.at > limit:
                rep.warnings[key] = f"last run {age_text(rep.now - result.at)} ago, more than " \
                                    f"{format_duration(limit)} (monitoring.{name})"


def _judge_offsite(rep: Report) -> None:
    """A failed last upload warns; so does a verified backup with no copy off site at all."""
    if not rep.config.backups.offsite.enabled:
        return
    if rep.offsite is not None and not rep.offsite.ok:
        rep.warnings["offsite"] = "the last upload failed; the newest off-site copy is older than the newest backup"
    elif rep.offsite is None and rep.verified is not None:
        rep.warnings["offsite"] = "no off-site copy yet, though a verified backup exists (backups.offsite is on)"
