"""Fleet tasks: one ``inv`` task on every server of an observatory, in parallel over SSH.

Defaults: the fleet of ``--obs`` is every configured server of that observatory whose
``host`` is another machine; ``--kinds`` narrows it. Connection settings come from each
server's ``ssh`` section (then ~/.ssh/config); host keys are checked against
``ssh.known_hosts`` and unknown or changed keys are refused. One line per host; the exit
code is 0 only when every host succeeded (fleet-status: 2 when none failed but some warn).
``fleet-status`` without ``--obs`` covers every observatory.

Flags, not config: ``--parallel`` hosts at a time (default 8) and ``--timeout`` seconds per
host (default 60 for fleet-status, 600 for fleet-backup; 0: no limit). A host still running
at its timeout is reported as TIMEOUT while the others finish, and fails the task.

Each task opens one SSH connection per host and carries every step on it (fleet-upgrade's
upgrade and gate; its dry run's probe), closed when the host is done and in any case when
the task ends, fails or is interrupted (``crdsops.remote.fleet.Connections``).
"""

from __future__ import annotations

from invoke import Exit

from crdsops.tasks._common import ops_task

_HELP = {
    "obs": "observatory whose servers to reach (hst, jwst, ...)",
    "kinds": "comma-separated kinds to include (default: every server on another host)",
    "verbose": "also print each host's full output",
    "parallel": "how many hosts to work on at a time (default 8)",
}
STATUS_TIMEOUT = 60  # seconds `inv status` may take on one host
BACKUP_TIMEOUT = 600  # seconds `inv backup` may take on one host
PARALLEL = 8  # hosts at a time


def _timeout_help(default: int) -> str:
    return f"seconds the task may run on each host before it counts as TIMEOUT (default {default}; 0: no limit)"


def _limits(parallel, timeout) -> tuple[int, float | None]:
    """The flags as run_fleet takes them: --timeout 0 means no limit."""
    if parallel < 1 or timeout < 0:
        raise Exit("error: --parallel must be at least 1 and --timeout at least 0 (0: no limit)")
    return parallel, (None if timeout == 0 else timeout)


def _pace(parallel, timeout) -> str:
    return f"{parallel} at a time, " + (f"timeout {timeout:g} s each" if timeout else "no timeout")


def _fleet(obs, kinds, argv, verbose, parallel, timeout):
    from crdsops.remote import fleet

    if not obs:
        raise Exit("error: give --obs (e.g. `inv fleet-status --obs hst`)")
    parallel, timeout = _limits(parallel, timeout)
    targets = fleet.fleet_targets(obs, [k for k in (kinds or "").split(",") if k] or None)
    print(f"running `inv {' '.join(argv)}` on {len(targets)} host(s) of {obs}, {_pace(parallel, timeout)} ...",
          flush=True)
    results = fleet.run_fleet(targets, argv, parallel, timeout)
    for res in results:
        print(res.line())
        if verbose and (res.stdout or res.stderr):
            for text in (res.stdout, res.stderr):
                for ln in text.rstrip().splitlines():
                    print(f"    {res.target.name}| {ln}")
    failed = [r for r in results if not r.ok]
    print(f"{len(results) - len(failed)} of {len(results)} host(s) ok"
          + (f"; failed: {', '.join(r.target.name for r in failed)}" if failed else ""))
    if failed:
        raise Exit(code=1)


@ops_task(name="fleet-status", help=dict(
    _HELP, obs="observatory whose servers to reach (default: every observatory with servers on other hosts)",
    json="print JSON (a document with a `schema` version; see README, JSON output)",
    html="also write the fleet as a self-contained HTML page to this file", timeout=_timeout_help(STATUS_TIMEOUT)))
def fleet_status(c, obs=None, kinds=None, verbose=False, json_=False, html=None, parallel=PARALLEL,
                 timeout=STATUS_TIMEOUT):
    """Run `inv status` on every server: state, context, backup age, drift from its mirror source."""
    import datetime
    import json
    from pathlib import Path

    from crdsops.files import write_atomic
    from crdsops.remote import fleet, fleet_page
    from crdsops.timefmt import age_text

    parallel, timeout = _limits(parallel, timeout)
    fleets = {}
    with fleet.Connections(timeout) as hosts:  # a host serving two observatories is logged in to once
        for observatory, targets in _targets_by_observatory(obs, kinds).items():
            if not json_:
                print(f"running `inv status --json` on {len(targets)} host(s) of {observatory}, "
                      f"{_pace(parallel, timeout)} ...", flush=True)
            fleets[observatory] = fleet.fleet_status(observatory, targets, parallel, timeout, hosts)
    states = [s for each in fleets.values() for s in each]
    failed = [s for s in states if s.state in ("DOWN", "FAILED", "TIMEOUT", "UNREACHABLE")]
    warned = [s for s in states if s.state == "WARN"]
    code = 1 if failed else (2 if warned else 0)
    now = datetime.datetime.now(datetime.UTC)
    if html:
        path = Path(html).expanduser().resolve()
        write_atomic(path, fleet_page.render(fleets, now), mode=0o644)
    if json_:
        print(json.dumps({"schema": fleet.SCHEMA, "at": now.isoformat(timespec="seconds"), "exit": code,
                          "servers": [s.as_dict() for s in states]}, indent=2, default=str))
    else:
        for state in states:
            backup = "-" if state.backup_age is None else age_text(state.backup_age) + " ago"
            drift = (f"drift vs {state.source}: {'; '.join(state.drift)}" if state.drift
                     else f"no drift vs {state.source}" if state.source and not state.drift_note
                     else state.drift_note or "-")
            res = state.result
            exit_text = f"exit {res.exited}" if res.exited is not None else "no exit"
            release = state.release.revision[:7] if state.release else "checkout"
            print(f"{state.name:<12} {res.target.where:<22} {state.state:<11} ({exit_text}) "
                  f"context {state.context or '-'}, backup {backup}, {drift}, release {release}"
                  + (f" ({state.release_drift})" if state.release_drift else "")
                  + (f"; {res.summary}" if res.summary and state.state != "ok" else ""))
            if verbose and (res.stdout or res.stderr):
                for text in (res.stdout, res.stderr):
                    for ln in text.rstrip().splitlines():
                        print(f"    {state.name}| {ln}")
        ok = len(states) - len(failed) - len(warned)
        print(f"{ok} of {len(states)} host(s) ok"
              + (f"; warnings: {', '.join(s.name for s in warned)}" if warned else "")
              + (f"; failed: {', '.join(s.name for s in failed)}" if failed else ""))
        if html:
            print(f"page: {path}")
    if code:
        raise Exit(code=code)


