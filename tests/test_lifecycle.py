"""A django-kind server's whole life, for real: install, run, the crds client, stop."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from crdsops.runtime import health

CRDS = str(Path(sys.executable).parent / "crds")


def _tree_state(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file() and "logs" not in p.parts}


def test_install_lays_out_the_server(ops):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    cfg = ops.config("hst", "django")
    assert json.loads(ops.state.read_text())["observatory"] == "hst"
    env_sh = (cfg.root / "env.sh").read_text()
    for var in ("CRDS_SERVER_URL", "CRDS_PATH", "CRDS_SERVER_FILES", "CRDS_OBSERVATORY", "DJANGO_SETTINGS_MODULE"):
        assert f"export {var}=" in env_sh
        assert f"setenv {var} " in (cfg.root / "env.csh").read_text()
    for data_dir in (cfg.cache, cfg.server_files, cfg.cache / "references" / "hst"):
        assert data_dir.stat().st_mode & 0o777 == 0o700
    assert (cfg.root / "secret_key").stat().st_mode & 0o777 == 0o600
    assert Path(cfg.database.name).stat().st_mode & 0o777 == 0o600, "the SQLite database holds data: 0600"
    assert any((cfg.cache / "references" / "hst").iterdir()), "demo references were not seeded"
    # env.sh really works in a login shell
    out = subprocess.run(["bash", "-c", f"source {cfg.root}/env.sh && echo $CRDS_PATH"],
                         capture_output=True, text=True).stdout.strip()
    assert out == str(cfg.cache)


def test_install_twice_changes_nothing_and_loses_nothing(ops):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    cfg = ops.config("hst", "django")
    before = _tree_state(cfg.root)
    ops.inv("install")  # no flags: the recorded identity
    ops.inv("install", "--obs", "hst", "--kind", "django")
    after = _tree_state(cfg.root)
    changed = {k for k in before if before[k] != after.get(k) and not k.startswith(("db/", "static/"))}
    assert not changed, f"a second install rewrote {changed}"
    assert set(after) >= set(before)


def test_install_refuses_to_replace_another_server(ops):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    result = ops.inv("install", "--obs", "jwst", "--kind", "django", check=False)
    assert result.returncode == 1 and "already runs hst.django" in result.stderr


def test_run_status_crds_client_sync_stop(running_hst, tmp_path):
    ops = running_hst
    cfg = ops.config("hst", "django")
    status = ops.inv("status").stdout
    assert "hst.django" in status and "answers:    yes" in status and "hst_0001.pmap" in status

    # the real crds client, as the acceptance runs it
    reference = sorted(health.rpc(cfg.local_url, "list_references", None, "*"))[0]
    mapping = sorted(health.rpc(cfg.local_url, "list_mappings", None, "*"))[0]
    client_cache = tmp_path / "client"
    env = dict(os.environ, CRDS_SERVER_URL=cfg.local_url, CRDS_PATH=str(client_cache))
    env.pop("CRDS_OBSERVATORY", None)
    sync = subprocess.run([CRDS, "sync", "--hst", "--organize=flat", "--files", reference, mapping],
                          env=env, capture_output=True, text=True, timeout=120)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    for name in (reference, mapping):
        got = next(client_cache.rglob(name))
        catalog = health.rpc(cfg.local_url, "get_file_info", None, name)
        assert hashlib.sha1(got.read_bytes()).hexdigest() == catalog["sha1sum"]

    again = ops.inv("run")
    assert "already running" in again.stdout

    ops.inv("stop")
    assert not health.answers(cfg.local_url)
    down = ops.inv("status", check=False)
    assert down.returncode == 1 and "not running" in down.stdout
    assert "not running" in ops.inv("stop").stdout  # not an error


def test_runtests_passes_against_the_running_server(running_hst):
    result = running_hst.inv("runtests", timeout=600)
    assert "0 failed" in result.stdout.splitlines()[-1]


def test_manage_runs_any_command_in_the_server_environment(ops):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    out = ops.inv("manage", "--", "catalog_counts").stdout
    assert json.loads(out)["references"] >= 1
    failed = ops.inv("manage", "--", "no_such_command", check=False)
    assert failed.returncode != 0


def test_run_refuses_a_port_used_by_another_program(ops):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    cfg = ops.config("hst", "django")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((cfg.web.host, cfg.web.port))
        squatter.listen()
        result = ops.inv("run", check=False)
    assert result.returncode == 1
    assert f"port {cfg.web.port}" in result.stderr and "in use" in result.stderr
    assert not (cfg.root / "run" / "server.pid").exists()


def test_run_reports_a_server_that_dies_with_its_log(ops):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    cfg = ops.config("hst", "django")
    (cfg.root / "secret_key").chmod(0o600)
    os.rename(cfg.database.name, cfg.database.name + ".moved")  # the server cannot start without it
    Path(cfg.database.name).mkdir()  # sqlite cannot open a directory
    result = ops.inv("run", check=False)
    assert result.returncode == 1
    assert "hst.django" in result.stderr and "server.log" in result.stderr


def test_changing_tasks_refuse_while_another_holds_the_server_lock(ops):
    ops.inv("install", "--obs", "hst", "--kind", "django")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from crdsops.config.loader import load_config; from crdsops.runtime.lock import server_lock\n"
         f"cfg = load_config('hst', 'django', {str(ops.configs)!r})\n"
         "with server_lock(cfg, 'backup'):\n    print('held', flush=True); time.sleep(60)"],
        cwd=str(Path(__file__).resolve().parent.parent), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for task in ("run", "stop", "rerun", "install"):
            result = ops.inv(task, check=False)
            assert result.returncode == 1, task
            assert "backup" in result.stderr and str(holder.pid) in result.stderr, result.stderr
    finally:
        holder.kill()
        holder.wait()
    ops.inv("run")  # the holder is gone: its lock is stale and taken over
    ops.inv("stop")


def _start_in_foreground(ops):
    """hst django installed, then `inv run --foreground` in its own session, answering."""
    import time

    from support import INV

    ops.inv("install", "--obs", "hst", "--kind", "django")
    cfg = ops.config("hst", "django")
    proc = subprocess.Popen([INV, "run", "--foreground"], env=ops.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not health.answers(cfg.local_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)
            raise AssertionError("inv run --foreground exited early or never answered")
        time.sleep(0.2)
    return cfg, proc


def test_foreground_server_stops_when_inv_is_terminated(ops):
    """`inv run --foreground` killed with SIGTERM (timeout, a closed terminal's SIGHUP) takes its server along."""
    import signal
    import time

    cfg, proc = _start_in_foreground(ops)
    try:
        assert health.answers(cfg.local_url)
        proc.send_signal(signal.SIGTERM)  # to inv only, not its process group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while health.answers(cfg.local_url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not health.answers(cfg.local_url), "the foreground server outlived inv"
    finally:
        # whatever is left of the session the test started (its id is inv's pid): not a name match
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)


