"""``inv check-cache``: find, and with ``--repair`` fix, what the catalog and the file cache disagree on.

Defaults: quick mode (presence and size of every catalog file, sha1 of the mappings, orphans,
deliveries' links; rejected and blacklisted files present are noted, and fail only with
``--strict``); ``--sha1`` hashes every file in ``--jobs`` threads (default: the CPUs, at least
2), a progress bar on a terminal only. Orphans are quarantined under ``<cache>/quarantine/``,
capped at 10% of the cache's files (at least 100) unless ``--max-quarantine``. The result is
recorded for ``inv status``. Holds the server lock. Exit 0 clean, 1 problems (or refused).
"""

from __future__ import annotations

from invoke import Exit

from crdsops.tasks._common import ops_task, say, server


@ops_task(auto_shortflags=False, help={
    "sha1": "also read every file and compare its sha1 with the catalog's (parallel threads)",
    "sample": "with --sha1: hash only slice K of N (K/N, e.g. 3/7), or auto/N (the slice of today: N nights "
              "cover every file once; `auto` is auto/7)",
    "resume": "with --sha1: continue the pass that was interrupted (its progress is under <root>/state)",
    "repair": "fetch missing and damaged files again from --src, move orphans to a dated quarantine",
    "src": "with --repair: the kind of the server to fetch files from (same observatory, e.g. test)",
    "src_host": "with --repair: that server's SSH host (default: its config's host)",
    "max_quarantine": "most orphans --repair may move (default 10% of the cache's files, at least 100)",
    "dry_run": "with --repair: check for real, print what would be fetched and moved; change nothing",
    "strict": "rejected or blacklisted files still in the cache count as problems",
    "jobs": "threads hashing files (default: the CPUs, at least 2)",
    "json": "print JSON (schema 1: counts, problems, notes, repair)",
})
def check_cache(c, sha1=False, sample=None, resume=False, repair=False, src=None, src_host=None, max_quarantine=None,
                dry_run=False, strict=False, jobs=None, json_=False):
    """Check the file cache against the catalog (sizes; --sha1 hashes); --repair fixes what it finds."""
    import contextlib
    import json

    from crdsops import output
    from crdsops.data.cachecheck import CheckOptions, Sample
    from crdsops.remote.cacherepair import CheckCache, RepairOptions
    from crdsops.runtime.lifecycle import drive

    if (src or dry_run or max_quarantine is not None) and not repair:
        raise Exit("error: --src, --dry-run and --max-quarantine go with --repair")
    cfg = server()
    options = CheckOptions(bool(sha1), Sample.parse(sample) if sample else None, bool(resume), bool(strict),
                           int(jobs) if jobs else None, progress=not json_)
    fixes = RepairOptions(src, src_host, None if max_quarantine is None else int(max_quarantine)) if repair else None
    op = CheckCache(cfg, options, fixes)
    with output.info_to_stderr() if json_ else contextlib.nullcontext():
        drive(op, dry_run=dry_run)
    report = op.facts.report
    if json_:
        print(json.dumps(dict(report.as_dict(), repair=op.document(dry_run)), indent=2))
    else:
        for problem in report.failing + ([] if strict else report.notes):
            say(problem.line(cfg.observatory) + ("" if problem in report.failing else "  [note]"))
        say(f"check-cache {cfg.name}: {report.summary()}")
    if not report.ok:
        raise Exit(code=1)
