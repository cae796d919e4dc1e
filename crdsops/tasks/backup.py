"""Tasks for backups: backup, verify, backups, restore, offsite, schedule.

Defaults (all from the installed server's config, ``backups:`` section): private backups
in ``private_dir`` (``keep`` newest, all younger than ``keep_days``, the newest of each of
the last ``keep_daily`` days, ``keep_weekly`` weeks, ``keep_monthly`` months, at least
``min_keep``, always the newest verified; ``inv backups`` says which rule keeps each), the
shared latest as ``<shared_dir>/<obs>.<kind>``. ``inv restore`` reads the shared latest unless ``--from DATE|PATH|offsite:NAME`` (or
``--to-time``); ``inv offsite`` lists the encrypted off-site copies (``backups.offsite``, off by default); ``inv schedule`` installs the nightly
line at 03:17 unless ``--at HH:MM`` (``--nightly``: the whole nightly job; ``--pause-until TIME``
pauses every cron line of crdsops until then). Changing tasks hold the per-server lock.
"""

from __future__ import annotations

from invoke import Exit

from crdsops.tasks._common import ops_task, say, server

JSON_HELP = "print JSON (a document with a `schema` version; see README, JSON output)"


@ops_task(aliases=["backup-server"], help={"dry_run": "print the plan, change nothing"})
def backup(c, dry_run=False):
    """Back up the installed server: database, support dirs, listings; publish the shared latest."""
    from crdsops.data.backup import Backup
    from crdsops.runtime.lifecycle import drive

    drive(Backup(server()), dry_run=dry_run)


@ops_task(help={
    "backup": "a backup directory, a private backup's date or name, or `shared`; default: all private "
              "ones and the shared latest",
    "quick": "check sizes and sha256 only; skip reading compressed files to their end",
    "json": JSON_HELP,
})
def verify(c, backup=None, quick=False, json_=False):
    """Check backups against their manifests and that their dumps read to the end: `inv verify [-b BACKUP]`."""
    import json

    from crdsops.data import inventory

    cfg = server()
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
        bad += bool(entry.problems)
        if json_:
            continue
        label = f"{entry.where:7} {entry.path}"
        if entry.problems:
            print(f"BAD     {label}")
            for problem in entry.problems:
                print(f"          {problem}")
        else:
            print(f"ok      {label}")
    if json_:
        verdicts = _verdicts(cfg, entries) if not backup else {}  # one backup alone has no retention context
        print(json.dumps({"schema": inventory.SCHEMA, "server": cfg.name, "deep": not quick,
                          "ok": len(entries) - bad, "bad": bad,
                          "backups": [inventory.entry_dict(e, verdict=verdicts.get(e.path)) for e in entries]},
                         indent=2))
    else:
        print(f"{len(entries) - bad} ok, {bad} bad")
    if bad:
        raise Exit(code=1)


@ops_task(help={
    "verify": "verify each backup now instead of showing the last recorded result (exit 1 if any is bad)",
    "json": JSON_HELP,
})
def backups(c, verify=False, json_=False):
    """List private and shared backups: date, size, engine, purpose, verification state."""
    import json

    from crdsops.data import inventory

    cfg = server()
    entries = inventory.all_entries(cfg)
    if verify:
        for entry in entries:
            inventory.verify_entry(cfg, entry)
    bad = [e for e in entries if e.state == "BAD"]
    verdicts = _verdicts(cfg, entries)
    if json_:
        print(json.dumps({"schema": inventory.SCHEMA, "server": cfg.name,
                          "private_dir": str(cfg.backups.private_dir),
                          "shared": str(inventory.shared_latest(cfg)),
                          "backups": [inventory.entry_dict(e, verdict=verdicts.get(e.path)) for e in entries]},
                         indent=2))
    elif not entries:
        print(f"{cfg.name} has no backups yet (private dir {cfg.backups.private_dir})")
    else:
        print(f"{'where':8} {'created (UTC)':26} {'size':>9} {'engine':7} {'purpose':8} {'verified':10} path"
              "  (retention)")
        for entry in entries:
            created = entry.created.isoformat() if entry.created else "?"
            print(f"{entry.where:8} {created:26} {inventory.human(entry.size):>9} {entry.engine:7} "
                  f"{entry.purpose:8} {entry.state:10} {entry.path}{_why(entry, verdicts.get(entry.path))}")
            if entry.problems and entry.state != "ok":
                print(f"{'':8} {entry.problems[0]}")
    if verify and bad:
        raise Exit(f"error: {len(bad)} of {len(entries)} backups failed verification; see above", code=1)