def test_a_foreground_server_is_seen_by_status_and_stopped_by_stop(ops):
    """Restore and mirror stop the server through the pid file: a foreground one must have it too."""
    cfg, proc = _start_in_foreground(ops)
    try:
        status = ops.inv("status").stdout
        assert "not running" not in status and "answers:    yes" in status
        assert "already running" in ops.inv("run").stdout  # no second server, no port error
        ops.inv("stop")
        assert proc.wait(timeout=30) != 0
        assert not health.answers(cfg.local_url)
        assert not (cfg.root / "run" / "server.pid").exists()
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)], check=False)


def test_rerun_dry_run_plans_with_live_probes_and_changes_nothing(running_hst):
    ops = running_hst
    cfg = ops.config("hst", "django")
    pid = (cfg.root / "run" / "server.pid").read_text().split()[0]
    out = ops.inv("rerun", "--dry-run").stdout
    assert "takes the listening socket over" in out and "migrate" in out, out
    assert f"stop it (pid {pid})" not in out, out  # a reload, never a stop
    assert (cfg.root / "run" / "server.pid").read_text().split()[0] == pid  # the same server still runs
    assert health.answers(cfg.local_url)


def _interrupted(ops, args, point, sig):
    env = dict(ops.env, CRDSOPS_FAILPOINT=f"{point}={sig}")
    saved, ops.env = ops.env, env
    try:
        return ops.inv(*args, check=False)
    finally:
        ops.env = saved


def test_an_interrupted_rerun_or_stop_leaves_the_server_up(running_hst):
    """A rerun cut short before or during the handover leaves the old server serving; a stop cut short starts it again."""
    from interrupting import INTERRUPTED_LINE, leftovers

    ops = running_hst
    cfg = ops.config("hst", "django")
    for args, point, sig, code in ([("rerun",), "runserver.successor", "sighup", 129],
                                   [("rerun",), "service.reloading", "sigterm", 143],
                                   [("stop",), "service.stopping", "sigint", 130]):
        result = _interrupted(ops, args, point, sig)
        assert result.returncode == code, result.stdout + result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert INTERRUPTED_LINE.match(last) and f"{cfg.name} is up as before" in last, result.stderr
        assert health.answers(cfg.local_url)
        assert leftovers(cfg) == []
    ops.inv("rerun")
    assert health.answers(cfg.local_url)


def test_an_interrupted_run_leaves_the_server_down_as_it_was(ops):
    from interrupting import leftovers

    ops.inv("install", "--obs", "hst", "--kind", "django")
    cfg = ops.config("hst", "django")
    result = _interrupted(ops, ("run",), "service.started", "sigint")
    assert result.returncode == 130, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(f"{cfg.name} is not running, as before")
    assert not health.answers(cfg.local_url) and leftovers(cfg) == []
