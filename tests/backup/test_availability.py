"""No operation refuses a client: hst django (runserver + SQLite) under the real client's load (tests/clientload.py).

The crds client does not retry, so every refused or reset request is a failed pipeline job.
"""

from __future__ import annotations

from clientload import under_load

from crdsops.runtime import health


def _drop_one_reference(server) -> str:
    """Delete one reference's catalog row (what a restore must bring back); its name."""
    name = next(r[1] for r in server.rows()["catalog_catalogfile"] if str(r[1]).endswith(".fits"))
    server.sql(f"DELETE FROM catalog_catalogfile WHERE name = '{name}'")
    return name


def test_restore_refuses_no_client(sqlite_server):
    sqlite_server.inv("backup")
    backed_up = sqlite_server.rows()
    gone = _drop_one_reference(sqlite_server)
    assert sqlite_server.rows() != backed_up

    _, load = under_load(sqlite_server.cfg.local_url, "hst", lambda: sqlite_server.inv("restore", "--yes"))

    assert sqlite_server.rows() == backed_up, f"{gone} not restored"
    assert load.failed == 0, load.describe()
    assert load.longest_gap <= 2, load.describe()


def test_rerun_refuses_no_client(sqlite_server):
    _, load = under_load(sqlite_server.cfg.local_url, "hst", lambda: sqlite_server.inv("rerun"))

    assert sqlite_server.pid() is not None and health.answers(sqlite_server.cfg.local_url)
    assert load.failed == 0, load.describe()
    assert load.longest_gap <= 0.5, load.describe()
