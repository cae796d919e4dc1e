"""Run one ``inv`` task on every server of an observatory, several hosts at a time.

The fleet of an observatory is the set of its configured servers that live on another
machine (``host`` is not ``localhost``), one entry per distinct host/port. ``run_fleet``
works on at most ``parallel`` hosts at once (a thread per host) and gives each host's task
``timeout`` seconds. Each host gets one result line; a host that cannot be reached, refuses
our key, has an unknown or changed host key or runs past its timeout (TIMEOUT) is one failed
line among the others, never an exception that hides them.

One SSH connection per host for a whole fleet task (``Connections``): a hardened fabric
``Connection``, opened by the host's first step; every later step of the task (the gate after
an upgrade, the next tier's step on the same host) is another session on it. It is closed
once the host has no step left, and in any case in a ``finally`` when the task ends: after a
failure, a TIMEOUT (invoke closes that session; the connection stays until the end) or an
interrupt (closing the connections is what ends the sessions under way). A host that could
not be connected to keeps its one-line reason for the rest of the task: its later steps
report it again without another attempt.

Why a fabric ``Connection`` and not the mirror's OpenSSH ControlMaster (``sshmux.Master``):
the fleet's steps are only ``inv`` commands, each needing a per-step timeout; paramiko gives
several sessions over one connection in one process, with invoke's ``timeout=`` ending just
that session, and the same hardened host-key check (``ssh.harden``: known_hosts loaded,
``RejectPolicy``) that ``fab -H`` uses. The master exists for what only OpenSSH can carry
(rsync's ``-e ssh``); here it would add an ssh process, a control socket and a private
directory per host, and a timeout of our own around each ssh command.

``fleet_status`` runs ``inv status --json`` on every host, reads each answer as the record
``crdsops.data.state.StatusDocument`` (a newer host's added keys are ignored; an answer that does
not parse is no status), and adds what only the fleet can see: each server's drift from its
mirror source (the server its last mirror came from, else the server of the tier above it:
``hst.dev`` from ``hst.test``), the context and catalog counts that differ between the two.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
from dataclasses import dataclass, field

from crdsops.config.model import TIERS
from crdsops.data.state import SCHEMA as STATUS_SCHEMA
from crdsops.data.state import StatusDocument
from crdsops.db.catalog import CatalogCounts
from crdsops.errors import CrdsOpsError
from crdsops.records import RecordError
from crdsops.remote import ssh as remote
from crdsops.runtime.outcomes import MirrorOutcome

log = logging.getLogger(__name__)

SCHEMA = 1  # of `inv fleet-status --json` (README, JSON output)
DRIFT_KEYS = ("references", "mappings", "contexts")  # the CatalogCounts fields compared


@dataclass
class HostResult:
    target: remote.Target
    exited: int | None  # None: the task never ran (could not connect)
    summary: str
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False  # the task ran past the per-host timeout (exited is None)
    seconds: float | None = None  # how long the host took, connecting included

    @property
    def ok(self) -> bool:
        return self.exited == 0

    @property
    def state(self) -> str:
        if self.ok:
            return "ok"
        if self.timed_out:
            return "TIMEOUT"
        return "FAILED" if self.exited is not None else "UNREACHABLE"

    def line(self) -> str:
        state = self.state
        code = f"exit {self.exited}" if self.exited is not None else "no exit"
        return f"{self.target.name:<12} {self.target.where:<24} {state:<11} ({code}) {self.summary}"


def fleet_targets(observatory: str, kinds: list[str] | None = None) -> list[remote.Target]:
    from crdsops.config.installed import configs_here
    from crdsops.config.loader import check_identity

    check_identity(observatory, (kinds or [None])[0] or _any_kind(observatory), configs_here())
    configs = [c for c in remote.all_configs(observatory) if c.host not in remote.LOCAL_HOSTS]
    if kinds:
        unknown = set(kinds) - {c.kind for c in remote.all_configs(observatory)}
        if unknown:
            raise CrdsOpsError(f"unknown kind(s) {', '.join(sorted(unknown))} for {observatory}")
        configs = [c for c in configs if c.kind in kinds]
    configs.sort(key=lambda c: (-c.tier_rank, c.kind))  # as data flows: ops, test, dev
    targets: dict[tuple, remote.Target] = {}
    for cfg in configs:
        t = remote.target_for(cfg)
        key = (t.host, t.port, t.user)
        if key in targets:
            targets[key] = remote.replace(targets[key], label=f"{targets[key].label},{cfg.kind}")
        else:
            targets[key] = t
    if not targets:
        raise CrdsOpsError(f"no servers of {observatory} on other hosts in the configs; nothing to do")
    return list(targets.values())


def _any_kind(observatory: str) -> str:
    from crdsops.config.installed import configs_here
    from crdsops.config.loader import kinds

    found = kinds(observatory, configs_here())
    return found[0] if found else "?"


def connect_timeout(timeout: float | None) -> float:
    """Seconds connecting to one host may take: ``ssh.CONNECT_TIMEOUT``, or the task's timeout if shorter."""
    return remote.CONNECT_TIMEOUT if timeout is None else max(1, min(remote.CONNECT_TIMEOUT, timeout))


