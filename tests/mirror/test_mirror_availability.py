"""No operation refuses a client: `inv mirror` test -> dev over the real sshd, with the real client's load on dev."""

from __future__ import annotations

import sqlite3

from clientload import under_load


def _catalog(cfg) -> list:
    con = sqlite3.connect(cfg.database.name)
    try:
        return con.execute("SELECT name, sha1sum, state FROM catalog_catalogfile ORDER BY name").fetchall()
    finally:
        con.close()


def test_mirror_refuses_no_client_of_the_destination(pair):
    pair.ops["dev"].inv("manage", "--", "seed_demo")  # files for dev's clients to download before the mirror
    pair.ops["dev"].inv("rerun")  # its get_server_info is kept warm: the restart reads the seeded context
    con = sqlite3.connect(pair.dst_cfg.database.name)  # and dev differs from test
    with con:
        con.execute("DELETE FROM catalog_catalogfile WHERE name = "
                    "(SELECT MIN(name) FROM catalog_catalogfile WHERE name LIKE '%.fits')")
    con.close()
    assert _catalog(pair.dst_cfg) != _catalog(pair.src_cfg)

    result, load = under_load(pair.dst_cfg.local_url, "hst", lambda: pair.mirror("--yes"))

    assert result.returncode == 0, result.stderr
    assert _catalog(pair.dst_cfg) == _catalog(pair.src_cfg)
    assert load.failed == 0, load.describe()
    assert load.longest_gap <= 2, load.describe()
