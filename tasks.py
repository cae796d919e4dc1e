"""crdsops: operations tasks for CRDS servers. `inv --list` shows them; see README.md.

Composition only: every task lives in a module of crdsops.tasks next to the concern it
drives; here they are gathered at the top level, where the historical names expect them.
"""

import sys

from invoke import Collection

# invoke turns bytecode writing off (a Python 2 habit against a stale tasks.pyc); without it
# every `inv` compiled each crdsops module it imports again (0.15 s of CPU for `inv
# check-cache`). Python's own setting (-B, PYTHONDONTWRITEBYTECODE) still decides.
sys.dont_write_bytecode = sys.flags.dont_write_bytecode

from crdsops.tasks import backup, cache, mirror, release, remote, server, stack, upkeep  # noqa: E402

ns = Collection()
for each in (
    server.config, server.install, server.run, server.stop, server.rerun, server.status, server.metrics, server.history,
    server.manage, server.runtests, server.maintenance,
    release.upgrade, release.rollback, release.releases,
    stack.build, stack.lock,
    backup.backup, backup.verify, backup.backups, backup.restore, backup.offsite, backup.schedule, backup.binlog_archive,
    mirror.mirror,
    cache.check_cache,
    remote.fleet_status, remote.fleet_backup, remote.fleet_upgrade,
    upkeep.boot, upkeep.rotate_logs, upkeep.nightly,
):
    ns.add_task(each)
