"""Tasks for the releases of a server's code: upgrade, rollback, releases, fleet-upgrade.

A release is the checkout at one git revision under ``<root>/releases/``; ``<root>/current``
names the one that serves (README, Upgrades). Defaults: the installed server's; revisions come
from this checkout's git (``upgrade.repository``).
"""

from __future__ import annotations

import json

from crdsops.tasks._common import ops_task, server

JSON_HELP = "print JSON (a document with a `schema` version; see README, JSON output)"


@ops_task(help={
    "to": "the revision: a commit, tag or branch the checkout's git knows (default: HEAD)",
    "allow_destructive": "let a migration drop, alter or rename existing columns or tables (it cannot be rolled back)",
    "dry_run": "print the plan (its read-only checks run for real), change nothing",
    "yes": "do not ask before upgrading",
})
def upgrade(c, to="HEAD", allow_destructive=False, dry_run=False, yes=False):
    """Upgrade the server to a revision: a release beside the serving one, preflighted, switched, rolled back on failure."""
    from crdsops.runtime.lifecycle import drive
    from crdsops.runtime.upgrade import Upgrade

    drive(Upgrade(server(), to=to, allow_destructive=bool(allow_destructive)), dry_run=dry_run, yes=yes)


@ops_task(help={
    "to": "the release to go back to: its name, the end of it, or its revision (default: the one before)",
    "dry_run": "print the plan (its read-only checks run for real), change nothing",
    "yes": "do not ask before rolling back",
})
def rollback(c, to=None, dry_run=False, yes=False):
    """Go back to the previous (or a named) release, preflighted; refused past a migration."""
    from crdsops.runtime.lifecycle import drive
    from crdsops.runtime.upgrade import Rollback

    drive(Rollback(server(), to=to), dry_run=dry_run, yes=yes)


@ops_task(help={"json": JSON_HELP})
def releases(c, json_=False):
    """List the releases: which serves, their revisions, when and by whom each was switched in."""
    from crdsops.data import releaselist

    listing = releaselist.listing(server())
    if json_:
        print(json.dumps(listing.as_dict(), indent=2))
    else:
        print(listing.text())
