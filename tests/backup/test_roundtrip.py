"""The round trip (django-dbbackup's functional test): seed, back up, count, wipe or change,
restore, count, compare row by row and file by file; for SQLite and for MySQL."""

from __future__ import annotations

import os
import stat

from mariadb import requires_mysql


def _round_trip(server):
    before_rows, before_files, before_counts = server.rows(), server.support_files(), server.counts()
    assert before_counts["references"] > 0 and before_rows["catalog_catalogfile"]
    out = server.inv("backup").stdout
    assert "verified" in out and "shared latest" in out

    # change the catalog, wipe a support file, then restore
    server.sql("UPDATE catalog_catalogfile SET description = 'changed after the backup' WHERE id = 1")
    server.sql("DELETE FROM catalog_catalogfile WHERE filekind = 'reference'")
    server.sql("DELETE FROM catalog_contexthistory")
    catalog = server.cfg.server_files / "catalogs" / "hst_catalog.txt"
    catalog.unlink()
    (server.cfg.cache / "config" / "hst" / "stray.txt").write_text("not in the backup\n")
    assert server.rows() != before_rows

    result = server.inv("restore", "--yes")
    assert "healthy" in result.stdout, result.stdout
    assert server.rows() == before_rows
    assert server.support_files() == before_files
    assert server.counts() == before_counts
    assert server.pid() is not None and server.answers()


def _modes(server):
    for base in (server.cfg.backups.private_dir, server.cfg.backups.shared_dir):
        for path in [base, *base.rglob("*")]:
            if path.is_symlink():
                continue
            mode = stat.S_IMODE(os.stat(path).st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), f"{path} has mode {mode:o}"


def test_sqlite_round_trip(sqlite_server):
    _round_trip(sqlite_server)
    _modes(sqlite_server)
    listing = sqlite_server.inv("backups").stdout
    assert "safety" in listing and "shared" in listing
    assert "0 bad" in sqlite_server.inv("verify").stdout


@requires_mysql
def test_mysql_round_trip(mysql_server):
    _round_trip(mysql_server)
    _modes(mysql_server)
    # the staging and old schemas are gone after a successful restore
    from mariadb import root_sql

    assert root_sql(f"SHOW DATABASES LIKE '{mysql_server.cfg.database.name}\\_crdsops%';").strip() == ""


def test_restore_from_a_date_and_dry_run(sqlite_server):
    server = sqlite_server
    server.inv("backup")
    name = server.private_backups()[-1].name
    date = f"{name[0:4]}-{name[4:6]}-{name[6:8]}"
    server.sql("UPDATE catalog_catalogfile SET description = 'after' WHERE id = 1")
    rows = server.rows()
    plan = server.inv("restore", "--from", date, "--dry-run").stdout
    assert name in plan and "verify" in plan and ": ok" in plan
    assert server.rows() == rows  # a dry run changes nothing
    refused = server.inv("restore", "--from", date, check=False)  # no terminal, no --yes
    assert refused.returncode != 0 and "not confirmed" in refused.stderr
    assert server.rows() == rows


def _closing_check(server):
    """The quick check a restore ends with describes the state it swapped in: the staged catalog
    and mappings (a mapping gone from the cache since the backup comes back with it, so it is not
    reported), the live references (one truncated since is reported), recorded for `inv status`."""
    from crdsops.db import catalog

    server.inv("backup")
    mappings = sorted(p for p in server.cfg.layout.mappings.iterdir() if p.is_file())
    references = {r.name for r in catalog.files(server.cfg, "reference")}
    truncated = next(p for p in sorted(server.cfg.layout.references.iterdir()) if p.name in references)
    truncated.write_bytes(truncated.read_bytes()[:10])
    mappings[0].unlink()
    server.sql(f"DELETE FROM catalog_catalogfile WHERE name = '{truncated.name}'")  # the backup still lists it

    result = server.inv("restore", "--yes")
    assert "healthy" in result.stdout, result.stdout
    assert f"references/hst/{truncated.name}" in result.stdout, result.stdout
    assert mappings[0].name not in result.stdout + result.stderr
    assert "warning: cache check after the restore: " in result.stderr and "1 size" in result.stderr, result.stderr
    assert mappings[0].exists()
    status = server.inv("status", check=False).stdout
    assert "check-cache:" in status and "FAIL" in status.split("check-cache:")[1].splitlines()[0].upper(), status


def test_a_restore_ends_with_the_quick_check_of_the_state_it_swapped_in(sqlite_server):
    _closing_check(sqlite_server)


@requires_mysql
def test_a_restore_on_mysql_ends_with_the_quick_check_of_the_state_it_swapped_in(mysql_server):
    _closing_check(mysql_server)
