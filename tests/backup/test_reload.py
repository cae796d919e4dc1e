"""The django kind takes up new code and configuration without refusing a request (RunserverBackend.reload).

A real server (`inv install`, `inv run`) under threads of real HTTP requests, JSON-RPC
get_server_info and file downloads, with one slow request (its body arrives in two halves)
held by the old process across the handover. `inv rerun` calls `reload` once serving.Rerun
does (branch rerunwork); until then these tests call the backend as Rerun will.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from support import INV

from crdsops import commands
from crdsops.errors import CrdsOpsError
from crdsops.runtime.backends.base import alive, cmdline, read_pid_file, write_pid_file
from crdsops.runtime.backends.runserver import RunserverBackend
from crdsops.runtime.environ import SERVER_DIR, child_environ, manage_argv

NEW_URL = "http://crds-reloaded.example.invalid"


class Load:
    """Threads of real requests until stopped: the time of every answer, and every failure."""

    def __init__(self, url: str, download: str, size: int):
        self.url, self.download, self.size = url, download, size
        self.answers: list[float] = []
        self.failures: list[str] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True)
                        for kind in ("rpc", "rpc", "download", "download")]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        self.done.set()
        for thread in self.threads:
            thread.join(30)

    def _loop(self, kind: str) -> None:
        while not self.done.is_set():
            try:
                if kind == "rpc":
                    body = json.dumps({"jsonrpc": "1.0", "method": "get_server_info", "params": [], "id": 1}).encode()
                    with urllib.request.urlopen(f"{self.url}/json/", body, timeout=10) as answer:
                        assert json.loads(answer.read())["error"] is None
                else:
                    with urllib.request.urlopen(f"{self.url}/{self.download}", timeout=10) as answer:
                        assert len(answer.read()) == self.size
                self.answers.append(time.monotonic())
            except Exception as err:  # any failure a client would see
                self.failures.append(f"{kind}: {type(err).__name__}: {err}")

    def longest_gap(self, start: float, end: float) -> float:
        times = [start] + sorted(t for t in self.answers if start < t < end) + [end]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


class SlowRequest(threading.Thread):
    """get_server_info whose body's second half is sent only once ``moment()`` is true (and 0.3 s later)."""

    def __init__(self, port: int, moment, watch_pid: int):
        super().__init__(daemon=True)
        self.port, self.moment, self.watch_pid = port, moment, watch_pid
        self.watched_alive_at_moment = None
        self.reply: bytes = b""

    def run(self) -> None:
        body = json.dumps({"jsonrpc": "1.0", "method": "get_server_info", "params": [], "id": "slow"}).encode()
        head = (f"POST /json/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(head + body[:10])
            deadline = time.monotonic() + 60
            while not self.moment() and time.monotonic() < deadline:
                time.sleep(0.02)
            self.watched_alive_at_moment = alive(self.watch_pid)
            time.sleep(0.3)
            try:
                sock.sendall(body[10:])
                while chunk := sock.recv(65536):
                    self.reply += chunk
            except OSError as err:
                self.reply += f"{type(err).__name__}: {err}".encode()

    def answered(self) -> bool:
        return self.reply.startswith(b"HTTP/1.1 200") and json.loads(self.reply.split(b"\r\n\r\n", 1)[1])["error"] is None


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return False
    except (ConnectionRefusedError, ConnectionResetError):  # not listening, or closing its socket
        return True


def demo_download(cfg) -> tuple[str, int]:
    path = sorted((cfg.cache / "references" / cfg.observatory).iterdir())[0]
    return f"unchecked_get/references/{cfg.observatory}/{path.name}", path.stat().st_size


def change_config(server, **values) -> object:
    path = server.ops.configs / server.obs / f"{server.kind}.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **values}))
    return server.ops.config(server.obs, server.kind)


def test_reload_refuses_nothing_and_runs_the_new_configuration(sqlite_server):
    server, backend = sqlite_server, RunserverBackend()
    old = server.pid()
    assert " serve " in cmdline(old)
    cfg = change_config(server, url=NEW_URL)
    slow = SlowRequest(cfg.web.port, lambda: read_pid_file(cfg.layout.pid_file) != old, old)
    with Load(cfg.local_url, *demo_download(cfg)) as load:
        slow.start()
        time.sleep(0.2)
        start = time.monotonic()
        backend.reload(cfg, old)
        end = time.monotonic()
        time.sleep(0.3)
    slow.join(30)
    new = server.pid()
    gap = load.longest_gap(start, end)
    print(f"reload: {end - start:.2f}s, {len(load.answers)} answers, {len(load.failures)} failed, longest gap {gap:.3f}s")
    assert load.failures == []
    assert gap <= 0.5
    assert new not in (None, old) and not alive(old)
    assert slow.watched_alive_at_moment, "the slow request was not in the old server's hands at the handover"
    assert slow.answered(), slow.reply[-300:]
    assert f"CRDS_SERVER_URL={NEW_URL}".encode() in Path(f"/proc/{new}/environ").read_bytes().split(b"\0")
    with urllib.request.urlopen(cfg.local_url + "/", timeout=10) as page:
        assert NEW_URL in page.read().decode()
    assert not cfg.layout.server_control.with_name(f"server.sock.{new}").exists()
    assert cfg.layout.server_control.is_socket()


def test_a_new_server_that_fails_leaves_the_old_one_serving(sqlite_server):
    server, backend = sqlite_server, RunserverBackend()
    old = server.pid()
    cfg = change_config(server, database={"engine": "sqlite", "name": str(server.ops.where / "no-such-dir" / "x.db"),
                                          "option_file": None})
    with pytest.raises(CrdsOpsError) as caught:
        backend.reload(cfg, old)
    message = str(caught.value)
    print(message)
    first = message.splitlines()[0]
    assert first.startswith("hst.django: the new server exited (code 1):") and f"(pid {old}) goes on serving" in first
    assert "unable to open database file" in message
    assert server.pid() == old and server.answers()
    assert read_pid_file(cfg.layout.pid_file) == old
    assert not [p for p in os.listdir("/proc") if p.isdigit() and "--take-over" in (cmdline(int(p)) or "")]


def test_a_runserver_started_before_handover_is_restarted_once(sqlite_server):
    server, backend = sqlite_server, RunserverBackend()
    cfg = server.cfg
    server.inv("stop")
    argv = manage_argv(cfg, "runserver", "--noreload", "--skip-checks", f"{cfg.web.host}:{cfg.web.port}")
    with open(cfg.layout.server_log, "ab") as out:
        old = commands.start(argv, cwd=SERVER_DIR, env=child_environ(cfg), stdout=out, stderr=commands.STDOUT,
                             start_new_session=True)
    write_pid_file(cfg.layout.pid_file, old.pid)
    deadline = time.monotonic() + 60
    while not server.answers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.pid() == old.pid
    backend.reload(cfg, old.pid)
    old.wait(10)
    new = server.pid()
    assert new not in (None, old.pid) and " serve " in cmdline(new) and server.answers()


def test_stop_answers_the_requests_in_flight_first(sqlite_server):
    """`inv stop` (SIGTERM): no new connections, but a request in hand is answered, not reset."""
    server = sqlite_server
    pid = server.pid()
    slow = SlowRequest(server.cfg.web.port, lambda: refused(server.cfg.web.port) or not alive(pid), pid)
    slow.start()
    time.sleep(0.3)
    stop = subprocess.Popen([INV, "stop"], env=server.ops.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = stop.communicate(timeout=60)[0]
    slow.join(30)
    assert stop.returncode == 0, output
    assert slow.watched_alive_at_moment and slow.answered(), slow.reply[-300:]
    assert "killed" not in output and not alive(pid) and not server.answers()
