"""Helpers for tests that run the Django server (server/) as real processes.

A module of its own name: ``from conftest import`` picks whichever conftest.py pytest
loaded last when several test directories run together.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from support import free_port

SERVER_DIR = Path(__file__).resolve().parents[1] / "server"
PYTHON = sys.executable


def clean_environ() -> dict:
    """The caller's environment without any CRDS_/DJANGO_ settings that could leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CRDS_", "DJANGO_"))}


def sqlite_env(where: Path, obs: str, **extra) -> dict:
    env = clean_environ()
    env.update(
        DJANGO_SETTINGS_MODULE="crds_server.settings.local",
        PYTHONPATH=str(SERVER_DIR),
        CRDS_OBSERVATORY=obs,
        CRDS_KIND="django",
        CRDS_SERVER_URL=f"https://{obs}-crds.example.invalid",  # public identity, deliberately unreachable
        CRDS_SERVER_ROOT=str(where),
        CRDS_PATH=str(where / "cache"),
        CRDS_SERVER_FILES=str(where / "server_files"),
        CRDS_DB_ENGINE="sqlite",
        CRDS_DB_NAME=str(where / "crds.sqlite3"),
        CRDS_DBBACKUP_DIR=str(where / "dbbackup"),
        CRDS_STATIC_ROOT=str(where / "static"),
    )
    env.update(extra)
    return env


def manage(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [PYTHON, str(SERVER_DIR / "manage.py"), *args], env=env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def rpc(url: str, method: str, *params):
    body = json.dumps({"jsonrpc": "1.0", "method": method, "params": list(params), "id": 1}).encode()
    with urllib.request.urlopen(f"{url}/json/", body, timeout=10) as answer:
        reply = json.loads(answer.read())
    assert reply["error"] is None, reply["error"]
    return reply["result"]


class RunningServer:
    def __init__(self, where: Path, obs: str):
        self.where, self.obs = where, obs
        self.env = sqlite_env(where, obs)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = where / "runserver.log"  # its output, one line per request
        self.process = None

    def start(self):
        manage(self.env, "migrate", "--noinput", "-v0")
        manage(self.env, "seed_demo")
        log = open(self.log, "wb")
        self.process = subprocess.Popen(
            [PYTHON, str(SERVER_DIR / "manage.py"), "runserver", f"127.0.0.1:{self.port}", "--noreload"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                return rpc(self.url, "get_catalog_counts")
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(self.log.read_text()) from None
                time.sleep(0.2)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
