"""``inv mirror``: make this server a copy of a higher-tier server of the same observatory.

Defaults: the source's SSH settings (host, user, port, key, known_hosts, checkout) and
URL come from its config (``configs/<obs>/<src>.yaml``); ``--src-url``/``--src-host``
override them. Deletions in the file cache are capped at 10% of its files (at least 100)
unless ``--max-delete`` says otherwise. The cache is synced by the source backup's listing
(only what changed is fetched) unless ``--full-sync``; ``--bwlimit`` caps rsync's
bandwidth. The source's latest shared backup is mirrored as it is (the plan says when the
source changed since) unless ``--fresh-backup`` backs the source up first.
See crdsops.remote.mirror for the steps.
"""

from __future__ import annotations

from invoke import Exit

from crdsops.tasks._common import confirm, installed_config, ops_task, touched
from crdsops.tasks.cache import end_check


@ops_task(aliases=("mirror-server",), changing=True, notifying=True, help={
    "obs": "observatory of the source; must be this server's",
    "src": "kind of the source server (a higher tier: ops > test > dev > django)",
    "src_url": "the source's URL (default: its config's url)",
    "src_host": "the source's SSH host (default: its config's host)",
    "dry_run": "print the plan after running every read-only probe; change nothing",
    "yes": "do not ask for confirmation",
    "allow_upward": "allow the rare upward mirror (lower tier to higher); still asks to confirm",
    "max_delete": "most cache files the mirror may delete (default 10% of the cache, at least 100)",
    "fresh_backup": "run `inv backup` on the source over SSH first, then mirror that backup (its current state)",
    "full_sync": "sync the cache with one full rsync pass over both trees, not by the backup's listing",
    "bwlimit": "rsync's bandwidth limit for the cache sync, in KB/s (e.g. 20000) or with a unit (20m)",
})
def mirror(c, obs=None, src=None, src_url=None, src_host=None, dry_run=False, yes=False,
           allow_upward=False, max_delete=None, fresh_backup=False, full_sync=False, bwlimit=None):
    """Mirror a higher-tier server of this observatory onto this one (database, support files, cache)."""
    from crdsops.remote import mirror as m
    from crdsops.runtime.lock import server_lock

    dest = installed_config()
    if not obs or not src:
        raise Exit("error: give --obs and --src (e.g. `inv mirror --obs hst --src test`)")
    source = m.source_config(dest, obs, src)
    touched(source=source.name)
    upward = m.check_direction(dest, source, allow_upward)  # refuse before any connection
    with server_lock(dest, "mirror"):  # held from the probes to the last deletion
        run = m.probe(dest, source, src_url, src_host, upward)
        run.full_sync, run.bwlimit = bool(full_sync), (str(bwlimit) if bwlimit else None)
        run.fresh_backup = bool(fresh_backup)
        touched(source_host=run.target.where, source_url=run.src_url, backup=run.backup_remote,
                backup_created=run.manifest.created if run.manifest else None)
        steps = run.plan()
        steps.show()
        if dry_run:
            print("dry run: nothing changed")
            return
        if upward and not confirm(f"UPWARD mirror {source.name} -> {dest.name}: are you sure?", False):
            raise Exit("error: upward mirror not confirmed (it needs an interactive yes); nothing changed")
        if not confirm(f"replace {dest.name}'s database, support files and cache with {source.name}'s?", yes):
            raise Exit("error: not confirmed (use --yes to skip the question); nothing changed")
        run.max_delete = None if max_delete is None else int(max_delete)
        try:
            steps.run()
        finally:
            if run.staged is not None:
                touched(safety_backup=run.staged.safety)
            if run.fresh_backup and run.manifest is not None:  # the backup made now, not the one probed
                touched(backup=run.backup_remote, backup_created=run.manifest.created)
        print(f"mirror {source.name} -> {dest.name}: done")
        end_check(dest, "mirror")
