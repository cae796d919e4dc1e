"""A restore's safety backup is made after the swap, from the old state the swap kept, while the new
state serves: nothing of it is on the way to serving. The old state goes only once that backup
verifies; when the backup fails, the restore still succeeds, the old state stays, and a warning
(also in the audit) says where it is and how to drop it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from interrupting import leftovers
from mariadb import requires_mysql, root_sql

from crdsops.data import manifest
from crdsops.data.backup import support_dirs

SERVERS = ["sqlite_server", pytest.param("mysql_server", marks=requires_mysql)]


def kept_old(target: Path) -> Path:
    return target.with_name(target.name + ".crdsops-old")


def _schema(server):
    return server.cfg.database.name if server.account else None


def _kept(server) -> tuple[int | None, list[Path]]:
    """(catalog rows of the old database the swap kept, None: none kept; the support directories it kept)."""
    cfg = server.cfg
    dirs = [kept_old(t) for t in support_dirs(cfg).values() if kept_old(t).exists()]
    if server.account:
        schema = f"{cfg.database.name}_crdsops_old"
        if not root_sql(f"SHOW DATABASES LIKE '{schema.replace('_', chr(92) + '_')}';").strip():
            return None, dirs
        return int(root_sql(f"SELECT COUNT(*) FROM `{schema}`.catalog_catalogfile;").split()[-1]), dirs
    path = Path(cfg.database.name + ".crdsops-old")
    if not path.exists():
        return None, dirs
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT COUNT(*) FROM catalog_catalogfile").fetchone()[0], dirs
    finally:
        con.close()


def _backup_then_move_on(server):
    """Back up (the new state a restore brings back), then change the live state (the old one)."""
    server.inv("backup")
    new = (server.rows(), server.support_files())
    server.sql("DELETE FROM catalog_catalogfile WHERE id = 2")
    (server.cfg.layout.catalogs / "only-in-the-old-state.cat").write_text("old\n")
    return new, (server.rows(), server.support_files())


def _last_audit(server) -> dict:
    return json.loads(server.cfg.layout.audit_log.read_text().splitlines()[-1])


@pytest.mark.parametrize("fixture", SERVERS)
def test_the_safety_backup_is_made_after_the_swap_from_the_old_state(request, fixture):
    server = request.getfixturevalue(fixture)
    new, old = _backup_then_move_on(server)
    result = server.inv("restore", "--yes")
    assert (server.rows(), server.support_files()) == new
    lines = result.stdout.splitlines()
    serving = [i for i, ln in enumerate(lines) if "the new state serves, healthy" in ln]
    made = [i for i, ln in enumerate(lines) if ln.startswith("safety backup")]
    assert serving and made and serving[0] < made[0], result.stdout  # made once the new state served
    assert lines[made[0]].endswith("verified, the old state dropped"), result.stdout
    assert _kept(server) == (None, [])  # dropped, once it verified
    safety = Path(_last_audit(server)["touched"]["safety_backup"])
    m = manifest.Manifest.load(safety)
    assert m.purpose == "safety" and manifest.verify(safety, deep=True) == []
    swapped = int(server.cfg.layout.catalog_generation.stat().st_mtime)  # written at the swap's end
    assert m.created.timestamp() >= swapped
    assert "safety" in server.inv("backups").stdout
    # it holds the old state: restoring it brings that back
    server.inv("restore", "--yes", "--from", str(safety))
    assert (server.rows(), server.support_files()) == old
    # killed as the safety backup begins: the new state serves already, and the old one is kept
    env = dict(server.ops.env, CRDSOPS_FAILPOINT="backup.started=kill")
    killed = server.inv("restore", "--yes", check=False, env=env)
    assert killed.returncode != 0, killed.stdout + killed.stderr
    assert server.answers() and (server.rows(), server.support_files()) == new
    rows, dirs = _kept(server)
    assert rows == len(old[0]["catalog_catalogfile"]) and dirs, killed.stdout
    server.inv("restore", "--yes")  # takes over the dead run's lock; drops that kept state after its own backup
    assert _kept(server) == (None, []) and leftovers(server.cfg, _schema(server)) == []


@pytest.mark.parametrize("fixture", SERVERS)
def test_a_failed_safety_backup_keeps_the_old_state_and_says_how_to_drop_it(request, fixture):
    server = request.getfixturevalue(fixture)
    cfg = server.cfg
    new, old = _backup_then_move_on(server)
    before = server.private_backups()
    env = dict(server.ops.env, CRDSOPS_FAILPOINT="backup.dumped=fail")
    result = server.inv("restore", "--yes", env=env)  # succeeds: the new state serves
    assert server.answers() and (server.rows(), server.support_files()) == new
    rows, dirs = _kept(server)
    assert rows == len(old[0]["catalog_catalogfile"]) and sorted(p.name for p in dirs) == [
        "catalogs.crdsops-old", f"{cfg.observatory}.crdsops-old", f"{cfg.observatory}.crdsops-old"]
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("warning: the safety backup")]
    assert "failpoint backup.dumped" in line and "the new state serves" in line, line
    drop = (f"DROP DATABASE `{cfg.database.name}_crdsops_old`;" if server.account
            else f"rm {cfg.database.name}.crdsops-old")
    assert drop in line and "rm -r " + " ".join(str(d) for d in dirs) in line, line
    assert server.private_backups() == before  # no safety backup, and no partial one
    assert leftovers(cfg, _schema(server)) == []
    entry = _last_audit(server)
    assert entry["result"] == "ok" and any(w.startswith("the safety backup") for w in entry["warnings"]), entry
    assert entry["touched"].get("safety_backup") is None
    server.inv("restore", "--yes")  # the next one backs up what it replaces, and drops it
    assert _kept(server) == (None, []) and (server.rows(), server.support_files()) == new
