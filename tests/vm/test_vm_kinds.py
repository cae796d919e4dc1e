"""hst dev for real: MariaDB behind, Apache/mod_wsgi in front, driven through `inv` like a user.

One module-wide server (see conftest.py): the life-cycle test installs it, the bad-input
tests reuse it or make their own broken copies; all clean up databases and processes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mariadb import root_sql
from support import CHECKOUT, free_port, make_configs
from vmkinds import CmdlineSampler, apache_processes, requires_vm_services, vm_ops, vm_overrides, web_dir

from crdsops.runtime import health

pytestmark = requires_vm_services
PYTHON = str(CHECKOUT / ".venv" / "bin" / "python")


def demo_files(where: Path) -> tuple[str, list[Path]]:
    """The server's demo set written as plain files to ingest: (context, paths)."""
    sys.path.insert(0, str(CHECKOUT / "server"))
    try:
        from crds_server.catalog.demo import demo_set
    finally:
        sys.path.remove(str(CHECKOUT / "server"))
    demo = demo_set("hst")
    where.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in demo.files.items():
        path = where / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        paths.append(path)
    return demo.context, paths


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, f"expected a failure, got exit 0:\n{result.stdout}"
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_install_run_sync_status_stop_without_password_on_any_command_line(vm, tmp_path):
    cfg = vm.config("hst", "dev")
    account = vm.account
    with CmdlineSampler(account.password) as sampler:
        out = vm.inv("install", "--obs", "hst", "--kind", "dev").stdout
        assert f"created MySQL database {account.database}" in out
        assert account.database_exists()
        assert (cfg.root / "apache" / "apachectl").exists()

        context, files = demo_files(tmp_path / "incoming")
        vm.inv("manage", "--", "ingest", *map(str, files))
        vm.inv("manage", "--", "shell", "-c",
               f"from crds_server.catalog.ingest import record_context; record_context({context!r})")
        catalog_rows = account.rows("catalog_catalogfile")
        assert catalog_rows == len(files)

        vm.inv("run")
        try:
            info = health.rpc(cfg.local_url, "get_server_info")
            assert info["observatory"] == "hst" and info["operational_context"] == context

            # Apache, not Django, delivers files: its ETag and byte ranges (Django's FileResponse sets neither).
            reference = next(p.name for p in files if p.suffix == ".fits")
            with urllib.request.urlopen(f"{cfg.local_url}/unchecked_get/references/hst/{reference}") as response:
                body = response.read()
                assert response.headers.get("ETag") and response.headers.get("Accept-Ranges") == "bytes"
            assert body == (tmp_path / "incoming" / reference).read_bytes()

            # The real crds client syncs the reference through Apache; sha1sum matches the catalog.
            client_cache = tmp_path / "client-cache"
            env = dict(os.environ, CRDS_SERVER_URL=cfg.local_url, CRDS_PATH=str(client_cache), CRDS_MODE="remote")
            env.pop("CRDS_OBSERVATORY", None)
            sync = subprocess.run([PYTHON, "-m", "crds.sync", "--hst", "--organize=flat", "--files", reference],
                                  env=env, capture_output=True, text=True, timeout=120)
            assert sync.returncode == 0, sync.stderr
            synced = next(client_cache.rglob(reference))
            sha1 = hashlib.sha1(synced.read_bytes()).hexdigest()
            assert sha1 == health.rpc(cfg.local_url, "get_file_info", None, reference)["sha1sum"]

            status = vm.inv("status").stdout
            assert "answers:    yes" in status and f"mysql {account.database}" in status
            assert f"{len([f for f in files if f.suffix == '.fits'])} references" in status

            # Django tests against test_<db> (never the live one), then the live checks through Apache.
            tests = vm.inv("runtests", timeout=600)
            assert "0 failed" in tests.stdout and "crds sync" in tests.stdout
            assert account.rows("catalog_catalogfile") == catalog_rows, "runtests touched the live database"
            assert not account.database_exists(f"test_{account.database}")

            shell = vm.inv("manage", "--", "dbshell", input="SELECT 40 + 2;\n", check=False, timeout=60)
            assert shell.returncode == 0 and "42" in shell.stdout, shell.stderr
        finally:
            vm.inv("stop")
    assert not apache_processes(cfg.root), "inv stop left Apache/mod_wsgi processes behind"
    assert vm.inv("status", check=False).returncode == 1
    assert sampler.samples > 50
    assert not sampler.leaks, f"the database password appeared on a command line: {sampler.leaks[:1]}"
    seen = " ".join(sampler.mysql_commands)
    assert "--defaults-file=" in seen or "--defaults-extra-file=" in seen, (
        f"the sampler never saw a mysql command; it proves nothing: {sampler.mysql_commands}")


