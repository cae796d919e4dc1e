"""`inv check-cache` on a real installed server: what quick mode and --sha1 find, output, exit codes, refusals."""

from __future__ import annotations

import json
import os
import shutil

from cachelab import add_references, flip_byte


def problems_of(doc: dict) -> set[tuple[str, str]]:
    return {(p["kind"], p["name"]) for p in doc["problems"]}


def test_a_fresh_server_is_clean_and_notes_its_rejected_and_blacklisted_files(cache):
    result, doc = cache.json()
    assert result.returncode == 0, result.stderr
    assert doc["ok"] and doc["problems"] == [] and doc["checked"] == len(cache.catalog())
    assert {n["kind"] for n in doc["notes"]} == {"rejected", "blacklisted"}
    text = cache.check()
    assert text.returncode == 0
    assert text.stdout.splitlines()[-1].startswith("check-cache hst.django: 11 files checked (sizes)")
    assert "repaired" not in text.stdout + text.stderr  # without --repair nothing is said of a repair
    # a rejected file present fails only under --strict
    strict = cache.check("--strict")
    assert strict.returncode == 1
    assert any(line.startswith("rejected    references/hst/") for line in strict.stdout.splitlines())


def test_missing_truncated_orphan_are_found_by_quick_mode_and_a_flipped_byte_only_by_sha1(cache):
    refs = add_references(cache, 3)
    (cache.refs / refs[0]).unlink()
    truncated = cache.refs / refs[1]
    truncated.write_bytes(truncated.read_bytes()[:100])
    flip_byte(cache.refs / refs[2])
    (cache.refs / "stray_orphan.fits").write_bytes(b"no catalog row")

    result, doc = cache.json()
    assert result.returncode == 1
    assert problems_of(doc) == {("missing", refs[0]), ("size", refs[1]), ("orphan", "stray_orphan.fits")}
    assert doc["counts"]["missing"] == 1

    result, doc = cache.json("--sha1")
    assert result.returncode == 1
    assert problems_of(doc) == {("missing", refs[0]), ("size", refs[1]), ("orphan", "stray_orphan.fits"),
                                ("damaged", refs[2])}
    lines = cache.check("--sha1").stdout.splitlines()
    assert any(line.startswith(f"missing     references/hst/{refs[0]}") for line in lines)
    assert any(line.startswith(f"size        references/hst/{refs[1]}") and "truncated" in line for line in lines)
    assert any(line.startswith(f"damaged     references/hst/{refs[2]}") for line in lines)
    assert "4 problem(s)" in lines[-1]


def test_entries_that_are_not_regular_files_are_found_by_quick_mode(cache):
    refs = add_references(cache, 3)
    (cache.refs / refs[0]).unlink()
    (cache.refs / refs[0]).mkdir()  # a directory where a file should be
    elsewhere = cache.refs.parent / "elsewhere.fits"  # a symlink to the file, where it was: fine
    (cache.refs / refs[1]).rename(elsewhere)
    (cache.refs / refs[1]).symlink_to(elsewhere)
    (cache.refs / "gone_link.fits").symlink_to(cache.refs.parent / "nowhere.fits")
    os.mkfifo(cache.refs / "a_fifo")
    result, doc = cache.json()
    assert result.returncode == 1
    assert problems_of(doc) == {("missing", refs[0]), ("orphan", "gone_link.fits"), ("orphan", "a_fifo")}
    details = {p["name"]: p["detail"] for p in doc["problems"]}
    assert details[refs[0]] == "not a regular file" and "No such file" in details["gone_link.fits"]


def test_the_quick_read_of_the_catalog_says_what_its_rows_say(cache):
    import sqlite3

    from crdsops.db import catalog

    add_references(cache, 5)

    def rows_of(kind):
        return {r.name: r.size for r in catalog.files(cache.cfg, kind)}

    def flagged():
        return {(r.name, r.filekind, r.size, bool(r.rejected), bool(r.blacklisted))
                for r in catalog.files(cache.cfg, "flagged")}

    for odd_name in (None, "a/slash_drk.fits", "a\x00nul_drk.fits"):  # read joined, then joined, then as rows
        if odd_name:
            con = sqlite3.connect(cache.cfg.database.name)
            con.execute("INSERT INTO catalog_catalogfile (name, observatory, filekind, instrument, reftype, size, "
                        "sha1sum, state, blacklisted, rejected, delivery_date, description) VALUES "
                        "(?, 'hst', 'reference', 'acs', 'darkfile', 12, '', 'delivered', 1, 0, '2026-01-01', '')",
                        (odd_name,))
            con.commit()
            con.close()
        read = catalog.for_quick_check(cache.cfg)
        assert read.trees["references"].sizes == rows_of("reference")
        assert read.trees["mappings"].sizes == rows_of("mapping")
        assert {(r.name, r.filekind, r.size, r.rejected, r.blacklisted) for r in read.flagged} == flagged()
        assert len(read.flagged) == len(flagged()) >= 2
    result, doc = cache.json()
    assert ("missing", "a/slash_drk.fits") in problems_of(doc) and ("missing", "a\x00nul_drk.fits") in problems_of(doc)


def test_a_damaged_mapping_is_found_in_quick_mode(cache):
    mapping = cache.maps / cache.mappings()[0]
    flip_byte(mapping, 5)
    result, doc = cache.json()
    assert result.returncode == 1
    assert problems_of(doc) == {("damaged", mapping.name)}


