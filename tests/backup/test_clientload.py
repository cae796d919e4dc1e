"""The client-load harness (tests/clientload.py) sees what a pipeline job would: a stop refuses, nothing fails otherwise."""

from __future__ import annotations

import time

from clientload import ClientLoad, Report, Request, under_load


def test_quiet_server_answers_every_request(sqlite_server):
    _, report = under_load(sqlite_server.cfg.local_url, "hst", lambda: time.sleep(1.0))
    assert report.failed == 0, report.describe()
    # about 80 requests/s over the 3 s, every kind of request made
    assert len(report.requests) >= 150, report.describe()
    assert {r.what for r in report.requests} == {"get_server_info", "get_file_info_map", "list_mappings", "download"}
    assert report.longest_gap < 0.5, report.describe()


def test_stop_then_run_is_seen_as_refused_requests_and_a_gap(sqlite_server):
    with ClientLoad(sqlite_server.cfg.local_url, "hst") as load:
        time.sleep(1.0)
        sqlite_server.inv("stop")
        time.sleep(1.0)  # down for at least this long
        sqlite_server.inv("run")
        time.sleep(1.0)
    report = load.report
    assert report.failures.get("refused", 0) > 0, report.describe()
    assert report.longest_gap >= 1.0, report.describe()
    # the server came back: the last requests succeeded
    assert report.requests[-1].outcome == "ok" or report.requests[-2].outcome == "ok", report.describe()
    assert "refused" in load.describe()


def test_longest_gap_counts_the_block_edges():
    ok = [Request("x", 1.0, 1.1, "ok"), Request("x", 2.0, 2.2, "ok"), Request("x", 2.3, 2.4, "refused")]
    assert abs(Report(tuple(ok), 0.0, 5.0).longest_gap - 2.8) < 1e-9  # 2.2 .. 5.0: no answer
    assert Report((), 0.0, 3.0).longest_gap == 3.0
    assert Report(tuple(ok), 0.0, 5.0).failures == {"refused": 1}


def test_a_reference_changed_in_the_cache_is_wrong_content(sqlite_server):
    """The downloads are checked against the catalog's sha1sum, as the client's verify_file does."""
    reference = next((sqlite_server.cfg.cache / "references" / "hst").glob("*.fits"))
    data = bytearray(reference.read_bytes())
    data[-1] ^= 0xFF  # same size, another sha1
    reference.write_bytes(bytes(data))
    _, report = under_load(sqlite_server.cfg.local_url, "hst", lambda: None, before=1.0, after=0.0)
    assert report.failures.get("wrong content", 0) > 0, report.describe()
    assert set(report.failures) == {"wrong content"}, report.describe()
