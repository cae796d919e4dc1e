"""Fleet tasks: one ``inv`` task on every server of an observatory, in parallel over SSH.

Defaults: the fleet of ``--obs`` is every configured server of that observatory whose
``host`` is another machine; ``--kinds`` narrows it. Connection settings come from each
server's ``ssh`` section (then ~/.ssh/config); host keys are checked against
``ssh.known_hosts`` and unknown or changed keys are refused. One line per host; the exit
code is 0 only when every host succeeded.
"""

from __future__ import annotations

from invoke import Exit

from crdsops.tasks._common import ops_task

_HELP = {
    "obs": "observatory whose servers to reach (hst, jwst, ...)",
    "kinds": "comma-separated kinds to include (default: every server on another host)",
    "verbose": "also print each host's full output",
}


def _fleet(obs, kinds, argv, verbose):
    from crdsops.remote import fleet

    if not obs:
        raise Exit("error: give --obs (e.g. `inv fleet-status --obs hst`)")
    targets = fleet.fleet_targets(obs, [k for k in (kinds or "").split(",") if k] or None)
    print(f"running `inv {' '.join(argv)}` on {len(targets)} host(s) of {obs} ...", flush=True)
    results = fleet.run_fleet(targets, argv)
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


@ops_task(name="fleet-status", help=_HELP)
def fleet_status(c, obs=None, kinds=None, verbose=False):
    """Run `inv status` on every server of an observatory; one line per host."""
    _fleet(obs, kinds, ["status"], verbose)


@ops_task(name="fleet-backup", help=dict(_HELP, dry_run="pass --dry-run to each host's `inv backup`"))
def fleet_backup(c, obs=None, kinds=None, verbose=False, dry_run=False):
    """Run `inv backup` on every server of an observatory; one line per host."""
    _fleet(obs, kinds, ["backup"] + (["--dry-run"] if dry_run else []), verbose)
