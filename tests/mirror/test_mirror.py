"""`inv mirror` between two servers on this machine, the source reached over real SSH."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from vms import make_latest_backup, sha256_tree


def _rows(db: str) -> dict:
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'catalog_%'")]
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    finally:
        con.close()


def test_full_mirror_makes_dev_a_copy_of_test(pair, tmp_path):
    src, dst = pair.src_cfg, pair.dst_cfg
    stale = dst.cache / "references" / "hst" / "stale_only_on_dev.fits"
    stale.write_bytes(b"old")
    assert pair.counts("dev")["references"] == 0

    result = pair.mirror("--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deleted 1 file" in result.stdout

    assert _rows(dst.database.name) == _rows(src.database.name)
    for sub in ("references/hst", "mappings/hst", "config/hst"):
        assert sha256_tree(dst.cache / sub) == sha256_tree(src.cache / sub), sub
    for sub in ("catalogs", "deliveries"):
        assert sha256_tree(dst.server_files / sub) == sha256_tree(src.server_files / sub), sub
    assert not stale.exists()
    counts = pair.counts("dev")
    assert counts["kind"] == "dev"  # under its own identity
    expected = pair.counts("test")
    for key in ("operational_context", "references", "mappings", "contexts"):
        assert counts[key] == expected[key]

    # the real crds client, syncing from the destination, gets the source's files
    import os
    import subprocess
    import sys

    cache = tmp_path / "client-cache"
    env = dict(os.environ, CRDS_SERVER_URL=dst.local_url, CRDS_PATH=str(cache), CRDS_MODE="remote")
    for var in ("DJANGO_SETTINGS_MODULE", "CRDS_OBSERVATORY"):
        env.pop(var, None)
    mode = cache / "config" / "hst" / "ref_cache_subdir_mode"
    mode.parent.mkdir(parents=True)
    mode.write_text("flat\n")
    names = sorted(p.name for sub in ("references", "mappings") for p in (src.cache / sub / "hst").iterdir())
    sync = subprocess.run([sys.executable, "-m", "crds.sync", "--hst", "--files", *names], env=env, capture_output=True, text=True, timeout=180)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    got = {p.name: p.read_bytes() for p in cache.rglob("*") if p.is_file() and p.suffix in (".fits", ".pmap", ".imap", ".rmap")}
    want = {p.name: p.read_bytes() for p in (src.cache).rglob("*") if p.is_file() and p.suffix in (".fits", ".pmap", ".imap", ".rmap")}
    assert set(got) == set(want)
    assert all(got[n] == want[n] for n in got)
    assert any(n.endswith(".fits") for n in got)


def test_second_mirror_keeps_unchanged_files(pair):
    assert pair.mirror("--yes").returncode == 0
    src, dst = pair.src_cfg, pair.dst_cfg
    again = pair.mirror("--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "deleted" not in again.stdout  # unchanged files are listed by rsync -ii, so none go
    for sub in ("references/hst", "mappings/hst"):
        assert sha256_tree(dst.cache / sub) == sha256_tree(src.cache / sub)


def test_dry_run_probes_and_changes_nothing(pair):
    before = _rows(pair.dst_cfg.database.name)
    result = pair.mirror("--dry-run")
    assert result.returncode == 0, result.stderr
    assert "plan for mirroring hst.test onto hst.dev" in result.stdout
    assert "context hst_0001.pmap" in result.stdout  # a real probe of the source
    assert _rows(pair.dst_cfg.database.name) == before


def test_without_yes_and_no_terminal_nothing_changes(pair):
    before = _rows(pair.dst_cfg.database.name)
    result = pair.mirror()
    assert result.returncode == 1 and "not confirmed" in result.stderr
    assert _rows(pair.dst_cfg.database.name) == before


def test_refusals(pair):
    ops = pair.ops["dev"]
    cases = [
        (["--obs", "jwst", "--src", "test"], "of hst"),
        (["--obs", "hst", "--src", "dev"], "is this server"),
        (["--obs", "hst", "--src", "django"], "refusing to mirror upward"),
    ]
    for args, message in cases:
        result = ops.inv("mirror", *args, "--yes", check=False)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    # upward, run on test: refused with one line, nothing changes
    before = _rows(pair.src_cfg.database.name)
    result = pair.ops["test"].inv("mirror", "--obs", "hst", "--src", "dev", "--yes", check=False)
    assert result.returncode == 1 and "refusing to mirror upward" in result.stderr
    assert _rows(pair.src_cfg.database.name) == before


def test_source_identity_mismatch_is_refused(pair):
    # the URL answers as another server
    result = pair.mirror("--yes", "--src-url", pair.dst_cfg.local_url)
    assert result.returncode == 1 and "answers as hst.dev, not hst.test" in result.stderr
    # SSH reaches a host that runs another server
    result = pair.mirror("--yes", "--src-host", "127.0.0.3")
    assert result.returncode == 1
    assert "refusing" in result.stderr or "cannot reach" in result.stderr


def test_bad_backup_is_refused(pair):
    latest = Path(pair.src_cfg.backups.shared_dir) / "hst.test" / "database.sqlite3"
    with open(latest, "ab") as handle:
        handle.write(b"corrupt")
    before = _rows(pair.dst_cfg.database.name)
    result = pair.mirror("--yes")
    assert result.returncode == 1 and "does not match its manifest" in result.stderr
    assert _rows(pair.dst_cfg.database.name) == before


def test_unknown_and_changed_host_key_and_unreachable_source(pair):
    kh = pair.lab.known_hosts
    good = kh.read_text()
    kh.write_text("")
    result = pair.mirror("--yes")
    assert result.returncode == 1 and "is unknown" in result.stderr
    pair.test_host.rekey()
    kh.write_text(good)
    result = pair.mirror("--yes")
    assert result.returncode == 1 and "CHANGED" in result.stderr
    pair.test_host.stop()
    result = pair.mirror("--yes")
    assert result.returncode == 1 and "cannot reach 127.0.0.2" in result.stderr


def test_connection_cut_during_cache_sync_keeps_old_state(pair):
    # make the cache big enough that the sync takes a while
    refs = pair.src_cfg.cache / "references" / "hst"
    for i in range(300):
        (refs / f"bulk_{i:04d}.fits").write_bytes(bytes([i % 256]) * 200_000)
    before = _rows(pair.dst_cfg.database.name)
    cut = threading.Event()

    def cutter():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any((pair.dst_cfg.cache / "references" / "hst").glob("*bulk_*")):
                pair.test_host.cut()
                cut.set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=cutter)
    thread.start()
    result = pair.mirror("--yes")
    thread.join()
    assert cut.is_set()
    assert result.returncode == 1 and "cache sync" in result.stderr and "failed" in result.stderr
    assert _rows(pair.dst_cfg.database.name) == before
    assert pair.counts("dev")["references"] == 0  # still serving its old state


def test_health_check_failure_rolls_back(pair):
    def drop_one(con):
        table = con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE '%catalogfile'").fetchone()[0]
        con.execute(f"DELETE FROM {table} WHERE id = (SELECT max(id) FROM {table})")

    make_latest_backup(pair.src_cfg, mutate=drop_one)  # verifies, but differs from the live source
    before = _rows(pair.dst_cfg.database.name)
    support_before = sha256_tree(pair.dst_cfg.server_files / "catalogs")
    result = pair.mirror("--yes")
    assert result.returncode == 1, result.stdout
    assert "health check" in result.stderr and "rolled back" in result.stderr
    assert _rows(pair.dst_cfg.database.name) == before
    assert sha256_tree(pair.dst_cfg.server_files / "catalogs") == support_before
    counts = pair.counts("dev")
    assert counts["kind"] == "dev" and counts["references"] == 0
