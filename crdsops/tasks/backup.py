"""Tasks for backups: backup, verify, backups, restore, schedule.

Defaults (all from the installed server's config, ``backups:`` section): private backups
in ``private_dir`` (``keep`` newest, all younger than ``keep_days``, at least
``min_keep``), the shared latest as ``<shared_dir>/<obs>.<kind>``. ``inv restore`` reads
the shared latest unless ``--from DATE|PATH``; ``inv schedule`` installs the nightly
line at 03:17 unless ``--at HH:MM``. Changing tasks hold the per-server lock.
"""

from __future__ import annotations

from invoke import Exit

from crdsops.tasks._common import confirm, installed_config, ops_task


@ops_task(aliases=["backup-server"], help={"dry_run": "print the plan, change nothing"})
def backup(c, dry_run=False):
    """Back up the installed server: database, support dirs, listings; publish the shared latest."""
    from crdsops.data import backup as lib
    from crdsops.runtime.lock import server_lock

    cfg = installed_config()
    if dry_run:
        lib.plan(cfg).show()
        return
    with server_lock(cfg, "backup"):
        lib.create(cfg)


@ops_task(help={
    "backup": "a backup directory, a private backup's date or name, or `shared`; default: all private "
              "ones and the shared latest",
    "quick": "check sizes and sha256 only; skip reading compressed files to their end",
})
def verify(c, backup=None, quick=False):
    """Check backups against their manifests and that their dumps read to the end: `inv verify [-b BACKUP]`."""
    from crdsops.data import inventory

    cfg = installed_config()
    if backup:
        path = inventory.find(cfg, None if backup == "shared" else backup)
        entries = [inventory.entry_of(path, "shared" if backup == "shared" else "given")]
    else:
        entries = inventory.all_entries(cfg)
    if not entries:
        raise Exit(f"error: {cfg.name} has no backups yet (in {cfg.backups.private_dir}); run `inv backup`")
    bad = 0
    for entry in entries:
        inventory.verify_entry(cfg, entry, deep=not quick)
        label = f"{entry.where:7} {entry.path}"
        if entry.problems:
            bad += 1
            print(f"BAD     {label}")
            for problem in entry.problems:
                print(f"          {problem}")
        else:
            print(f"ok      {label}")
    print(f"{len(entries) - bad} ok, {bad} bad")
    if bad:
        raise Exit(code=1)


@ops_task(help={"verify": "verify each backup now instead of showing the last recorded result (exit 1 if any is bad)"})
def backups(c, verify=False):
    """List private and shared backups: date, size, engine, purpose, verification state."""
    from crdsops.data import inventory

    cfg = installed_config()
    entries = inventory.all_entries(cfg)
    if not entries:
        print(f"{cfg.name} has no backups yet (private dir {cfg.backups.private_dir})")
        return
    print(f"{'where':8} {'created (UTC)':26} {'size':>9} {'engine':7} {'purpose':8} {'verified':10} path")
    for entry in entries:
        if verify:
            inventory.verify_entry(cfg, entry)
        created = entry.created.isoformat() if entry.created else "?"
        print(f"{entry.where:8} {created:26} {inventory.human(entry.size):>9} {entry.engine:7} {entry.purpose:8} "
              f"{entry.state:10} {entry.path}")
        if entry.problems and entry.state != "ok":
            print(f"{'':8} {entry.problems[0]}")
    bad = [e for e in entries if e.state == "BAD"]
    if verify and bad:
        raise Exit(f"error: {len(bad)} of {len(entries)} backups failed verification; see above", code=1)


@ops_task(aliases=["restore-server"], help={
    "from": "a date (2026-11-28, the newest of that day), a private backup's name, or a backup directory; "
            "default: the shared latest",
    "yes": "do not ask for confirmation",
    "dry_run": "print the plan (the backup is verified for real), change nothing",
})
def restore(c, from_=None, yes=False, dry_run=False):
    """Restore the installed server from its shared latest backup (or --from), with rollback."""
    from crdsops.data import inventory
    from crdsops.data.restore import RestoreRun
    from crdsops.runtime.lock import server_lock

    cfg = installed_config()
    source = inventory.find(cfg, from_)
    with server_lock(cfg, "restore"):
        steps = RestoreRun(cfg, source).plan()
        steps.show()
        if steps.problems:
            raise Exit(f"error: refusing backup {source}: {'; '.join(steps.problems[:3])}; nothing was changed")
        if dry_run:
            return
        if not confirm(f"replace {cfg.name}'s database and support directories with this backup?", yes):
            raise Exit("error: not confirmed; nothing was changed (use --yes when running without a terminal)")
        steps.run()


@ops_task(help={
    "remove": "remove this server's backup line instead of installing it",
    "at": "time of day for the nightly backup, HH:MM (default 03:17)",
})
def schedule(c, remove=False, at="03:17"):
    """Install (or --remove) the nightly cron line that runs `inv backup` for this server."""
    from crdsops.data import schedule as lib

    cfg = installed_config()
    if remove:
        gone = lib.remove(cfg)
        print(f"removed: {gone[0]}" if gone else f"no backup line for {cfg.name} in the crontab; nothing to do")
        return
    line, changed = lib.install(cfg, at)
    print(("installed: " if changed else "already installed: ") + line)
