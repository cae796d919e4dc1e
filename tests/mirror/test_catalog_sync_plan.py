"""The catalog-driven sync's plan: what a listing and a stat of this cache say to fetch and delete."""

from __future__ import annotations

import datetime
import os

import pytest

from crdsops import progress
from crdsops.data.manifest import DatabaseDump, FileEntry, Manifest, ServerIdentity
from crdsops.files import digest
from crdsops.remote import catalog_sync


def _listing(path, files: dict[str, tuple[int, int]]):
    lines = ["# name\tsize\tmtime_ns\tsha1"] + [f"{n}\t{s}\t{m}\tabc" for n, (s, m) in sorted(files.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _file(path, size, mtime_s):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (mtime_s, mtime_s))


def test_plan_fetches_new_and_changed_and_lists_extraneous(tmp_path):
    root = tmp_path / "cache"
    tree = root / "references" / "hst"
    _file(tree / "same.fits", 10, 1_700_000_000)
    _file(tree / "resized.fits", 10, 1_700_000_000)
    _file(tree / "touched.fits", 10, 1_700_000_000)
    _file(tree / "gone.fits", 5, 1_700_000_000)
    _file(tree / catalog_sync.PARTIAL_DIR / "half.fits", 3, 1_700_000_000)  # rsync's: neither fetched nor deleted
    listing = _listing(tmp_path / "refs.tsv", {
        "same.fits": (10, 1_700_000_000 * 10**9 + 5),  # same second: unchanged
        "resized.fits": (11, 1_700_000_000 * 10**9),
        "touched.fits": (10, 1_700_000_100 * 10**9),
        "new.fits": (7, 1_700_000_000 * 10**9),
    })
    plan = catalog_sync.plan_sync(root, {"references/hst": listing}, tmp_path / "work" / "cache.files-from")
    wanted = (tmp_path / "work" / "cache.files-from").read_text().split("\0")
    assert sorted(filter(None, wanted)) == ["references/hst/new.fits", "references/hst/resized.fits",
                                            "references/hst/touched.fits"]
    assert plan.fetch == 3 and plan.fetch_bytes == 28
    assert plan.extraneous() == [tree / "gone.fits"]
    assert plan.counts == {"references/hst": 4} and plan.here == 4


def test_deletions_are_capped_and_refused_from_an_empty_listing(tmp_path):
    root = tmp_path / "cache"
    for i in range(5):
        _file(root / "references" / "hst" / f"f{i}.fits", 1, 1_700_000_000)
    empty = _listing(tmp_path / "empty.tsv", {})
    plan = catalog_sync.plan_sync(root, {"references/hst": empty}, tmp_path / "ff")
    with pytest.raises(Exception, match="looks empty or unmounted"):
        plan.delete_extraneous(must_have=("references/hst",))
    one = _listing(tmp_path / "one.tsv", {"f0.fits": (1, 1_700_000_000 * 10**9)})
    plan = catalog_sync.plan_sync(root, {"references/hst": one}, tmp_path / "ff")
    with pytest.raises(Exception, match="more than the cap of 2"):
        plan.delete_extraneous(max_delete=2, must_have=("references/hst",))
    assert len(list((root / "references" / "hst").iterdir())) == 5
    assert len(plan.delete_extraneous(max_delete=4)) == 4


def test_a_listing_that_does_not_match_the_verified_manifest_is_refused(tmp_path):
    listing = _listing(tmp_path / "listings" / "references.tsv" if (tmp_path / "listings").mkdir() is None else None,
                       {"a.fits": (1, 0)})
    rel = "listings/references.tsv"
    manifest = Manifest(ServerIdentity("hst", "test", "h", "u"), datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC), "x",
                        DatabaseDump("sqlite", "database.sqlite3.zst"),
                        files={rel: FileEntry(listing.stat().st_size, digest(listing))})
    assert catalog_sync.trusted_listing(tmp_path, manifest, rel) == listing
    assert catalog_sync.trusted_listing(tmp_path, manifest, "listings/pickles.tsv") is None  # older backup
    listing.write_text(listing.read_text().replace("a.fits", "b.fits"))
    with pytest.raises(catalog_sync.ListingRefused, match="does not match the verified manifest"):
        catalog_sync.trusted_listing(tmp_path, manifest, rel)


def test_rsync_argv_resumes_and_limits_bandwidth(tmp_path):
    from crdsops.remote.ssh import Target

    target = Target(host="127.0.0.2", user="root", port=2222)
    argv = catalog_sync.listed_argv(target, "/data/cache", tmp_path, tmp_path / "ff", bwlimit="2000")
    assert f"--partial-dir={catalog_sync.PARTIAL_DIR}" in argv and "--bwlimit=2000" in argv
    assert f"--files-from={tmp_path / 'ff'}" in argv and "--from0" in argv and "--ignore-missing-args" in argv
    assert argv[-2:] == ["127.0.0.2:/data/cache/", f"{tmp_path}/"]
    assert "--delete" not in argv  # deletions are held back and capped (delete_extraneous)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress.terminal_bar(100, "cache: 1 files") is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = progress.terminal_bar(100, "cache: 1 files")
    assert bar is not None and bar.total == 100
    bar.close()


