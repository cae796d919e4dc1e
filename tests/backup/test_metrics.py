"""Prometheus metrics: written when a task ends, read by Prometheus's own parser and by a real node_exporter.

The values are checked against what the same server says elsewhere (`inv status --json`, `inv
history --json`, git), after a real `inv backup`; node_exporter is Debian's
prometheus-node-exporter (system-packages.txt, [test]) with only its textfile collector on.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import CHECKOUT, free_port, make_configs

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
SERVER = {"observatory": "hst", "kind": "django"}


def with_textfile_dir(server, directory) -> None:
    make_configs(server.ops.where, {(server.obs, server.kind): {"monitoring": {"textfile_dir": str(directory)}}})


def families(text: str) -> dict:
    """{metric name: Metric} as prometheus_client's text parser reads the exposition."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(found: dict, name: str, **labels) -> float:
    (sample,) = [s for s in found[name].samples if s.labels == {**SERVER, **labels}]
    return sample.value


def stamp(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


def test_a_backup_writes_metrics_that_prometheus_parses_with_the_servers_values(sqlite_server, tmp_path):
    server, textfiles = sqlite_server, tmp_path / "textfile"
    with_textfile_dir(server, textfiles)
    before = families(server.inv("metrics").stdout)
    assert value(before, "crdsops_server_up") == 1
    assert before["crdsops_backup_last_success_timestamp_seconds"].samples == []  # none yet: no sample, not a 0

    server.inv("backup")
    path = textfiles / "crdsops_hst_django.prom"
    assert sorted(p.name for p in textfiles.iterdir()) == [path.name]  # the temporary name was renamed
    assert path.stat().st_mode & 0o777 == 0o644  # node_exporter reads it as its own user
    text = path.read_text()
    found = families(text)
    doc = json.loads(server.inv("status", "--json").stdout)
    (run,) = json.loads(server.inv("history", "--json", "--task", "backup").stdout)["entries"]
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CHECKOUT, capture_output=True, text=True,
                              check=True).stdout.strip()

    assert value(found, "crdsops_backup_last_success_timestamp_seconds") == stamp(doc["verified_backup"]["created"])
    assert value(found, "crdsops_backup_last_size_bytes") == doc["verified_backup"]["size"] > 0
    assert value(found, "crdsops_backup_last_duration_seconds") == run["seconds"] > 0
    assert value(found, "crdsops_backup_shared_last_success_timestamp_seconds") == stamp(doc["shared"]["created"])
    assert value(found, "crdsops_task_last_result", task="backup") == 1
    assert value(found, "crdsops_task_last_timestamp_seconds", task="backup") == pytest.approx(
        stamp(run["at"]) + run["seconds"], abs=0.01)
    assert abs(value(found, "crdsops_task_last_timestamp_seconds", task="backup") - time.time()) < 120
    assert value(found, "crdsops_server_up") == 1 and value(found, "crdsops_maintenance_mode") == 0
    (release,) = found["crdsops_release_info"].samples
    assert release.labels["revision"] == revision and release.value == 1
    for family in found.values():
        assert family.type == "gauge" and family.documentation, family.name
        assert all(s.labels.items() >= SERVER.items() for s in family.samples), family.name
    assert server.inv("metrics").stdout == path.read_text() == text  # the same text, printed or written


def test_a_failed_backup_and_a_stopped_server_show_in_the_metrics(sqlite_server, tmp_path):
    server, textfiles = sqlite_server, tmp_path / "textfile"
    with_textfile_dir(server, textfiles)
    server.inv("backup")
    good = value(families((textfiles / "crdsops_hst_django.prom").read_text()),
                 "crdsops_backup_last_success_timestamp_seconds")
    failed = server.inv("backup", env={**server.ops.env, "CRDSOPS_FAILPOINT": "backup.dumped=fail"}, check=False)
    assert failed.returncode == 1
    found = families((textfiles / "crdsops_hst_django.prom").read_text())
    assert value(found, "crdsops_task_last_result", task="backup") == 0
    assert value(found, "crdsops_backup_last_success_timestamp_seconds") == good  # the last success stays

    server.inv("stop")
    found = families((textfiles / "crdsops_hst_django.prom").read_text())
    assert value(found, "crdsops_server_up") == 0
    assert value(found, "crdsops_task_last_result", task="stop") == 1


def test_metrics_that_cannot_be_written_are_one_warning_and_the_task_still_succeeds(sqlite_server, tmp_path):
    server = sqlite_server
    (tmp_path / "a-file").write_text("in the way\n")
    with_textfile_dir(server, tmp_path / "a-file" / "textfile")
    result = server.inv("status", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: could not write the metrics to "), result.stderr
    assert "monitoring.textfile_dir" in warnings[0]


@pytest.fixture
def node_exporter(tmp_path):
    if NODE_EXPORTER is None:
        pytest.skip("prometheus-node-exporter is not installed (system-packages.txt, [test])")
    textfiles, port = tmp_path / "textfile", free_port()
    textfiles.mkdir()
    proc = subprocess.Popen(
        [NODE_EXPORTER, "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={textfiles}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield textfiles, f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(url: str, deadline: float = 10) -> str:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def test_node_exporter_serves_the_metrics_a_backup_wrote(sqlite_server, node_exporter):
    server, (textfiles, url) = sqlite_server, node_exporter
    with_textfile_dir(server, textfiles)
    server.inv("backup")
    body = scrape(url)
    line = next((row for row in body.splitlines()
                 if row.startswith('crdsops_backup_last_success_timestamp_seconds{kind="django",observatory="hst"} ')),
                None)
    assert line is not None, body
    scraped, written = families(body), families((textfiles / "crdsops_hst_django.prom").read_text())
    assert value(scraped, "crdsops_backup_last_success_timestamp_seconds") == value(
        written, "crdsops_backup_last_success_timestamp_seconds")
    assert [s.value for s in scraped["node_textfile_scrape_error"].samples] == [0]  # it read our file whole
