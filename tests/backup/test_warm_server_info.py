"""A restore precomputes get_server_info's download_metadata from the staged database, and the
server uses it, after the swap, only for the catalog generation that swap wrote, shortly after it,
and while no row was added."""

from __future__ import annotations

import base64
import gzip
import json

from mariadb import requires_mysql

from crdsops.runtime import health

# what the server logs when it takes download_metadata from the warm file (catalog/warm.py)
ADOPTED = "server info: download_metadata from the warm file"


def _warm_file(server):
    return server.cfg.layout.server_info_warm


def _log_size(server) -> int:
    log = server.cfg.layout.server_log
    return log.stat().st_size if log.exists() else 0


def _log_since(server, offset: int) -> str:
    with open(server.cfg.layout.server_log, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def _listing(server) -> dict:
    """get_server_info's download_metadata as the client decodes it: {name: {size, sha1sum}}."""
    metadata = health.rpc(server.cfg.local_url, "get_server_info")["download_metadata"]
    assert metadata["crds_encoded"] == "1.0", metadata
    return json.loads(gzip.decompress(base64.b64decode(metadata["crds_payload"])))


def _restore_serves_the_first_server_info_warm(server):
    server.inv("backup")
    # the live catalog moves on after the backup: only the restored catalog fits the warm file,
    # so the old server could not have taken it even if it had been asked during the staging
    server.sql("UPDATE catalog_catalogfile SET size = size + 1")
    offset = _log_size(server)
    result = server.inv("restore", "--yes")
    assert "could not precompute" not in result.stdout, result.stdout + result.stderr
    # kept after the swap: every server process reads it on its first get_server_info after the
    # new catalog generation (the generation, the swap's age and the highest id guard it)
    assert _warm_file(server).exists()
    served = _listing(server)  # the first get_server_info since the swap
    log = _log_since(server, offset)
    adopted = [line for line in log.splitlines() if ADOPTED in line]
    assert adopted, f"the server computed its first server info after the swap itself; its log since:\n{log}"

    # a restart with no warm file computes download_metadata itself, says nothing about a warm
    # file, and lists the same files as the warm payload did (it was made for the restored catalog)
    _warm_file(server).unlink()
    offset = _log_size(server)
    server.inv("rerun")
    computed = _listing(server)
    log = _log_since(server, offset)
    assert ADOPTED not in log, log
    assert served == computed


def test_sqlite_restore_warms_server_info(sqlite_server):
    _restore_serves_the_first_server_info_warm(sqlite_server)


@requires_mysql
def test_mysql_restore_warms_server_info(mysql_server):
    _restore_serves_the_first_server_info_warm(mysql_server)


def test_warm_payload_is_used_only_for_the_catalog_it_was_made_for(sqlite_server):
    import os
    import time

    warm, generation = _warm_file(sqlite_server), sqlite_server.cfg.layout.catalog_generation
    marker = {"crds_encoded": "1.0", "crds_payload": "bWFya2Vy"}

    def served_after(token: str, edit=lambda data: data, swapped_ago: float = 0) -> tuple[object, str]:
        """get_server_info's download_metadata after a restart under generation ``token`` with the
        warm file made for generation "G1" (then changed by ``edit``), and what the server logged."""
        sqlite_server.inv("manage", "--", "warm_server_info", "--out", str(warm), "--generation", "G1")
        data = json.loads(warm.read_text())
        warm.write_text(json.dumps(edit(dict(data, download_metadata=marker))))
        generation.write_text(token + "\n")
        when = time.time() - swapped_ago
        os.utime(generation, (when, when))
        offset = _log_size(sqlite_server)
        sqlite_server.inv("rerun")
        served = health.rpc(sqlite_server.cfg.local_url, "get_server_info")["download_metadata"]
        return served, _log_since(sqlite_server, offset)

    served, log = served_after("G1")
    assert served == marker and ADOPTED in log, log

    # made for another generation (another swap's staging, or one rolled back): ignored
    served, log = served_after("G2")
    assert served != marker and ADOPTED not in log, log
    assert "ignored, made for catalog generation G1, the live one is G2" in log, log

    # a row was added since it was made: ignored
    served, log = served_after("G1", lambda data: dict(data, top=data["top"] - 1))
    assert served != marker and "ignored, made for a catalog whose highest id was" in log, log

    # the swap was an hour ago (a process first asked long after it): ignored
    served, log = served_after("G1", swapped_ago=3600)
    assert served != marker and "ignored, the swap to generation G1 was 36" in log, log
    warm.unlink()


def test_warm_when_told_computes_only_on_go(sqlite_server):
    """A restore starts the warm-up before the load and says "go" once the database is staged;
    a staging that failed ends its input instead, and nothing is written."""
    warm = _warm_file(sqlite_server)
    warm.unlink(missing_ok=True)
    args = ("manage", "--", "warm_server_info", "--when-told", "--out", str(warm))
    sqlite_server.inv(*args)  # stdin at its end at once
    assert not warm.exists()
    sqlite_server.inv(*args, input="go\n")
    assert json.loads(warm.read_text())["download_metadata"]["crds_encoded"] == "1.0"
    warm.unlink()