def test_the_last_result_is_shown_by_status(cache):
    (cache.refs / cache.references()[0]).unlink()
    cache.check()
    status = cache.inv("status").stdout
    line = next(x for x in status.splitlines() if x.startswith("check-cache:"))
    assert line.startswith("check-cache: FAILED") and "1 problem(s)" in line
    record = json.loads(cache.cfg.layout.last_result("check-cache").read_text())
    assert record["mode"] == "sizes" and record["problems"] == {"missing": [cache.references()[0]]}
    status_json = json.loads(cache.inv("status", "--json").stdout)
    assert status_json["check_cache"]["result"]["ok"] is False


def test_a_missing_cache_directory_is_refused_in_one_line(cache):
    shutil.move(cache.cfg.cache, cache.cfg.cache.with_name("cache-elsewhere"))
    result = cache.check()
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "is missing: is its storage mounted? nothing was checked" in result.stderr
    assert "missing     " not in result.stdout


def test_an_empty_cache_while_the_catalog_lists_files_looks_unmounted(cache):
    for tree in (cache.refs, cache.maps):
        shutil.rmtree(tree)
        tree.mkdir()
    result = cache.check("--sha1")
    assert result.returncode == 1
    assert "looks unmounted or wiped; nothing was checked" in result.stderr
    assert result.stdout.count("missing") == 0
    status = cache.inv("status").stdout
    assert "looks unmounted" in next(x for x in status.splitlines() if x.startswith("check-cache:"))


def test_the_lock_held_is_refused_naming_its_holder(cache):
    from crdsops.runtime import lock

    cfg = cache.cfg
    path = lock.lock_path(cfg)
    path.mkdir(parents=True)
    holder = {"user": "ops", "host": os.uname().nodename, "pid": os.getpid(), "task": "mirror",
              "since": "2026-12-01T03:00:00+00:00", "pid_start": lock.start_time(os.getpid())}
    (path / lock.HOLDER).write_text(json.dumps(holder))
    result = cache.check()
    assert result.returncode == 1
    assert "is busy: `mirror` run by ops" in result.stderr and f"(pid {os.getpid()})" in result.stderr


def test_broken_delivery_links_are_reported(cache):
    deliveries = cache.cfg.layout.deliveries
    deliveries.mkdir(parents=True, exist_ok=True)
    (deliveries / "good.link").symlink_to(cache.refs / cache.references()[0])
    (deliveries / "gone.link").symlink_to(cache.refs / "no_such_file.fits")
    result, doc = cache.json()
    assert result.returncode == 1
    assert problems_of(doc) == {("broken-link", "gone.link")}


def test_an_unreadable_file_is_reported_as_unreadable_not_damaged(tmp_path):
    # root reads any file whatever its mode, so the read error is made where the check reads
    from crdsops.data import cachecheck
    from crdsops.db.catalog import CatalogFile

    row = CatalogFile("x_drk.fits", "reference", 3, "0" * 40)
    problem, _ = cachecheck._hash_problem(row, str(tmp_path), bytearray(16))  # a directory: EISDIR
    assert problem.kind == "unreadable"
    (tmp_path / "x_drk.fits").write_bytes(b"abc")
    problem, _ = cachecheck._hash_problem(row, str(tmp_path / "x_drk.fits"), bytearray(2))
    assert problem.kind == "damaged"


def test_flags_that_need_another_are_refused(cache):
    assert "go with --sha1" in cache.check("--sample", "1/7").stderr
    assert "go with --repair" in cache.check("--dry-run").stderr
    assert "K must be 1..7" in cache.check("--sha1", "--sample", "9/7").stderr


def test_the_progress_bar_shows_on_a_terminal_only(cache):
    import fcntl
    import pty
    import struct
    import subprocess
    import termios

    from support import CHECKOUT, INV

    add_references(cache, 50)
    quiet = cache.check("--sha1")
    assert "files" not in quiet.stderr and "it/s" not in quiet.stderr and "B/s" not in quiet.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal has a width
    try:
        proc = subprocess.run([INV, "check-cache", "--sha1"], cwd=CHECKOUT, env=cache.ops.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=slave, timeout=120)
        os.close(slave)
        slave = None
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    text = shown.decode(errors="replace")
    assert "sha1" in text and "/61 files" in text and "B/s" in text, text


def test_a_mysql_catalog_is_read_through_the_mysql_client(tmp_path):
    from mariadb import MYSQL_MISSING, Account
    from support import Ops, deep_merge, local_overrides, make_configs

    if MYSQL_MISSING:
        import pytest

        pytest.skip(MYSQL_MISSING)
    from crdsops.db import mysql

    account = Account("cc")
    account.create()
    try:
        option_file = mysql.write_option_file(tmp_path / "my.cnf", account.user, account.password)
        overrides = deep_merge(local_overrides(tmp_path), {
            "database": {"engine": "mysql", "name": account.database, "option_file": str(option_file),
                         "host": "127.0.0.1", "port": 3306},
            "web": {"server": "runserver", "processes": 1, "threads": 1, "user": None, "group": None},
        })
        ops = Ops(tmp_path, make_configs(tmp_path, {("hst", "dev"): overrides}))
        ops.inv("install", "--obs", "hst", "--kind", "dev")
        ops.inv("manage", "--", "seed_demo")
        cfg = ops.config("hst", "dev")
        result = ops.inv("check-cache", "--sha1", "--json", check=False)
        doc = json.loads(result.stdout)
        assert result.returncode == 0 and doc["checked"] == 11 and doc["hashed"] == 11, result.stderr
        assert {n["kind"] for n in doc["notes"]} == {"rejected", "blacklisted"}
        victim = sorted(cfg.layout.references.iterdir())[0]
        flip_byte(victim)
        result = ops.inv("check-cache", "--sha1", "--json", check=False)
        assert result.returncode == 1
        assert problems_of(json.loads(result.stdout)) == {("damaged", victim.name)}
    finally:
        account.drop()