def _verdicts(cfg, entries) -> dict:
    """{path: Verdict} for the private backups among ``entries``: what the next retention does.

    A listing verifies nothing: "newest verified" is the newest recorded as verified (every
    `inv backup` records its own), so a backup never verified yet cannot be it here, where the
    next retention would verify it first; `inv backups --verify` makes the listing exact.
    """
    from crdsops.data import inventory

    private = [e for e in entries if e.where == "private"]
    verdicts = inventory.retention_verdicts(cfg, private, verify=lambda e: e.state == "ok")
    return {v.entry.path: v for v in verdicts}


def _why(entry, verdict) -> str:
    if entry.where != "private":  # the shared latest: replaced by each backup, never by retention
        return ""
    if verdict is None:  # retention cannot date it, so it never removes it: the operator decides
        return "  (retention leaves it: no readable manifest)"
    return f"  (keep: {', '.join(verdict.reasons)})" if verdict.kept else "  (DELETE: no rule keeps it)"


@ops_task(aliases=["restore-server"], help={
    "from": "a date (2026-11-28, the newest of that day), a private backup's name, or a backup directory; "
            "`offsite:NAME` (a backup's name or date, or `latest`) for an encrypted off-site copy; "
            "default: the shared latest",
    "to_time": "'YYYY-MM-DD HH:MM:SS' (UTC) or latest: the newest backup before it, then the archived binlog "
               "events up to it (MySQL with `inv binlog-archive`)",
    "identity": "with --from offsite:NAME: the age private key file that decrypts it (keep it off the server "
                "afterwards)",
    "yes": "do not ask for confirmation",
    "dry_run": "print the plan (the backup is verified for real; an off-site copy is fetched), change nothing",
})
def restore(c, from_=None, to_time=None, identity=None, yes=False, dry_run=False):
    """Restore the installed server from its shared latest backup (or --from, or to a time), with rollback."""
    from pathlib import Path

    from crdsops.data import offsite
    from crdsops.data.restore import Restore
    from crdsops.runtime.lifecycle import drive

    if identity is not None and not offsite.names_copy(from_):
        raise Exit("error: --identity goes with --from offsite:NAME (an encrypted off-site copy)")
    cfg = server()
    with offsite.fetched(cfg):  # the fetched copy is removed however the restore ends
        drive(Restore(cfg, from_, to_time=to_time, identity=Path(identity) if identity else None),
              dry_run=dry_run, yes=yes)
    if identity is not None and not dry_run:
        say(f"remove the identity {identity} from this machine once you are done with it: "
            "the private key does not belong on a server")


@ops_task(help={
    "verify": "ask the remote for each copy's hash again and compare it with what was uploaded "
              "(exit 1 if one differs)",
    "json": JSON_HELP,
})
def offsite(c, verify=False, json_=False):
    """List the encrypted off-site copies of this server's backups (backups.offsite.remote)."""
    import json

    from crdsops.data import offsite as offsite_mod
    from crdsops.data.inventory import human

    cfg = server()
    listed = offsite_mod.copies(cfg, verify=verify)
    bad = [c for c in listed if c.state in ("BAD", "incomplete")]
    if json_:
        print(json.dumps(offsite_mod.document(cfg, listed, verify), indent=2))
    elif not listed:
        print(f"{cfg.name} has no off-site copies in {cfg.backups.offsite.remote} yet")
    else:
        print(f"{'backup':20} {'size':>9} {'uploaded (UTC)':20} {'state':10} object")
        for copy in listed:
            when = copy.sums.uploaded if copy.sums and copy.sums.uploaded else copy.modified
            shown = when.strftime("%Y-%m-%d %H:%M:%S") if when else "?"
            print(f"{copy.backup:20} {human(copy.size):>9} {shown:20} {copy.state:10} {copy.object}")
            for problem in copy.problems:
                print(f"{'':20} {problem}")
    if verify and bad:
        raise Exit(f"error: {len(bad)} of {len(listed)} off-site copies are bad or incomplete; see above", code=1)


