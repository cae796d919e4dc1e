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

from crdsops.tasks._common import ops_task, server


@ops_task(aliases=("mirror-server",), help={
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
    from crdsops.remote.mirror import Mirror, MirrorOptions
    from crdsops.runtime.lifecycle import drive

    options = MirrorOptions(obs, src, src_url, src_host, bool(allow_upward),
                            None if max_delete is None else int(max_delete), bool(fresh_backup), bool(full_sync),
                            str(bwlimit) if bwlimit else None)
    drive(Mirror(server(), options), dry_run=dry_run, yes=yes)
