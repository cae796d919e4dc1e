"""A running server holds requests while crdsops swaps (never refusing them) and takes up a new
catalog when the generation file says so, without a restart (server/crds_server/serving.py)."""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serverproc import SERVER_DIR
from servingkit import HOLD_TIMEOUT, call

from crdsops.runtime import health, service

sys.path.insert(0, str(SERVER_DIR))
from crds_server.catalog.demo import demo_dataset, demo_set  # noqa: E402

PROBE = {"X-Crdsops-Probe": "1"}


@pytest.fixture
def hold(served):
    path = served.cfg.layout.hold
    path.write_text("restore\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def test_a_request_waits_while_the_hold_file_exists_and_is_answered_once_it_goes(served, hold):
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call, served.url, "get_default_context", "hst")
        time.sleep(1.0)
        assert not pending.done(), "the request was answered while the hold file existed"
        hold.unlink()
        seconds, status, reply, _ = pending.result(timeout=10)
    assert status == 200 and reply["error"] is None and reply["result"].endswith(".pmap")
    assert 1.0 <= seconds < HOLD_TIMEOUT, f"held {seconds:.2f} s"


def test_a_hold_that_outlives_the_timeout_is_served_after_the_timeout(served, hold):
    seconds, status, reply, _ = call(served.url, "get_default_context", "hst")
    assert status == 200 and reply["error"] is None
    assert HOLD_TIMEOUT - 0.1 <= seconds < HOLD_TIMEOUT + 2, f"held {seconds:.2f} s"


def test_a_stale_hold_file_holds_nothing(served, hold):
    long_ago = time.time() - (HOLD_TIMEOUT + 10)  # a crdsops that died during a swap left it
    os.utime(hold, (long_ago, long_ago))
    seconds, status, reply, _ = call(served.url, "get_default_context", "hst")
    assert status == 200 and reply["error"] is None
    assert seconds < 1.0, f"held {seconds:.2f} s by a stale hold file"


def test_probes_are_not_held(served, hold):
    seconds, status, reply, _ = call(served.url, "get_catalog_counts", headers=PROBE)
    assert status == 200 and reply["error"] is None
    assert seconds < 1.0, f"a probe was held {seconds:.2f} s"
    started = time.monotonic()  # crdsops' own health check says it is a probe
    health.catalog_counts(served.cfg.local_url)
    assert time.monotonic() - started < 1.0


# ------------------------------------------------------------------ a new catalog generation


