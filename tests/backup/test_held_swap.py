"""An interrupted swap refuses no client: the interrupt waits for the end of the held swap, then the
reverse swap (held the same way) puts the old state back, and the server never stopped answering."""

from __future__ import annotations

import pytest
from clientload import under_load


@pytest.mark.parametrize("point, signal", [("swap.held", "sigint"), ("restore.swapped", "sigterm")])
def test_a_swap_interrupted_at_the_hold_refuses_no_client_and_serves_the_old_state(sqlite_server, point, signal):
    server = sqlite_server
    server.inv("backup")
    server.sql("UPDATE catalog_catalogfile SET description = 'newer state' WHERE id = 1")
    rows, files, pid = server.rows(), server.support_files(), server.pid()
    env = dict(server.ops.env, CRDSOPS_FAILPOINT=f"{point}={signal}")
    result, load = under_load(server.cfg.local_url, "hst",
                              lambda: server.inv("restore", "--yes", check=False, env=env))
    assert result.returncode != 0 and "interrupted" in result.stderr, result.stdout + result.stderr
    assert load.failed == 0, load.describe()
    assert load.longest_gap <= 2, load.describe()
    assert server.pid() == pid and server.answers()
    assert server.rows() == rows and server.support_files() == files
    assert not server.cfg.layout.hold.exists()