class Connections:
    """One hardened SSH connection per host for the whole of a fleet task (module docstring).

    Use it as ``with Connections(timeout) as hosts:``; every ``run_fleet(..., hosts=hosts)``
    inside rides the same connection per host, and leaving the block closes them all.
    """

    def __init__(self, timeout: float | None = None):
        self.connect_timeout = connect_timeout(timeout)
        self._conns: dict[tuple, object] = {}
        self._failed: dict[tuple, str] = {}  # host -> why it could not be connected to (one line)
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()
        self._closed = False

    @staticmethod
    def key(target: remote.Target) -> tuple:
        """What makes two targets one connection: where, as whom, with which key, known_hosts and gateway."""
        return (target.host, target.port, target.user, target.key, target.known_hosts, target.gateway)

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self, target: remote.Target):
        """``target``'s connection, connected by its first step and reused by the later ones.

        Raises a CrdsOpsError with one line when the host cannot be connected to (then and for
        every later step of this task, without another attempt).
        """
        key = self.key(target)
        stopped = f"{target.where}: the fleet run was stopped before this host's step"
        with self._guard:
            if self._closed:
                raise CrdsOpsError(stopped)
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # two steps on one host at once (two kinds on one VM) connect once
            if key in self._failed:
                raise CrdsOpsError(self._failed[key])
            with self._guard:
                conn = self._conns.get(key)
            if conn is None:
                try:
                    conn = remote.connection(target, self.connect_timeout)
                except CrdsOpsError as err:  # e.g. an unreadable known_hosts file
                    self._failed[key] = str(err)
                    raise
            try:
                remote.open_checked(conn)
            except CrdsOpsError as err:
                self._failed[key] = str(err)
                _close(conn)
                raise
            with self._guard:
                if self._closed:  # close() came while this one was connecting: it must not outlive the task
                    _close(conn)
                    raise CrdsOpsError(stopped)
                self._conns[key] = conn
            return conn

    def release(self, targets: list[remote.Target]) -> None:
        """Close these hosts' connections now: they have no step left in this task."""
        for target in targets:
            with self._guard:
                conn = self._conns.pop(self.key(target), None)
            _close(conn)

    def close(self) -> None:
        """Close every connection (ending any session under way on it); never raises."""
        with self._guard:
            self._closed = True
            conns = list(self._conns.values())
            self._conns.clear()
        for conn in conns:
            _close(conn)


def _close(conn) -> None:
    if conn is None:
        return
    try:
        conn.close()
        gateway = getattr(conn, "gateway", None)
        if gateway is not None and hasattr(gateway, "close"):
            gateway.close()
    except Exception as err:  # noqa: BLE001 - a connection that will not close cleanly is gone anyway
        log.debug("closing the SSH connection to %s: %s", getattr(conn, "host", "?"), err)


def run_fleet(targets: list[remote.Target], argv: list[str], parallel: int,
              timeout: float | None, hosts: Connections | None = None) -> list[HostResult]:
    """Run ``inv ARGV`` on every target, at most ``parallel`` hosts at a time; one HostResult each, in order.

    ``timeout``: seconds the task may run on one host (None: no limit); connecting has its own
    limit (``ssh.CONNECT_TIMEOUT``, or ``timeout`` if shorter). ``hosts``: the task's
    connections, when this is one of its several steps (the caller closes them); without it
    this is the task's only step, and each host's connection is closed as soon as it is done.
    """
    if parallel < 1:
        raise CrdsOpsError(f"--parallel must be at least 1 (got {parallel})")
    if timeout is not None and timeout <= 0:
        raise CrdsOpsError(f"--timeout must be a number of seconds above 0 (got {timeout:g})")
    if hosts is None:
        with Connections(timeout) as own:
            return _run_fleet(targets, argv, parallel, timeout, own, last_step=True)
    return _run_fleet(targets, argv, parallel, timeout, hosts, last_step=False)