def _apply(root, plan, listing_files):
    """Do what rsync -a would for ``plan``'s fetch list: each file here with its listed size and mtime."""
    names = filter(None, plan.files_from.read_text().split("\0"))
    for name in names:
        tree, _, rel = name.partition("/hst/")
        size, mtime_ns = listing_files[rel]
        _file(root / (tree + "/hst") / rel, size, mtime_ns // 10**9)
    plan.complete = True


def test_a_finished_sync_is_the_next_plan_s_record_until_this_cache_changes(tmp_path):
    root, work = tmp_path / "cache", tmp_path / "work"
    tree = root / "references" / "hst"
    first = {f"f{i}.fits": (10, 1_700_000_000 * 10**9) for i in range(6)}
    plan = catalog_sync.plan_sync(root, {"references/hst": _listing(tmp_path / "l1.tsv", first)},
                                  work / "ff", catalog_sync.SyncRecord(work, "cache"))
    assert plan.fetch == 6 and plan.shortcut == []
    _apply(root, plan, first)
    plan.delete_extraneous()

    # the same listing again: planned from the record, nothing to do, no file stat'ed
    plan = catalog_sync.plan_sync(root, {"references/hst": _listing(tmp_path / "l2.tsv", first)},
                                  work / "ff", catalog_sync.SyncRecord(work, "cache"))
    assert plan.shortcut == ["references/hst"] and plan.fetch == 0 and plan.extraneous() == []
    assert plan.counts == {"references/hst": 6}
    _apply(root, plan, first)
    plan.delete_extraneous()

    # the source changed one file and lost another: only the difference of the listings
    second = dict(first, **{"f1.fits": (12, 1_700_000_100 * 10**9), "new.fits": (3, 1_700_000_000 * 10**9)})
    del second["f2.fits"]
    plan = catalog_sync.plan_sync(root, {"references/hst": _listing(tmp_path / "l3.tsv", second)},
                                  work / "ff", catalog_sync.SyncRecord(work, "cache"))
    assert plan.shortcut == ["references/hst"]
    assert sorted(filter(None, plan.files_from.read_text().split("\0"))) == [
        "references/hst/f1.fits", "references/hst/new.fits"]
    assert plan.extraneous() == [tree / "f2.fits"]
    # interrupted here (no deletions done): the record is gone, the next plan walks the cache
    assert catalog_sync.SyncRecord(work, "cache").state == {}
    plan = catalog_sync.plan_sync(root, {"references/hst": tmp_path / "l3.tsv"}, work / "ff",
                                  catalog_sync.SyncRecord(work, "cache"))
    assert plan.shortcut == [] and plan.fetch == 2
    _apply(root, plan, second)
    plan.delete_extraneous()

    # a file added here since (an ingest, a repair): its directory's mtime changed, so a full stat pass
    _file(tree / "local.fits", 4, 1_700_000_000)
    plan = catalog_sync.plan_sync(root, {"references/hst": tmp_path / "l3.tsv"}, work / "ff",
                                  catalog_sync.SyncRecord(work, "cache"))
    assert plan.shortcut == [] and plan.fetch == 0 and plan.extraneous() == [tree / "local.fits"]


def test_no_record_when_a_fetched_file_did_not_arrive(tmp_path):
    root, work = tmp_path / "cache", tmp_path / "work"
    files = {"a.fits": (10, 1_700_000_000 * 10**9), "lost.fits": (10, 1_700_000_000 * 10**9)}
    listing = _listing(tmp_path / "l.tsv", files)
    plan = catalog_sync.plan_sync(root, {"references/hst": listing}, work / "ff", catalog_sync.SyncRecord(work, "cache"))
    _file(root / "references" / "hst" / "a.fits", 10, 1_700_000_000)  # the source lost lost.fits since its backup
    plan.complete = catalog_sync._all_here(root, plan.files_from)
    plan.delete_extraneous()
    assert plan.complete is False and catalog_sync.SyncRecord(work, "cache").state == {}
    plan = catalog_sync.plan_sync(root, {"references/hst": listing}, work / "ff", catalog_sync.SyncRecord(work, "cache"))
    assert plan.shortcut == [] and plan.fetch == 1  # asked for again


def test_the_merge_of_sorted_listings_finds_what_set_differences_find(tmp_path):
    import random

    rng = random.Random(5)
    old = {f"f{i:05d}.fits": (rng.randint(1, 99), 1_700_000_000 * 10**9) for i in range(3000)}
    new = {k: v for k, v in old.items() if rng.random() > 0.01}  # some gone
    for k in rng.sample(sorted(new), 30):
        new[k] = (new[k][0] + 1, new[k][1])  # some changed
    new.update({f"g{i}.fits": (5, 1_700_000_000 * 10**9) for i in range(7)})  # some new, after every old name
    new.update({f"a{i}.fits": (5, 1_700_000_000 * 10**9) for i in range(3)})  # and before
    a, b = _listing(tmp_path / "new.tsv", new), _listing(tmp_path / "old.tsv", old)
    counts, fetch, gone = catalog_sync._merged_difference(a, b)
    s_counts, s_fetch, s_gone = catalog_sync._set_difference(a, b)
    assert tuple(counts) == s_counts == (len(new), len(old))
    assert sorted(fetch) == sorted(s_fetch) and len(fetch) == 40
    assert sorted(gone) == sorted(s_gone) == sorted(set(old) - set(new))
