"""`inv rerun` on hst dev behind Apache/mod_wsgi refuses no client: a graceful reload under real load.

One module-wide server (conftest.py's ``vm``), installed and running; a thread loop of real
requests (tests/clientload.py: the real crds client's JSON-RPC calls and sha1-checked downloads
through Apache, no retry) runs across each rerun and counts refused, reset and 5xx.
"""

from __future__ import annotations

import hashlib

import pytest
import yaml
from clientload import ClientLoad
from vmkinds import apache_processes, requires_vm_services, running_dev

from crdsops.runtime import health

pytestmark = requires_vm_services


@pytest.fixture(scope="module")
def serving(vm):
    with running_dev(vm):
        yield vm


def parent_pid(cfg) -> int:
    return int((cfg.root / "run" / "httpd.pid").read_text())


def children(cfg) -> set[int]:
    """Pids of the Apache workers and mod_wsgi daemons (not the parent)."""
    parent = parent_pid(cfg)
    return {int(line.split(":")[0]) for line in apache_processes(cfg.root)} - {parent}


def config_files(cfg) -> dict[str, str]:
    files = [p for p in (cfg.root / "apache").rglob("*") if p.is_file() and not p.is_symlink()]
    files.append(cfg.root / "crds.wsgi")
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_dry_run_says_graceful_reload(serving):
    out = serving.inv("rerun", "--dry-run").stdout
    assert "reload (graceful)" in out and "apachectl configtest" in out, out
    assert "additive" in out and "stop it" not in out, out


def test_rerun_under_load_refuses_no_request_and_keeps_the_parent(serving):
    cfg = serving.config("hst", "dev")
    parent, workers = parent_pid(cfg), children(cfg)
    with ClientLoad(cfg.local_url, "hst", threads=4) as load:
        result = serving.inv("rerun")
    assert load.failed == 0, load.describe()
    assert load.longest_gap <= 2.0, load.describe()
    assert len(load.requests) > 50, load.describe()
    assert "reloaded gracefully" in result.stdout, result.stdout
    assert parent_pid(cfg) == parent, "the Apache parent changed: a restart, not a graceful reload"
    assert not workers & children(cfg), "the old workers still serve: the new configuration was not taken up"
    assert health.answers(cfg.local_url)
    assert not (cfg.root / "apache.live").exists()


def test_configuration_failing_configtest_is_refused_and_the_old_server_serves(serving):
    cfg = serving.config("hst", "dev")
    parent, before = parent_pid(cfg), config_files(cfg)
    conf = serving.configs / "hst" / "dev.yaml"
    good = conf.read_text()
    data = yaml.safe_load(good)
    data["web"]["host"] = "no-such-host.invalid"  # a typo that reaches httpd.conf's Listen
    conf.write_text(yaml.safe_dump(data))
    try:
        with ClientLoad(cfg.local_url, "hst", threads=2) as load:
            result = serving.inv("rerun", check=False)
    finally:
        conf.write_text(good)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "apachectl configtest" in errors[0] and "no-such-host.invalid" in errors[0], \
        result.stderr
    assert "Traceback" not in result.stderr
    assert load.failed == 0, load.describe()
    assert parent_pid(cfg) == parent
    assert config_files(cfg) == before, "the live Apache configuration was changed"
    assert health.answers(cfg.local_url)


def test_a_rerun_interrupted_after_generating_puts_the_live_configuration_back(serving):
    from interrupting import INTERRUPTED_LINE

    cfg = serving.config("hst", "dev")
    parent = parent_pid(cfg)
    (cfg.root / "crds.wsgi").write_text((cfg.root / "crds.wsgi").read_text() + "# an old entry\n")
    before = config_files(cfg)  # the live entry differs from what install generates
    saved, serving.env = serving.env, dict(serving.env, CRDSOPS_FAILPOINT="apache.generated=sigterm")
    try:
        with ClientLoad(cfg.local_url, "hst", threads=2) as load:
            result = serving.inv("rerun", check=False)
    finally:
        serving.env = saved
    assert result.returncode == 143, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert INTERRUPTED_LINE.match(last) and "is up as before" in last, result.stderr
    assert config_files(cfg) == before, "the generated files were left in place of the live ones"
    assert not (cfg.root / "apache.live").exists()
    assert parent_pid(cfg) == parent and load.failed == 0, load.describe()
    assert health.answers(cfg.local_url)