def _run_fleet(targets, argv, parallel, timeout, hosts: Connections, last_step: bool) -> list[HostResult]:
    env = remote.control_env()
    results: dict[int, HostResult] = {}
    commands = {}
    for i, target in enumerate(targets):
        try:
            commands[i] = remote.inv_command(target.checkout, argv, env)
        except CrdsOpsError as err:
            results[i] = HostResult(target, None, str(err))
    keys = [hosts.key(t) for t in targets]
    # A plain pool, not one ThreadingGroup per command: it bounds how many hosts work at once,
    # and each host's own timeout ends only that host, so a hung one never holds back the others.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(parallel, len(commands))))
    try:
        futures = {pool.submit(_run_on, targets[i], hosts, command, timeout,
                               last_step and keys.count(keys[i]) == 1): i
                   for i, command in commands.items()}
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
    except BaseException:
        # interrupted: closing the connections ends the runs under way; the queued ones never start
        pool.shutdown(wait=False, cancel_futures=True)
        hosts.close()
        raise
    pool.shutdown(wait=True)
    return [results[i] for i in range(len(targets))]


def _run_on(target: remote.Target, hosts: Connections, command: str, timeout: float | None,
            last: bool) -> HostResult:
    """One host's step, whatever happens a HostResult (never an exception that would hide the others)."""
    from invoke.exceptions import CommandTimedOut

    started = time.monotonic()
    conn = None
    try:
        conn = hosts.open(target)
        value = conn.run(command, warn=True, hide=True, pty=False, in_stream=False, timeout=timeout)
    except CommandTimedOut as err:
        # invoke closed the session; sshd detaches, so the task may still be running on the host
        log.warning("%s: timed out after %g s", target.name, timeout)
        return HostResult(target, None, f"timed out after {timeout:g} s; the task may still be running there",
                          err.result.stdout, err.result.stderr, timed_out=True,
                          seconds=time.monotonic() - started)
    except CrdsOpsError as err:  # could not connect: one line already
        return HostResult(target, None, str(err), seconds=time.monotonic() - started)
    except Exception as err:  # noqa: BLE001 - paramiko/socket errors of many kinds, one line each
        return HostResult(target, None, remote.explain(err, conn), seconds=time.monotonic() - started)
    finally:
        if last:
            hosts.release([target])
    return HostResult(target, value.exited, _summary(value), value.stdout, value.stderr,
                      seconds=time.monotonic() - started)


def _summary(result) -> str:
    """The most telling line of a task's output: its error, else its last line."""
    err = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    out = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
    if result.exited != 0 and err:
        return err[-1].strip()
    return (out[-1] if out else (err[-1] if err else "")).strip()


# --- fleet-status: every host's `inv status --json`, and drift ------------------------------

@dataclass
class ServerState:
    """One host's answer to `inv status --json`, and how it differs from its mirror source."""

    result: HostResult
    observatory: str
    report: StatusDocument | None = None  # the host's status document (schema 1), when it printed one
    source: str | None = None  # the server it is compared with (its mirror source)
    drift: list[str] = field(default_factory=list)  # what differs from the source
    drift_note: str = ""  # why there is no comparison (top tier, source unreachable ...)
    release_drift: str = ""  # the other revisions its observatory's servers run ("": all the same)

    @property
    def name(self) -> str:
        return (self.report.server.name if self.report else "") or self.result.target.name

    @property
    def state(self) -> str:
        """ok, WARN, DOWN, FAILED (no status document), TIMEOUT or UNREACHABLE."""
        if self.result.exited is None:
            return self.result.state
        if self.report is None:
            return "FAILED" if self.result.exited else "ok"
        return {"ok": "ok", "warn": "WARN", "down": "DOWN"}.get(self.report.state, "FAILED")

    @property
    def tier(self) -> str | None:
        return self.report.server.tier if self.report else None

    @property
    def context(self) -> str | None:
        return self.report.context if self.report else None

    @property
    def release(self):
        """The release it serves (``inv upgrade``; None: its checkout's code, or no status)."""
        return self.report.release if self.report else None

    @property
    def backup_age(self) -> int | None:
        backup = self.report.verified_backup if self.report else None
        return backup.age_seconds if backup else None

    def as_dict(self) -> dict:
        target = self.result.target
        return {"name": self.name, "observatory": self.observatory, "host": target.where, "state": self.state,
                "exit": self.result.exited, "summary": self.result.summary,
                "status": self.report.as_dict() if self.report else None,
                "source": self.source, "drift": self.drift, "drift_note": self.drift_note or None,
                "release_drift": self.release_drift or None}


