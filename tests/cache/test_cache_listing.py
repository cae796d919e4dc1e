"""The quick check's listing: find's answer equals os.scandir's, and every way find fails falls back to it."""

from __future__ import annotations

import os
import stat

import pytest

from crdsops.data import cachecheck
from crdsops.data.cachecheck import Listing, PendingListing, list_tree, list_trees, parse_find, scan_tree


def odd_tree(base):
    """Regular files (odd names too), a directory, a symlink to a file, a broken symlink and a FIFO."""
    base.mkdir()
    (base / "plain_flt.fits").write_bytes(b"x" * 1234)
    (base / "empty.fits").write_bytes(b"")
    (base / "with space\nand newline.fits").write_bytes(b"abc")
    (base / "-starts-with-dash.fits").write_bytes(b"ab")
    os.close(os.open(os.fsencode(base) + b"/latin1_\xe9.fits", os.O_CREAT | os.O_WRONLY, 0o644))  # not UTF-8
    (base / "a_directory").mkdir()
    (base / "link_to_file.fits").symlink_to(base / "plain_flt.fits")
    (base / "broken_link.fits").symlink_to(base / "nowhere.fits")
    os.mkfifo(base / "a_fifo")
    return base


@pytest.fixture
def scans(monkeypatch):
    """The directories listed by os.scandir (the fallback), in order."""
    seen = []

    def spy(base):
        seen.append(base)
        return scan_tree(base)

    monkeypatch.setattr(cachecheck, "scan_tree", spy)
    return seen


def test_find_lists_what_scandir_lists_odd_entries_included(tmp_path, scans):
    base = odd_tree(tmp_path / "refs")
    found = list_tree(base)
    assert scans == []  # find's answer, not the fallback's
    assert found == scan_tree(base)
    assert found.sizes["plain_flt.fits"] == 1234 and found.sizes["link_to_file.fits"] == 1234
    assert found.sizes["with space\nand newline.fits"] == 3 and found.sizes["empty.fits"] == 0
    assert "latin1_\udce9.fits" in found.sizes  # the name os.scandir gives (surrogateescape)
    assert found.odd == {"a_directory": "not a regular file", "a_fifo": "not a regular file",
                         "broken_link.fits": "No such file or directory"}


def test_a_tree_that_is_a_symlink_is_followed(tmp_path):
    real = odd_tree(tmp_path / "storage")
    (tmp_path / "refs").symlink_to(real)
    assert list_tree(tmp_path / "refs") == scan_tree(real)


def test_a_missing_tree_is_none_and_an_empty_one_an_empty_listing(tmp_path):
    assert list_tree(tmp_path / "nowhere") is None
    (tmp_path / "empty").mkdir()
    listing = list_tree(tmp_path / "empty")
    assert listing == Listing() and not listing


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists any directory whatever its mode")
def test_an_unlistable_tree_is_refused(tmp_path):
    base = odd_tree(tmp_path / "refs")
    base.chmod(0)
    try:
        with pytest.raises(cachecheck.CacheUnavailable, match="cannot list"):
            list_tree(base)
    finally:
        base.chmod(0o755)


def test_a_file_where_the_tree_should_be_is_refused(tmp_path):
    (tmp_path / "refs").write_bytes(b"not a directory")
    with pytest.raises(cachecheck.CacheUnavailable, match="cannot list"):
        list_tree(tmp_path / "refs")


def fake_find(directory, script: str) -> str:
    directory.mkdir()
    path = directory / "find"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(directory)


@pytest.mark.parametrize("find", [
    None,  # not installed
    "echo 'find: unknown primary or operator' >&2; exit 1\n",  # a find without -printf (BSD's)
    "printf 'cut\\0'\n",  # output that ends in the middle of an entry
])
def test_without_a_working_find_the_listing_is_os_scandir(tmp_path, monkeypatch, scans, find):
    base = odd_tree(tmp_path / "refs")
    bin_dir = fake_find(tmp_path / "bin", find) if find else str(tmp_path / "no-bin")
    monkeypatch.setenv("PATH", bin_dir)
    assert list_tree(base) == scan_tree(base)
    assert scans == [base]
    assert list_tree(tmp_path / "nowhere") is None


def test_parse_find_rejects_output_cut_short_or_not_finds():
    assert parse_find("/x", b"a/3\x00b/1") is None  # cut in the middle of an entry
    assert parse_find("/x", b"a/3\x00b\x00") is None  # an entry without its size
    assert parse_find("/x", b"a/3\x00b/1/2\x00") is None  # a name with a "/"
    assert parse_find("/x", b"") == Listing()
    assert parse_find("/x", b"a/3\x00b/10\x00") == Listing({"a": 3, "b": 10})


def test_close_ends_a_find_still_running_and_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", fake_find(tmp_path / "bin", "exec /bin/sleep 60\n"))
    pending = PendingListing(tmp_path)
    assert pending.proc.poll() is None
    pending.close()
    assert pending.proc.returncode is not None and pending.output.fileno() == -1 and not pending.reader.is_alive()
    pending.close()


def test_list_trees_lists_each_tree_of_the_server(cache):
    listed = list_trees(cache.cfg)
    assert set(listed) == set(cachecheck.TREES)
    assert listed["references"] == scan_tree(cache.refs) and listed["mappings"] == scan_tree(cache.maps)
    assert set(listed["mappings"].sizes) == set(cache.mappings())


def test_a_listing_matches_the_catalog_only_when_it_holds_exactly_its_files(tmp_path):
    from crdsops.db.catalog import TreeSizes

    want = TreeSizes(sizes={"a.fits": 3, "b.fits": 10})
    assert parse_find(tmp_path, b"b.fits/10\x00a.fits/3\x00").matches(want)
    for output in (b"a.fits/3\x00",  # one missing
                   b"a.fits/3\x00b.fits/11\x00",  # a size that differs
                   b"a.fits/3\x00b.fits/10\x00c.fits/1\x00",  # an orphan
                   b"a.fits/3\x00b.fits/10\x00sub/-\x00",  # an entry that is not a regular file
                   b"a.fits/3\x00a.fits/3\x00"):  # as many entries as files, one of them twice
        assert not parse_find(tmp_path, output).matches(want), output
    assert Listing({"a.fits": 3, "b.fits": 10}).matches(want) and not Listing({"a.fits": 3}).matches(want)


def test_find_output_is_struck_off_the_catalog_in_whatever_parts_it_comes(tmp_path):
    from crdsops.data.cachecheck import _Taken
    from crdsops.db.catalog import TreeSizes

    want = TreeSizes(sizes={f"f{i}_drk.fits": i * 7 for i in range(40)})
    output = b"".join(f"f{i}_drk.fits/{i * 7}\x00".encode() for i in reversed(range(40)))
    wrong = output.replace(b"f3_drk.fits/21\x00", b"f3_drk.fits/20\x00")
    for data, matching in ((output, True), (wrong, False)):
        for known_after in (0, 5, None):  # the catalog's keys known before, during, after the listing
            taken = _Taken()
            for n, start in enumerate(range(0, len(data), 7)):  # parts that cut entries anywhere
                if n == known_after:
                    taken.expect(want)
                taken.feed(data[start:start + 7])
            if known_after is None:
                taken.expect(want)
            listing = taken.listing(tmp_path)
            assert listing.matches(want) is matching
            assert listing == parse_find(tmp_path, data)
    assert parse_find(tmp_path, output).sizes == want.sizes
