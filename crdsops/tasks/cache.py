"""``inv check-cache``: find, and with ``--repair`` fix, what the catalog and the file cache disagree on.

Defaults: quick mode (presence and size of every catalog file, sha1 of the mappings, orphans,
deliveries' links; rejected and blacklisted files present are noted, and fail only with
``--strict``); ``--sha1`` hashes every file in ``--jobs`` threads (default: the CPUs, at least
2), a progress bar on a terminal only. Orphans are quarantined under ``<cache>/quarantine/``,
capped at 10% of the cache's files (at least 100) unless ``--max-quarantine``. The result is
recorded for ``inv status``. Holds the server lock. Exit 0 clean, 1 problems (or refused).
"""

from __future__ import annotations

import sys

from invoke import Exit

from crdsops.tasks._common import installed_config, ops_task, touched


def _progress_bar(bars: list):
    """A tqdm bar (files, bytes, rate, ETA) on stderr when it is a terminal; else None."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # the stack without tqdm: quiet, as off a terminal
        return None

    def start(total_files: int, total_bytes: int):
        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc="sha1",
                   file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
        bars.append(bar)
        done = [0]

        def update(files: int, nbytes: int) -> None:
            done[0] += files
            bar.set_postfix_str(f"{done[0]}/{total_files} files", refresh=False)
            bar.update(nbytes)

        return update

    return start


@ops_task(changing="repair", notifying=True, auto_shortflags=False, help={
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
    import json
    import time

    from crdsops.data import cachecheck as lib
    from crdsops.runtime import results
    from crdsops.runtime.lock import server_lock

    cfg = installed_config()
    if (sample or resume) and not sha1:
        raise Exit("error: --sample and --resume go with --sha1 (quick mode reads no file contents)")
    if (src or dry_run or max_quarantine is not None) and not repair:
        raise Exit("error: --src, --dry-run and --max-quarantine go with --repair")
    slice_ = lib.Sample.parse(sample) if sample else None
    mode = "sizes" if not sha1 else ("sha1" if slice_ is None else f"sha1 sample {slice_}")
    bars: list = []
    start = time.monotonic()
    say = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if json_ else print
    with server_lock(cfg, "check-cache"):
        try:
            report = lib.check(cfg, sha1=sha1, sample=slice_, resume=resume, strict=strict,
                               workers=int(jobs) if jobs else None,
                               progress=None if json_ else _progress_bar(bars), say=say)
        except lib.CacheUnavailable as err:
            results.write(cfg.layout, "check-cache", False, time.monotonic() - start, mode=mode, error=str(err))
            raise
        finally:
            for bar in bars:
                bar.close()
        repaired = _repair(cfg, report, src, src_host, max_quarantine, dry_run, say) if repair else None
        if not (repair and dry_run):
            results.write(cfg.layout, "check-cache", report.ok, report.seconds, **report.record())
    if json_:
        print(json.dumps(dict(report.as_dict(), repair=repaired), indent=2))
    else:
        for problem in report.failing + ([] if strict else report.notes):
            print(problem.line(cfg.observatory) + ("" if problem in report.failing else "  [note]"))
        print(f"check-cache {cfg.name}: {report.summary()}")
    if not report.ok:
        raise Exit(code=1)


def _repair(cfg, report, src, src_host, max_quarantine, dry_run, say) -> dict:
    """Fetch what is missing or damaged, quarantine orphans; update ``report`` to what is left."""
    from crdsops.data import cachecheck as lib
    from crdsops.errors import CrdsOpsError
    from crdsops.remote import cacherepair

    fetch = [p for p in report.failing if p.kind in lib.REPAIRABLE and p.tree in lib.TREES]
    orphans = [p for p in report.problems if p.kind == "orphan" and p.tree in lib.TREES]
    if fetch and not src:
        raise CrdsOpsError(f"{len(fetch)} file(s) need fetching again; name the server to fetch them from with "
                           "--src KIND (e.g. --src test); nothing was changed")
    source = cacherepair.source(cfg, src, src_host, say=say) if fetch else None
    cap = None if max_quarantine is None else int(max_quarantine)
    where, moving = lib.quarantine(cfg, orphans, max_move=cap, dry_run=True, catalog_files=report.catalog_files)
    verb = "would " if dry_run else ""
    for p in fetch:
        say(f"{verb}fetch {p.tree}/{cfg.observatory}/{p.name} from {source.config.name} ({p.kind})")
    for p, dst in zip(orphans, moving, strict=True):
        say(f"{verb}move orphan {p.tree}/{cfg.observatory}/{p.name} to {dst}")
    if dry_run:
        say("dry run: nothing changed")
        return {"dry_run": True, "fetch": [p.name for p in fetch], "quarantine": [str(d) for d in moving]}
    moved = []
    if orphans:
        _where, moved = lib.quarantine(cfg, orphans, max_move=cap, catalog_files=report.catalog_files, say=say)
        touched(quarantine=where, quarantined=len(moved))
    still: list = []
    if fetch:
        touched(source=source.config.name, source_host=source.target.where)
        cacherepair.fetch(cfg, source, [(p.tree, p.name) for p in fetch], say=say)
        still = lib.recheck(cfg, [(p.tree, p.name) for p in fetch])
        touched(fetched=len(fetch) - len(still))
        for p in still:
            say(f"still bad after the fetch from {source.config.name}: {p.line(cfg.observatory)}")
    done = {(p.kind, p.tree, p.name) for p in fetch + orphans}
    report.problems = [p for p in report.problems if (p.kind, p.tree, p.name) not in done] + still
    if report.strict:
        report.notes = [p for p in report.notes if (p.kind, p.tree, p.name) not in done]
    say(f"repaired: {len(fetch) - len(still)} fetched, {len(moved)} orphan(s) quarantined"
        + (f", {len(still)} still bad" if still else ""))
    return {"dry_run": False, "fetched": [p.name for p in fetch if p not in still],
            "still_bad": [p.as_dict() for p in still], "quarantine": str(where) if moved else None,
            "quarantined": [str(d) for d in moved]}


def end_check(cfg, after: str, staged=None) -> None:
    """The quick check that ``inv mirror`` and ``inv restore`` end with: reported and recorded, never fatal.

    ``staged``: the check a restore already ran on the state it swapped in (a Report, or the
    error it raised); None runs it now.
    """
    import time

    from crdsops.data import cachecheck as lib
    from crdsops.errors import CrdsOpsError
    from crdsops.runtime import results

    start = time.monotonic()
    try:
        if isinstance(staged, BaseException):
            raise staged
        report = staged if staged is not None else lib.check(cfg)
    except CrdsOpsError as err:
        results.write(cfg.layout, "check-cache", False, time.monotonic() - start, mode="sizes", error=str(err))
        print(f"warning: the cache check after the {after} could not run: {err}", file=sys.stderr)
        return
    results.write(cfg.layout, "check-cache", report.ok, report.seconds, **report.record())
    if report.ok:
        print(f"cache check after the {after}: {report.summary()}")
        return
    for problem in report.failing[:20]:
        print(f"  {problem.line(cfg.observatory)}")
    more = " (first 20 shown; `inv check-cache` lists all)" if len(report.failing) > 20 else ""
    print(f"warning: cache check after the {after}: {report.summary()}{more}; the {after} itself is not rolled "
          "back; fix with `inv check-cache --repair --src KIND`", file=sys.stderr)