def fleet_status(observatory: str, targets: list[remote.Target], parallel: int,
                 timeout: float | None, hosts: Connections | None = None) -> list[ServerState]:
    """`inv status --json` on every target in parallel, each compared with its mirror source
    (``hosts``: ``run_fleet``'s, when the task reaches several observatories)."""
    states = [ServerState(res, observatory, _status_document(res))
              for res in run_fleet(targets, ["status", "--json"], parallel, timeout, hosts)]
    by_name = {s.name: s for s in states if s.report is not None}
    for each in states:
        _compare(each, by_name, states)
    _release_drift(states)
    return states


def _release_drift(states: list[ServerState]) -> None:
    """Servers of one observatory on different revisions: each says which others run what."""
    revisions = {s.name: s.release.revision for s in states if s.release is not None}
    if len(set(revisions.values())) < 2:
        return
    for state in states:
        mine = revisions.get(state.name)
        others = sorted({f"{name} {rev[:7]}" for name, rev in revisions.items() if rev != mine})
        state.release_drift = f"other revisions: {', '.join(others)}" if mine else ""


def _status_document(res: HostResult) -> StatusDocument | None:
    """The host's status document (schema 1) as the record; None when it printed none that parses."""
    try:
        doc = StatusDocument.from_dict(json.loads(res.stdout), where=f"the status of {res.target.name}")
    except (ValueError, RecordError):
        return None
    if doc.schema != STATUS_SCHEMA:
        return None
    res.summary = ", ".join(doc.warnings) or res.summary
    return doc


def mirror_source(state: ServerState, states: list[ServerState]) -> str | None:
    """The server ``state``'s data comes from: its last mirror's source, else the one of the tier above."""
    last = state.report.last_mirror if state.report else None
    outcome = last.outcome("mirror") if last is not None and last.ok else None
    if isinstance(outcome, MirrorOutcome) and outcome.source:
        return outcome.source
    tier = state.tier
    if tier not in TIERS or TIERS.index(tier) == len(TIERS) - 1:
        return None
    above = TIERS[TIERS.index(tier) + 1]
    named = f"{state.observatory}.{above}"  # the kind named after its tier (hst.test for the test tier)
    candidates = [s for s in states if s.tier == above] or []
    if any(s.name == named for s in candidates) or not candidates:
        return named
    return sorted(s.name for s in candidates)[0]


def _compare(state: ServerState, by_name: dict[str, ServerState], states: list[ServerState]) -> None:
    if state.report is None:
        state.drift_note = "no status"
        return
    state.source = mirror_source(state, states)
    if state.source is None:
        state.drift_note = "top tier"
        return
    source = by_name.get(state.source)
    if source is None:
        other = next((s for s in states if s.name == state.source), None)
        why = ("not in the fleet" if other is None else "unreachable" if other.state == "UNREACHABLE"
               else "timed out" if other.state == "TIMEOUT" else "gave no status")
        state.drift_note = f"{state.source} {why}"
        return
    mine, theirs = state.report, source.report
    if not (mine.up and theirs.up):
        state.drift_note = f"{'it' if not mine.up else state.source} is down"
        return
    if mine.context != theirs.context:
        state.drift.append(f"context {mine.context or '-'} vs {theirs.context or '-'}")
    differing = (mine.counts or CatalogCounts()).differences(theirs.counts or CatalogCounts(), fields=DRIFT_KEYS)
    state.drift.extend(f"{name} {a} vs {b}" for name, a, b in differing)
