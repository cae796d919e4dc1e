"""Tasks for a server that looks after itself: boot (start at boot), rotate-logs, nightly.

Defaults: the installed server's. ``inv boot enable`` uses the systemd unit ``inv install`` wrote
(``<root>/crds-<obs>-<kind>.service``) where systemd runs, else an ``@reboot`` crontab line;
``inv rotate-logs`` runs logrotate on ``<root>/logrotate.conf`` (``logs.keep_days`` days kept),
the logs that are due unless ``--force``; ``inv schedule --rotate-logs`` runs it nightly.
``inv nightly`` runs backup, rotate-logs, clearsessions, the cache check's sha1 slice (``--slices``
7: a full pass a week) and runtests on the tiers in ``nightly.runtests_tiers`` (dev, test);
``inv schedule --nightly`` installs its cron line (03:17).
"""

from __future__ import annotations

from invoke import Exit

from crdsops.tasks._common import ops_task, say, server


@ops_task(positional=["action"], help={
    "action": "enable, disable, or status (say whether it is enabled and how)",
    "dry_run": "print the plan (its read-only checks run for real), change nothing",
})
def boot(c, action, dry_run=False):
    """Start the server when the machine boots: a systemd unit, or an @reboot cron line without systemd."""
    from crdsops.data import boot as start_at_boot
    from crdsops.runtime.lifecycle import drive

    cfg = server()
    if action == "status":
        say(start_at_boot.describe(cfg, start_at_boot.probe(cfg)))
        return
    if action not in ("enable", "disable"):
        raise Exit(f"error: `inv boot {action}`: say enable, disable or status")
    drive(start_at_boot.Boot(cfg, enable=action == "enable"), dry_run=dry_run)


@ops_task(name="rotate-logs", help={
    "force": "rotate every log now, not only those due (logrotate --force)",
    "dry_run": "print the plan, change nothing",
})
def rotate_logs(c, force=False, dry_run=False):
    """Rotate the server's logs with logrotate (compressed, dated; the audit log is never rotated)."""
    from crdsops.runtime.lifecycle import drive
    from crdsops.runtime.logrotation import RotateLogs

    drive(RotateLogs(server(), force=bool(force)), dry_run=dry_run)


@ops_task(help={
    "slices": "the nights a full sha1 pass of the cache is spread over (default 7: tonight's slice is checked)",
    "dry_run": "print the steps, and which are skipped on this tier; change nothing",
})
def nightly(c, slices=7, dry_run=False):
    """Run the nightly job: backup, rotate-logs, clearsessions, a cache-check slice, runtests (dev, test)."""
    from crdsops.data.nightly import Nightly
    from crdsops.runtime.lifecycle import drive

    drive(Nightly(server(), slices=int(slices)), dry_run=dry_run)
