"""`inv mirror` from a MariaDB server down onto a SQLite one: the dump converted while serving."""

from __future__ import annotations

import sqlite3

from crdsclient import sync_files_flat
from mariadb import root_sql

SAMPLE = "name, size, sha1sum, state, blacklisted, rejected, instrument, filekind"


def _mysql_catalog(schema: str) -> list[tuple]:
    out = root_sql(f"SELECT {SAMPLE} FROM `{schema}`.catalog_catalogfile ORDER BY name;")
    return [tuple(line.split("\t")) for line in out.splitlines()]


def _sqlite_catalog(path: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return [tuple(str(v) for v in row)
                for row in con.execute(f"SELECT {SAMPLE} FROM catalog_catalogfile ORDER BY name")]
    finally:
        con.close()


def _count(schema_or_path: str, table: str) -> int:
    if schema_or_path.startswith("mysql:"):
        return int(root_sql(f"SELECT COUNT(*) FROM `{schema_or_path[6:]}`.`{table}`;").split()[-1])
    con = sqlite3.connect(schema_or_path)
    try:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def test_mariadb_source_mirrors_down_onto_sqlite(mixed_pair, tmp_path):
    src, dst = mixed_pair.src_cfg, mixed_pair.dst_cfg
    assert src.database.is_mysql and not dst.database.is_mysql
    plan = mixed_pair.mirror("--dry-run")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "converted from hst.test's MySQL dump" in plan.stdout

    result = mixed_pair.mirror("--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _sqlite_catalog(dst.database.name)
    assert rows and rows == _mysql_catalog(src.database.name)
    for table in ("catalog_catalogfile", "catalog_contexthistory", "django_migrations"):
        assert _count(dst.database.name, table) == _count(f"mysql:{src.database.name}", table), table
    counts, expected = mixed_pair.counts("dev"), mixed_pair.counts("test")
    assert counts["kind"] == "dev"
    for key in ("operational_context", "references", "mappings", "contexts"):
        assert counts[key] == expected[key], key
    assert "kept serving: requests were held for" in result.stdout

    # the real crds client syncs every file from the destination, with the source's sha1s
    cache = tmp_path / "client-cache"
    names = sorted(p.name for sub in ("references", "mappings") for p in (src.cache / sub / "hst").iterdir())
    sync = sync_files_flat(dst.local_url, cache, names, "--check-sha1sum")
    assert sync.returncode == 0, sync.stdout + sync.stderr
    import hashlib

    sha1s = {row[0]: row[2] for row in _mysql_catalog(src.database.name)}
    got = {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in cache.rglob("*")
           if p.is_file() and p.name in sha1s}
    assert set(got) == set(names)
    assert all(got[n] == sha1s[n] for n in got)
