"""`inv mirror --fresh-backup` backs the source up over SSH first; without it a stale backup is named."""

from __future__ import annotations

import sqlite3


def _drop_one_reference(cfg) -> None:
    con = sqlite3.connect(cfg.database.name)
    table = "catalog_catalogfile"
    con.execute(f"DELETE FROM {table} WHERE id = (SELECT max(id) FROM {table} WHERE name LIKE '%.fits')")
    con.commit()
    con.close()


def test_stale_backup_is_named_in_the_plan(pair):
    quiet = pair.mirror("--dry-run")
    assert quiet.returncode == 0 and "has changed since its latest backup" not in quiet.stdout
    backed_up = pair.counts("test")["references"]
    _drop_one_reference(pair.src_cfg)
    plan = pair.mirror("--dry-run")
    assert plan.returncode == 0, plan.stderr
    notes = [ln for ln in plan.stdout.splitlines() if "has changed since its latest backup" in ln]
    assert len(notes) == 1, plan.stdout
    assert f"references {backed_up} -> {backed_up - 1}" in notes[0]
    assert "ago)" in notes[0] and "--fresh-backup" in notes[0]


def test_fresh_backup_mirrors_the_state_newer_than_the_nightly_backup(pair):
    nightly = (pair.src_cfg.backups.shared_dir / "hst.test").resolve()
    _drop_one_reference(pair.src_cfg)
    live = pair.counts("test")
    plan = pair.mirror("--dry-run", "--fresh-backup")
    assert "first back up hst.test there" in plan.stdout and "has changed since" not in plan.stdout
    assert (pair.src_cfg.backups.shared_dir / "hst.test").resolve() == nightly  # a dry run backs nothing up

    result = pair.mirror("--yes", "--fresh-backup")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "backing up hst.test on" in result.stdout
    assert "shared latest" in result.stdout  # the source's own `inv backup` output, streamed
    fresh = (pair.src_cfg.backups.shared_dir / "hst.test").resolve()
    assert fresh != nightly and f"new backup {fresh}" in result.stdout
    counts = pair.counts("dev")
    for key in ("operational_context", "references", "mappings", "contexts"):
        assert counts[key] == live[key], key
