"""`inv fleet-status` over real sshd "VMs": per-host state, backup age, context and drift from the
tier above; `--json`; `--html FILE` rendered by headless Chromium; and the audit line of a task that
came from `fab` on a control host.

The fleet: hst test on 127.0.0.2 (seeded with the demo catalog, backed up, running), hst dev on
127.0.0.3 (empty catalog, running), hst ops configured on 127.0.0.4 where nothing listens.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess

import pytest

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--disable-sync", "--disable-component-update"]


@pytest.fixture(scope="module")
def both_up(fleet):
    fleet.ops["test"].inv("stop")  # the server caches its info: seed while it is down
    fleet.ops["test"].inv("manage", "--", "seed_demo")
    fleet.ops["test"].inv("run")
    fleet.ops["test"].inv("backup")
    fleet.ops["dev"].inv("run")
    return fleet


def servers(result) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(result.stdout)["servers"]}


def test_fleet_status_json_says_state_backup_age_context_and_drift(both_up):
    result = both_up.inv("fleet-status", "--obs", "hst", "--json")
    assert result.returncode == 1, result.stderr  # hst.ops is unreachable
    doc = json.loads(result.stdout)
    assert doc["schema"] == 1 and doc["exit"] == 1
    by_name = servers(result)
    assert set(by_name) == {"hst.test", "hst.dev", "hst.ops"}
    test, dev, ops = by_name["hst.test"], by_name["hst.dev"], by_name["hst.ops"]
    assert test["state"] == "ok" and test["status"]["context"] == "hst_0001.pmap"
    assert test["status"]["verified_backup"]["age_seconds"] < 600
    assert test["source"] == "hst.ops" and test["drift_note"] == "hst.ops unreachable" and test["drift"] == []
    assert dev["state"] == "ok" and dev["source"] == "hst.test"
    assert "references 0 vs 4" in dev["drift"] and "mappings 0 vs 7" in dev["drift"]
    assert any(d.startswith("context ") and d.endswith(" vs hst_0001.pmap") for d in dev["drift"])
    assert ops["state"] == "UNREACHABLE" and ops["exit"] is None and "cannot reach" in ops["summary"]


def test_fleet_status_text_is_one_line_per_host(both_up):
    result = both_up.inv("fleet-status", "--obs", "hst")
    assert result.returncode == 1
    by_name = {ln.split()[0]: ln for ln in result.stdout.splitlines() if ln.startswith("hst.")}
    assert re.search(r" ok +\(exit 0\) context hst_0001\.pmap, backup \d+s ago, hst\.ops unreachable", by_name["hst.test"])
    assert "drift vs hst.test: " in by_name["hst.dev"] and "references 0 vs 4" in by_name["hst.dev"]
    assert "UNREACHABLE" in by_name["hst.ops"] and "cannot reach" in by_name["hst.ops"]
    assert "2 of 3 host(s) ok; failed: hst.ops" in result.stdout


def test_no_drift_and_a_warning_exit_2(both_up):
    """Only test and dev; dev's backups checked with a 1s threshold so that it warns: exit 2."""
    from support import make_configs

    make_configs(both_up.where, {("hst", "dev"): {"monitoring": {"backup_max_age": "1s"}}})
    try:
        result = both_up.inv("fleet-status", "--obs", "hst", "--kinds", "test,dev", "--json")
    finally:
        make_configs(both_up.where, {("hst", "dev"): {"monitoring": {"backup_max_age": "26h"}}})
    assert result.returncode == 2, result.stdout
    dev = servers(result)["hst.dev"]
    assert dev["state"] == "WARN" and dev["status"]["exit"] == 2
    assert dev["summary"].startswith("backup: no newest verified backup")


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (make test installs it)")
def test_the_html_page_renders_in_a_browser(both_up, tmp_path):
    page = tmp_path / "fleet.html"
    result = both_up.inv("fleet-status", "--obs", "hst", "--html", str(page))
    assert result.returncode == 1 and f"page: {page}" in result.stdout
    text = page.read_text()
    for fetches in ("<script", "<link", "src=", "href=", "url(", "@import"):
        assert fetches not in text  # self-contained: nothing is fetched from anywhere
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rows = dict(re.findall(r'<tr data-server="([^"]+)" data-state="([^"]+)"', dom.stdout))
    assert rows == {"hst.test": "ok", "hst.dev": "ok", "hst.ops": "UNREACHABLE"}
    assert re.search(r'<table data-observatory="hst">', dom.stdout)
    test_row = re.search(r'<tr data-server="hst.test".*?</tr>', dom.stdout, re.S).group(0)
    assert "hst_0001.pmap" in test_row and re.search(r">\d+s ago<", test_row)
    dev_row = re.search(r'<tr data-server="hst.dev".*?</tr>', dom.stdout, re.S).group(0)
    assert "vs hst.test:" in dev_row and "references 0 vs 4" in dev_row
    shot = tmp_path / "fleet.png"
    taken = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                            "--window-size=1400,700", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0, taken.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 700) and len(png) > 10_000


def test_a_task_sent_by_fab_is_logged_with_its_control_host(both_up):
    result = both_up.fab("-H", both_up.test_host.spec, "backup")
    assert result.returncode == 0, result.stderr
    log = both_up.ops["test"].config("hst", "test").layout.audit_log
    line = json.loads(log.read_text().splitlines()[-1])
    assert line["task"] == "backup" and line["result"] == "ok"
    assert line["who"]["via"] == f"root@{socket.gethostname()}"
    assert line["who"]["ssh"].split()[0].startswith("127.0.0.")
    history = both_up.fab("-H", both_up.test_host.spec, "history", "-n", "1")
    assert history.returncode == 0, history.stderr
    assert f"root via fab on root@{socket.gethostname()}" in history.stdout
