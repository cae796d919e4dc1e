"""`inv mirror` between two servers on this machine, the source reached over real SSH."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from mariadb import root_sql
from vms import sha256_tree

from crdsops.runtime import outcomes


def _rows(db: str) -> dict:
    """Every row of the catalog tables (SQLite file path, or ``mysql:SCHEMA``)."""
    if db.startswith("mysql:"):
        schema = db.split(":", 1)[1]
        tables = root_sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                          f"'{schema}' AND TABLE_NAME LIKE 'catalog%';").split()
        return {t: root_sql(f"SELECT * FROM `{schema}`.`{t}` ORDER BY 1;").splitlines() for t in tables}
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'catalog_%'")]
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    finally:
        con.close()


def _last_audit(cfg) -> dict:
    import json

    return json.loads(cfg.layout.audit_log.read_text().splitlines()[-1])


def test_full_mirror_makes_dev_a_copy_of_test(pair, tmp_path):
    src, dst = pair.src_cfg, pair.dst_cfg
    stale = dst.cache / "references" / "hst" / "stale_only_on_dev.fits"
    stale.write_bytes(b"old")
    assert pair.counts("dev")["references"] == 0

    result = pair.mirror("--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deleted 1 file" in result.stdout
    assert "cache check after the mirror: " in result.stdout  # the quick check it ends with

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
    from crdsclient import sync_files_flat

    cache = tmp_path / "client-cache"
    names = sorted(p.name for sub in ("references", "mappings") for p in (src.cache / sub / "hst").iterdir())
    sync = sync_files_flat(dst.local_url, cache, names)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    got = {p.name: p.read_bytes() for p in cache.rglob("*") if p.is_file() and p.suffix in (".fits", ".pmap", ".imap", ".rmap")}
    want = {p.name: p.read_bytes() for p in (src.cache).rglob("*") if p.is_file() and p.suffix in (".fits", ".pmap", ".imap", ".rmap")}
    assert set(got) == set(want)
    assert all(got[n] == want[n] for n in got)
    assert any(n.endswith(".fits") for n in got)

    # the audit line and `inv status` say when, from what, and how it ended
    line = _last_audit(dst)
    assert line["task"] == "mirror" and line["result"] == "ok" and line["flags"] == {"obs": "hst", "src": "test", "yes": True}
    done = outcomes.read("mirror", line["touched"])
    assert done.source == "hst.test" and done.source_host == f"{pair.test_host.address}:{pair.test_host.port}"
    assert done.backup.path == (src.backups.shared_dir / "hst.test").resolve() and done.backup.server == "hst.test"
    assert done.backup.created and done.safety_backup.parent == dst.backups.private_dir
    assert done.deleted is not None  # the deletions ran, after the swap
    mirror_line = next(ln for ln in pair.ops["dev"].inv("status").stdout.splitlines() if ln.startswith("mirror:"))
    assert mirror_line.startswith("mirror:     ok ") and "from hst.test (its backup " in mirror_line


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
    assert "runs hst.dev, not hst.test as the config says; refusing" in result.stderr, result.stderr


def _tamper_latest(cfg) -> None:
    """Flip one byte of the database dump in the shared latest backup."""
    latest = Path(cfg.backups.shared_dir) / cfg.name
    dump = next(latest.glob("database.*"))
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))


def test_bad_backup_is_refused(pair):
    _tamper_latest(pair.src_cfg)
    before = _rows(pair.dst_cfg.database.name)
    result = pair.mirror("--yes")
    assert result.returncode == 1
    assert "refusing backup" in result.stderr and "sha256 differs from the manifest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _rows(pair.dst_cfg.database.name) == before
    assert not list(pair.dst_cfg.backups.private_dir.glob("2*"))  # refused before even a safety backup


def test_backup_of_another_server_is_refused(pair):
    # the source's shared latest is replaced by the destination's own backup, under the source's name
    import os

    pair.ops["dev"].inv("backup")
    shared = Path(pair.src_cfg.backups.shared_dir)
    link = shared / "hst.test"
    link.unlink()
    os.symlink(os.readlink(shared / "hst.dev"), link)
    result = pair.mirror("--yes")
    assert result.returncode == 1 and "it is a backup of hst.dev, not of hst.test" in result.stderr


def test_backup_is_fetched_over_ssh_when_the_shared_dir_is_not_mounted_here(pair, tmp_path):
    from support import make_configs

    # the destination's shared dir is other storage, which does not hold the source's latest
    make_configs(tmp_path, {("hst", "dev"): {"backups": {"shared_dir": str(tmp_path / "dev-shared")}}})
    result = pair.mirror("--dry-run")
    assert result.returncode == 0, result.stderr
    assert "fetch it over SSH" in result.stdout

    result = pair.mirror("--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    fetched = pair.dst_cfg.root / "mirror" / "backup"
    assert f"backup {fetched}:" in result.stdout and "verified against its manifest" in result.stdout
    assert _rows(pair.dst_cfg.database.name) == _rows(pair.src_cfg.database.name)
    assert pair.counts("dev")["references"] == pair.counts("test")["references"]

    # a backup damaged at the source is refused after the fetch, before anything changes here
    _tamper_latest(pair.src_cfg)
    before = _rows(pair.dst_cfg.database.name)
    result = pair.mirror("--yes")
    assert result.returncode == 1
    assert f"refusing backup {fetched}" in result.stderr and "sha256 differs" in result.stderr
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
    pair.ops["test"].inv("backup")  # the mirror fetches what the source's backup lists
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
    before = _rows(pair.dst_cfg.database.name)
    support_before = sha256_tree(pair.dst_cfg.server_files / "catalogs")
    mappings_before = sha256_tree(pair.dst_cfg.cache / "mappings" / "hst")
    result = pair.mirror("--yes", env={"CRDSOPS_FAILPOINT": "restore.health=fail"})
    assert result.returncode == 1, result.stdout
    assert "restore.health" in result.stderr and "rolled back" in result.stderr
    assert "serves its previous state again" in result.stdout
    assert _rows(pair.dst_cfg.database.name) == before
    assert sha256_tree(pair.dst_cfg.server_files / "catalogs") == support_before
    assert sha256_tree(pair.dst_cfg.cache / "mappings" / "hst") == mappings_before
    counts = pair.counts("dev")
    assert counts["kind"] == "dev" and counts["references"] == 0
    line = _last_audit(pair.dst_cfg)
    assert line["task"] == "mirror" and line["result"] == "failed" and "rolled back" in line["error"]
    # the rollback swapped the kept old state back: no safety backup was needed, none was made
    assert line["touched"]["safety_backup"] is None
    assert not list(pair.dst_cfg.backups.private_dir.glob("2*"))


def test_health_check_expects_the_backup_not_the_live_source(pair):
    """The source moved on after its backup: the mirror copies (and checks) the backup's state."""
    backed_up = pair.counts("test")
    con = sqlite3.connect(pair.src_cfg.database.name)
    table = "catalog_catalogfile"
    con.execute(f"DELETE FROM {table} WHERE id = (SELECT max(id) FROM {table} WHERE name LIKE '%.fits')")
    con.commit()
    con.close()
    assert pair.counts("test")["references"] == backed_up["references"] - 1
    result = pair.mirror("--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = pair.counts("dev")
    assert counts["kind"] == "dev"
    for key in ("operational_context", "references", "mappings", "contexts"):
        assert counts[key] == backed_up[key], key


def test_mysql_mirror_makes_dev_rows_identical(mysql_pair):
    src, dst = mysql_pair.src_cfg, mysql_pair.dst_cfg
    assert mysql_pair.counts("dev")["references"] == 0
    result = mysql_pair.mirror("--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(f"mysql:{dst.database.name}")
    assert rows and rows == _rows(f"mysql:{src.database.name}")
    assert all(rows.values())
    for sub in ("references/hst", "mappings/hst", "config/hst"):
        assert sha256_tree(dst.cache / sub) == sha256_tree(src.cache / sub), sub
    counts, expected = mysql_pair.counts("dev"), mysql_pair.counts("test")
    assert counts["kind"] == "dev"
    for key in ("operational_context", "references", "mappings", "contexts"):
        assert counts[key] == expected[key]
    # no staging or old schema left behind
    left = root_sql(f"SHOW DATABASES LIKE '{dst.database.name}\\_crdsops%';").split()
    assert left == []


def test_mirror_refuses_while_another_task_holds_the_destination_lock(pair):
    import subprocess
    import sys

    cfg = pair.dst_cfg
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from crdsops.config.loader import load_config; from crdsops.runtime.lock import server_lock\n"
         f"cfg = load_config('hst', 'dev', {str(pair.configs)!r})\n"
         "with server_lock(cfg, 'backup'):\n    print('held', flush=True); time.sleep(60)"],
        cwd=str(Path(__file__).resolve().parents[2]), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _rows(cfg.database.name)
        result = pair.mirror("--yes")
        assert result.returncode == 1
        assert "busy" in result.stderr and str(holder.pid) in result.stderr, result.stderr
        assert _rows(cfg.database.name) == before
    finally:
        holder.kill()
        holder.wait()