def _server_info(served) -> tuple[set[str], datetime.datetime]:
    """The names get_server_info lists, and when the server computed that answer."""
    _, status, reply, _ = call(served.url, "get_server_info")
    assert status == 200 and reply["error"] is None, reply
    info = reply["result"]
    listing = json.loads(gzip.decompress(base64.b64decode(info["download_metadata"]["crds_payload"])))
    computed = datetime.datetime.strptime(info["last_synced"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    return set(listing), computed


def _fresh_server_info(served) -> set[str]:
    """get_server_info's names, once the server's cached answer is young: the test then runs
    well within the cache's TTL (10 s, CRDS_SERVER_INFO_TTL), where only a new generation can
    show a new catalog."""
    for _ in range(150):
        names, computed = _server_info(served)
        if datetime.datetime.now(datetime.UTC) - computed < datetime.timedelta(seconds=4):
            return names
        time.sleep(0.1)  # past the TTL, the request that saw it started a refresh
    raise AssertionError(f"the server's get_server_info answer never became fresh: computed {computed}")


def _swap_in_a_catalog_with(db: str, name: str) -> None:
    """What a SQLite restore does: a staged copy of the catalog, one file more, renamed into place."""
    staged = f"{db}.staged"
    shutil.copyfile(db, staged)
    con = sqlite3.connect(staged)
    try:
        columns = [row[1] for row in con.execute("PRAGMA table_info(catalog_catalogfile)") if row[1] != "id"]
        copied = ", ".join("?" if column == "name" else column for column in columns)
        con.execute(f"INSERT INTO catalog_catalogfile ({', '.join(columns)}) "
                    f"SELECT {copied} FROM catalog_catalogfile WHERE filekind = 'reference' LIMIT 1", (name,))
        con.commit()
    finally:
        con.close()
    os.replace(staged, db)


def test_a_new_generation_is_served_without_a_restart(served):
    layout, name = served.cfg.layout, "hst_swapped_in_0001.fits"
    pid = service.running_pid(served.cfg)
    before = _fresh_server_info(served)
    assert name not in before
    _swap_in_a_catalog_with(str(served.cfg.database.name), name)
    # the swap alone: the process still answers from what it cached of the old catalog
    names, _ = _server_info(served)
    assert name not in names, "the new catalog was served before its generation was announced"
    tmp = layout.catalog_generation.with_suffix(".tmp")
    tmp.write_text(f"{time.time_ns()}\n")
    os.replace(tmp, layout.catalog_generation)
    names, _ = _server_info(served)
    assert names == before | {name}
    assert service.running_pid(served.cfg) == pid  # no restart


def _best_dark(served, context: str) -> str:
    _, status, reply, _ = call(served.url, "get_best_references", context, demo_dataset("hst").header, ["darkfile"])
    assert status == 200 and reply["error"] is None, reply
    return reply["result"]["darkfile"]


def _rewrite_mapping_in_place(path, old: str, new: str) -> None:
    """`path` with `old` replaced by `new` and a correct sha1sum (the crds library checks it), written into
    the same file: the mappings directory keeps its mtime, so only the generation can tell the server."""
    directory = os.stat(path.parent)
    text = path.read_text().replace(old, new)
    unsummed = "".join(line for line in text.splitlines(True) if "sha1sum" not in line)
    text = re.sub(r"'sha1sum' : '[0-9a-f]+'", f"'sha1sum' : '{hashlib.sha1(unsummed.encode()).hexdigest()}'", text)
    mode = path.stat().st_mode
    path.chmod(mode | stat.S_IWUSR)
    with open(path, "r+", encoding="utf-8") as handle:
        handle.write(text)
        handle.truncate()
    path.chmod(mode)
    os.utime(path.parent, ns=(directory.st_atime_ns, directory.st_mtime_ns))


def test_a_new_generation_drops_the_loaded_rules_of_a_context(served):
    """get_best_references under a context the process has loaded, after a swap that changed what the
    context's rmap selects: the old answer until the generation file moves on, the new one after."""
    context, pid = demo_set("hst").context, service.running_pid(served.cfg)
    rmap = served.cfg.layout.mappings / "hst_acs_darkfile_0001.rmap"
    assert _best_dark(served, context) == "d0m00002j_drk.fits"  # loaded and kept by the process
    original = rmap.read_bytes()
    try:
        _rewrite_mapping_in_place(rmap, "'2010-01-01 00:00:00' : 'd0m00002j_drk.fits'",
                                  "'2010-01-01 00:00:00' : 'd0m00004j_drk.fits'")
        assert _best_dark(served, context) == "d0m00002j_drk.fits", \
            "the rules were reloaded without a new generation: this test would not see the cache"
        tmp = served.cfg.layout.catalog_generation.with_suffix(".tmp")
        tmp.write_text(f"{time.time_ns()}\n")
        os.replace(tmp, served.cfg.layout.catalog_generation)
        assert _best_dark(served, context) == "d0m00004j_drk.fits", "the context's rules outlived its catalog"
    finally:
        rmap.chmod(rmap.stat().st_mode | stat.S_IWUSR)
        rmap.write_bytes(original)
        tmp = served.cfg.layout.catalog_generation.with_suffix(".tmp")
        tmp.write_text(f"{time.time_ns()}\n")
        os.replace(tmp, served.cfg.layout.catalog_generation)
    assert service.running_pid(served.cfg) == pid  # no restart
