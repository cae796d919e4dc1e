"""crdsops: operations tasks for CRDS servers. `inv --list` shows them; see README.md.

Composition only: every task lives in a module of crdsops.tasks next to the concern it
drives; here they are gathered at the top level, where the historical names expect them.
"""

from invoke import Collection

from crdsops.tasks import server

ns = Collection()
for each in (server.config, server.install, server.run, server.stop, server.rerun,
             server.status, server.manage, server.runtests):
    ns.add_task(each)

from crdsops.tasks import remote

for each in (remote.fleet_status, remote.fleet_backup):
    ns.add_task(each)

from crdsops.tasks import stack

for each in (stack.build, stack.lock):
    ns.add_task(each)

from crdsops.tasks import mirror

ns.add_task(mirror.mirror)

from crdsops.tasks import backup

for each in (backup.backup, backup.verify, backup.backups, backup.restore, backup.schedule):
    ns.add_task(each)