@ops_task(help={
    "remove": "remove this server's line instead of installing it (the cache check's, rotation's or nightly's "
              "with their flag)",
    "at": "time of day, HH:MM (default 03:17 for the backup and the nightly job, 04:47 for the cache check, "
          "00:07 for the rotation)",
    "nightly": "the one `inv nightly` line (backup, rotation, clearsessions, cache check, runtests) instead of "
               "the backup's; it replaces this server's separate lines",
    "check_cache": "the nightly cache check's line (`inv check-cache` of a sha1 sample) instead of the backup's",
    "slices": "with --check-cache or --nightly: N, the nights a full sha1 pass is spread over (default 7)",
    "rotate_logs": "the nightly `inv rotate-logs` line (logrotate) instead of the backup's",
    "binlog_archive": "the binlog archive's keep-alive line (every 5 minutes `inv binlog-archive`: MySQL with log_bin) "
                      "instead of the backup's; never paused",
    "pause_until": "make crdsops' cron lines do nothing until TIME (2026-12-24T06:00 local time, or 36h, 3d "
                   "from now); they resume by themselves",
    "resume": "end a pause now",
})
def schedule(c, remove=False, at=None, nightly=False, check_cache=False, slices=7, rotate_logs=False, binlog_archive=False,
             pause_until=None, resume=False):
    """Install (or --remove) the cron line that runs `inv backup` (or --nightly, ...); --pause-until TIME."""
    from crdsops.data.schedule import Schedule, ScheduleOptions
    from crdsops.runtime import cronpause
    from crdsops.runtime.lifecycle import drive

    if pause_until is not None or resume:
        if pause_until is not None and resume or remove or at or nightly or check_cache or rotate_logs or binlog_archive:
            raise Exit("error: --pause-until and --resume go alone")
        until = cronpause.parse_until(pause_until) if pause_until is not None else None
        drive(cronpause.PauseCron(server(), until))
        return
    if nightly + check_cache + rotate_logs + binlog_archive > 1:
        raise Exit("error: give one of --nightly, --check-cache, --rotate-logs, --binlog-archive: one line at a time")
    if binlog_archive and at:
        raise Exit("error: the binlog archive's line runs every 5 minutes; --at does not apply")
    job = ("nightly" if nightly else "check-cache" if check_cache else "rotate-logs" if rotate_logs
           else "binlog-archive" if binlog_archive else "backup")
    drive(Schedule(server(), ScheduleOptions(job, at, int(slices), bool(remove))))


@ops_task(name="binlog-archive", help={
    "status": "say whether it runs and how far behind the server it is; change nothing",
    "stop": "stop the streamer",
})
def binlog_archive(c, status=False, stop=False):
    """Stream the database server's binlogs into <private_dir>/binlogs (start it unless it runs; cron-safe)."""
    from crdsops.data import binlogs

    cfg = server()
    if stop:
        say("stopped the binlog archive" if binlogs.stop(cfg) else "the binlog archive was not running")
        return
    if status:
        pid = binlogs.running_pid(cfg)
        why = binlogs.unavailable(cfg)
        if why:
            raise Exit(f"point-in-time restore unavailable: {why}", code=2)
        say(f"binlog archive {binlogs.archive_dir(cfg)}: " + (f"running (pid {pid}), " if pid else "NOT running, ")
            + binlogs.lag(cfg).describe())
        if pid is None:
            raise Exit(code=2)
        return
    pid, started = binlogs.ensure_running(cfg)
    sealed = binlogs.seal(cfg)
    sent = binlogs.send_offsite(cfg)
    say(f"binlog archive: {'started' if started else 'running'} (pid {pid}); {len(sealed)} closed files listed in "
        f"{binlogs.archive_dir(cfg) / binlogs.SUMS}" + (f"; {len(sent)} copied off-site" if sent else ""))
