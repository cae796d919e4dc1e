"""A restore precomputes get_server_info's download_metadata from the staged database, and the
restarted server uses it only while the live catalog still has the fingerprint it was made for."""

from __future__ import annotations

import json

from mariadb import requires_mysql

from crdsops.runtime import health


def _warm_file(server):
    return server.cfg.layout.server_info_warm


def _restore_warms_and_cleans_up(server):
    server.inv("backup")
    result = server.inv("restore", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "could not precompute" not in result.stdout
    assert not _warm_file(server).exists()  # removed once the health check passed
    info = health.rpc(server.cfg.local_url, "get_server_info")
    assert info["download_metadata"]["crds_encoded"] == "1.0"


def test_sqlite_restore_warms_server_info(sqlite_server):
    _restore_warms_and_cleans_up(sqlite_server)


@requires_mysql
def test_mysql_restore_warms_server_info(mysql_server):
    _restore_warms_and_cleans_up(mysql_server)


def test_warm_payload_is_used_only_for_the_catalog_it_was_made_for(sqlite_server):
    warm = _warm_file(sqlite_server)
    made = sqlite_server.inv("manage", "--", "warm_server_info", "--out", str(warm))
    assert made.returncode == 0, made.stderr
    data = json.loads(warm.read_text())
    marker = {"crds_encoded": "1.0", "crds_payload": "bWFya2Vy"}
    warm.write_text(json.dumps(dict(data, download_metadata=marker)))
    sqlite_server.inv("rerun")
    assert health.rpc(sqlite_server.cfg.local_url, "get_server_info")["download_metadata"] == marker

    # made for another catalog (its fingerprint differs): ignored, the server computes its own
    warm.write_text(json.dumps(dict(data, download_metadata=marker, fingerprint=[0, 0, 0, None])))
    sqlite_server.inv("rerun")
    assert health.rpc(sqlite_server.cfg.local_url, "get_server_info")["download_metadata"] != marker
    warm.unlink()


def test_warm_when_told_computes_only_on_go(sqlite_server):
    """A restore starts the warm-up before the load and says "go" once the database is staged;
    a staging that failed ends its input instead, and nothing is written."""
    warm = _warm_file(sqlite_server)
    warm.unlink(missing_ok=True)
    args = ("manage", "--", "warm_server_info", "--when-told", "--out", str(warm))
    assert sqlite_server.inv(*args).returncode == 0  # stdin at its end at once
    assert not warm.exists()
    assert sqlite_server.inv(*args, input="go\n").returncode == 0
    assert json.loads(warm.read_text())["download_metadata"]["crds_encoded"] == "1.0"
    warm.unlink()