def _targets_by_observatory(obs, kinds) -> dict:
    from crdsops.config.installed import configs_here
    from crdsops.config.loader import observatories
    from crdsops.errors import CrdsOpsError
    from crdsops.remote import fleet

    wanted = [k for k in (kinds or "").split(",") if k] or None
    if obs:
        return {obs: fleet.fleet_targets(obs, wanted)}
    found = {}
    for each in observatories(configs_here()):
        try:
            found[each] = fleet.fleet_targets(each, wanted)
        except CrdsOpsError:
            continue  # no servers of it on other hosts (or not of those kinds)
    if not found:
        raise Exit("error: no configured servers on other hosts; nothing to do (give --obs to say which)")
    return found


@ops_task(name="fleet-backup", help=dict(_HELP, dry_run="pass --dry-run to each host's `inv backup`",
                                         timeout=_timeout_help(BACKUP_TIMEOUT)))
def fleet_backup(c, obs=None, kinds=None, verbose=False, dry_run=False, parallel=PARALLEL, timeout=BACKUP_TIMEOUT):
    """Run `inv backup` on every server of an observatory; one line per host."""
    _fleet(obs, kinds, ["backup"] + (["--dry-run"] if dry_run else []), verbose, parallel, timeout)


UPGRADE_TIMEOUT = 1800  # seconds `inv upgrade` (or the gate's `inv runtests`) may take on one host


@ops_task(name="fleet-upgrade", help=dict(
    {k: v for k, v in _HELP.items() if k != "verbose"}, to="the revision every host's checkout upgrades to (a commit, tag or branch its git knows)",
    dry_run="show the rollout (tiers, hosts, gates) and each host's own plan (`inv upgrade --dry-run` there); "
            "change nothing",
    yes="also upgrade the ops tier without asking (otherwise a yes naming the ops hosts is needed)",
    timeout=_timeout_help(UPGRADE_TIMEOUT)))
def fleet_upgrade(c, obs=None, to=None, kinds=None, dry_run=False, yes=False, parallel=PARALLEL,
                  timeout=UPGRADE_TIMEOUT):
    """Upgrade every server of an observatory, dev then test then ops, each tier gated by its runtests."""
    from crdsops.remote import rollout
    from crdsops.runtime.lifecycle import confirm

    if not obs or not to:
        raise Exit("error: give --obs and --to (e.g. `inv fleet-upgrade --obs hst --to v2.1`)")
    parallel, timeout = _limits(parallel, timeout)
    plan = rollout.Rollout(obs, to, rollout.tiers_of(obs, [k for k in (kinds or "").split(",") if k] or None))
    for line in plan.plan_lines():
        print(line)
    if dry_run:
        print(f"each host's own plan, {_pace(parallel, timeout)}:", flush=True)
        if not rollout.probe(plan, parallel, timeout, say=lambda line: print(line, flush=True)):
            raise Exit(f"error: fleet-upgrade --dry-run: {plan.stopped}; nothing changed")
        print("dry run: nothing changed")
        return
    ops = next((t for t in plan.tiers if t.name == "ops"), None)
    if ops is not None and not confirm(f"upgrade the ops tier too: {ops.hosts()}?", bool(yes)):
        plan.tiers.remove(ops)
        print("the ops tier will not be upgraded (no yes; give --yes when running without a terminal)")
    print(f"{_pace(parallel, timeout)}", flush=True)
    if not rollout.roll_out(plan, parallel, timeout, say=lambda line: print(line, flush=True)):
        raise Exit(f"error: fleet-upgrade stopped: {plan.stopped}")
    print(f"fleet-upgrade: {', '.join(t.name for t in plan.tiers)} upgraded to {to}"
          + ("; the ops tier was left as it is" if ops is not None and ops not in plan.tiers else ""))