@pytest.fixture
def installed(vm):
    vm.inv("install", "--obs", "hst", "--kind", "dev")
    yield vm
    vm.inv("stop", check=False)
    vm.inv("install")  # put back whatever a test broke in the generated Apache config
    assert not apache_processes(vm.config("hst", "dev").root)


def test_port_in_use_is_one_line_and_starts_nothing(installed):
    cfg = installed.config("hst", "dev")
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind((cfg.web.host, cfg.web.port))
        busy.listen()
        line = one_line_error(installed.inv("run", check=False))
    assert f"port {cfg.web.port}" in line and "in use" in line
    assert not apache_processes(cfg.root)


def test_stop_sweeps_an_apache_whose_pid_file_is_gone(installed):
    cfg = installed.config("hst", "dev")
    installed.inv("run")
    assert apache_processes(cfg.root)
    (cfg.root / "run" / "httpd.pid").unlink()
    result = installed.inv("stop")
    assert "no longer named" in result.stdout
    assert not apache_processes(cfg.root)


def test_apache_failing_to_start_shows_why_and_leaves_nothing(installed):
    cfg = installed.config("hst", "dev")
    other = free_port()
    with socket.socket() as busy:  # Apache is also told to listen where something else already does
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", other))
        busy.listen()
        with open(cfg.root / "apache" / "httpd.conf", "a") as conf:
            conf.write(f"\nListen 127.0.0.1:{other}\n")
        result = installed.inv("run", check=False)
    line = one_line_error(result)
    assert "Apache failed to start" in line and "could not bind" in line and "apache_error.log" in line
    assert not apache_processes(cfg.root)
    assert installed.inv("status", check=False).returncode == 1


def test_django_failing_under_apache_shows_the_error_log(vm, vm_account):
    """Apache starts, the application cannot: the start times out and the error log says why."""
    where = web_dir("crdsops-vm-broken-")
    try:
        configs = make_configs(where, {("hst", "dev"): vm_overrides(where, vm_account, vm.option_file, start_timeout=8)})
        ops = vm_ops(where, configs)
        ops.inv("install", "--obs", "hst", "--kind", "dev")
        cfg = ops.config("hst", "dev")
        (cfg.root / "secret_key").write_text("")  # production settings refuse an empty key
        result = ops.inv("run", check=False)
        line = one_line_error(result)
        assert "did not answer" in line
        assert "CRDS_SECRET_KEY_FILE" in result.stderr, "the error log's last lines are not shown"
        assert not apache_processes(cfg.root)
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.parametrize("case", ["mode 0644", "wrong password", "database server down", "no such file"])
def test_bad_database_input_refuses_before_changing_anything(vm_account, case):
    where = web_dir("crdsops-vm-bad-")
    try:
        option_file = where / "my.cnf"
        port = 3306
        if case == "mode 0644":
            vm_account.write_option_file(option_file, mode=0o644)
        elif case == "wrong password":
            vm_account.write_option_file(option_file, password="not-" + vm_account.password)
        elif case == "database server down":
            vm_account.write_option_file(option_file)
            port = free_port()
        overrides = vm_overrides(where, vm_account, option_file)
        overrides["database"].update(port=port, name=vm_account.database + "_bad")
        ops = vm_ops(where, make_configs(where, {("hst", "dev"): overrides}))
        line = one_line_error(ops.inv("install", "--obs", "hst", "--kind", "dev", check=False))
        expected = {"mode 0644": "chmod 600", "wrong password": "refused the login",
                    "database server down": "cannot reach the MySQL server", "no such file": "does not exist"}[case]
        assert expected in line, line
        assert vm_account.password not in line
        assert not (where / "hst-dev").exists(), "install created the server root before refusing"
        assert not ops.state.exists()
        assert not vm_account.database_exists(vm_account.database + "_bad")
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_account_that_may_not_create_the_database_gets_told(vm_account, tmp_path):
    from crdsops.config.model import Database
    from crdsops.db import mysql

    user, password = f"crdsops_ro_{vm_account.tag}", vm_account.password + "x"
    root_sql(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}';")
    try:
        option_file = mysql.write_option_file(tmp_path / "ro.cnf", user, password)
        db = Database(engine="mysql", name=f"crds_ro_{vm_account.tag}", option_file=option_file)
        with pytest.raises(mysql.CrdsOpsError, match="may not create it"):
            mysql.create_database(db)
    finally:
        root_sql(f"DROP USER IF EXISTS '{user}'@'127.0.0.1';")
