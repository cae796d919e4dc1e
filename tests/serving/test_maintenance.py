"""`inv maintenance on|off|status`: the real crds client is refused with the operator's message
(HTTP 503, Retry-After, a JSON-RPC error), files still download, `inv status` and the status
page say so, the audit log keeps both runs, and `off` serves again."""

from __future__ import annotations

import json
import urllib.request

import pytest
from crdsclient import PYTHON, client_env, crds, layout, run_client
from servingkit import call

MESSAGE = "catalog repair until 14:00 UTC"
API_CALL = "from crds.client import api; print(api.get_default_context('hst'))"


@pytest.fixture(autouse=True)
def maintenance_off_afterwards(served):
    yield
    served.cfg.layout.maintenance.unlink(missing_ok=True)  # a failed test leaves the next one a served server


def _audit(served) -> list[dict]:
    lines = served.cfg.layout.audit_log.read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["task"] == "maintenance"]


def _line(text: str, key: str) -> str | None:
    return next((row for row in text.splitlines() if row.startswith(key + ":")), None)


def _assert_refused(served, tmp_path):
    _, status, reply, headers = call(served.url, "get_server_info")
    assert status == 503 and headers["Retry-After"] == "120"
    assert headers["Content-Type"] == "application/json"
    assert reply["error"]["message"] == MESSAGE and reply["result"] is None
    # the real client: its library call fails with the message; its command line says it with --verbose
    api = run_client([PYTHON, "-c", API_CALL], client_env(served, tmp_path / "api"))
    assert api.returncode != 0 and f"HTTP Error 503: CRDS server maintenance: {MESSAGE}" in api.output, api.output
    listed = crds(served, tmp_path / "cli", "list", "--status", "--verbose")
    assert listed.returncode != 0 and MESSAGE in listed.output, listed.output
    # crdsops' own probes still get answers
    _, status, reply, _ = call(served.url, "get_catalog_counts", headers={"X-Crdsops-Probe": "1"})
    assert status == 200 and reply["error"] is None


def _assert_files_and_page(served):
    name = layout("hst").refs["current"]
    with urllib.request.urlopen(f"{served.url}/unchecked_get/references/hst/{name}", timeout=30) as answer:
        assert answer.status == 200
        assert answer.read() == (served.cfg.layout.references / name).read_bytes()
    with urllib.request.urlopen(f"{served.url}/", timeout=30) as answer:
        page = answer.read().decode()
    assert "In maintenance since" in page and MESSAGE in page


def test_maintenance_refuses_clients_with_its_message_until_turned_off(served, tmp_path):
    on = served.inv("maintenance", "on", "--message", MESSAGE, "--retry-after", "120")
    assert "maintenance on" in on.stdout
    assert served.cfg.layout.maintenance.stat().st_mode & 0o777 == 0o644  # the web user reads it
    _assert_refused(served, tmp_path)
    _assert_files_and_page(served)

    status = served.inv("status", check=False)
    assert status.returncode == 2, status.stdout  # a warning: forgotten, it is an outage that looks healthy
    line = _line(status.stdout, "maintenance")
    assert line and MESSAGE in line and "by root@" in line and "ON since 20" in line, status.stdout
    assert _line(status.stdout, "answers").endswith("yes")
    doc = json.loads(served.inv("status", "--json", check=False).stdout)
    assert doc["maintenance"]["message"] == MESSAGE and doc["maintenance"]["retry_after"] == 120
    assert MESSAGE in served.inv("maintenance", "status").stdout

    served.inv("maintenance", "off")
    assert not served.cfg.layout.maintenance.exists()
    _, status_code, reply, _ = call(served.url, "get_server_info")
    assert status_code == 200 and reply["error"] is None
    listed = crds(served, tmp_path / "after", "list", "--status")
    assert listed.returncode == 0, listed.output
    status = served.inv("status", check=False)
    assert _line(status.stdout, "maintenance") is None and status.returncode == 0, status.stdout
    assert "maintenance: off" in served.inv("maintenance", "status").stdout

    entries = _audit(served)[-2:]
    assert [(e["result"], e["flags"].get("action"), e["touched"]["on"]) for e in entries] == \
        [("ok", "on", True), ("ok", "off", False)]
    assert entries[0]["touched"]["message"] == MESSAGE and entries[0]["touched"]["retry_after"] == 120


def test_bad_flags_change_nothing(served):
    before = len(_audit(served)) if served.cfg.layout.audit_log.exists() else 0
    for args, says in ((["--retry-after", "0"], "--retry-after '0' is not a positive number of seconds"),
                       (["--message", "tab\there ünicode"], "printable ASCII")):
        result = served.inv("maintenance", "on", *args, check=False)
        assert result.returncode == 1 and says in result.stderr, result.stderr
    result = served.inv("maintenance", "sideways", check=False)
    assert result.returncode == 1 and "say on, off or status" in result.stderr
    assert not served.cfg.layout.maintenance.exists()
    _, status, _, _ = call(served.url, "get_server_info")
    assert status == 200
    assert len(_audit(served)) == before  # refused before acting: nothing to audit
