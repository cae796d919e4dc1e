"""Two or three CRDS "VMs" on this machine, each behind its own sshd on 127.0.0.x.

Each server's config names its VM (``host``) and how to reach it (``ssh``: port, the
test's client key, the test's known_hosts, this checkout); each sshd gives its sessions
the VM's CRDSOPS_CONFIGS/CRDSOPS_STATE, so `inv` over SSH acts on that VM's server.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from sshd import SshLab, free_port
from support import CHECKOUT, Ops, local_overrides, make_configs

FAB = str(Path(sys.executable).parent / "fab")


def vm_overrides(where: Path, address: str, ssh: dict) -> dict:
    """A server that lives on "VM" ``address``: runserver + SQLite under ``where``."""
    from support import deep_merge
    from support import free_port as web_port

    port = web_port()
    return deep_merge(local_overrides(where, port), {
        "host": address,
        "url": f"http://127.0.0.1:{port}",
        "web": {"server": "runserver", "host": "127.0.0.1", "user": None, "group": None,
                "processes": 1, "threads": 1},
        "database": {"engine": "sqlite", "name": "{root}/db/crds.sqlite3", "option_file": None},
        "ssh": ssh,
    })


class Fleet:
    """hst test (running) on 127.0.0.2, hst dev (installed, stopped) on 127.0.0.3, hst ops down."""

    def __init__(self, where: Path, extra: dict[str, dict] | None = None):
        """``extra``: more config keys per kind ("test", "dev"), e.g. a MySQL database."""
        from support import deep_merge

        extra = extra or {}
        self.where = where
        self.lab = SshLab(where / "ssh")
        configs_dir = where / "configs"
        self.states = {kind: where / f"state-{kind}.json" for kind in ("test", "dev")}
        self.test_host = self.lab.host("127.0.0.2", {"CRDSOPS_CONFIGS": configs_dir,
                                                     "CRDSOPS_STATE": self.states["test"]}, start=False)
        # the same port on another address: `--src-host 127.0.0.3` reaches a host running another server
        self.dev_host = self.lab.host("127.0.0.3", {"CRDSOPS_CONFIGS": configs_dir,
                                                    "CRDSOPS_STATE": self.states["dev"]}, start=False,
                                      port=self.test_host.port)
        down_port = free_port("127.0.0.4")
        self.down = ("127.0.0.4", down_port)
        ops_ssh = dict(self.lab.ssh_section(self.test_host, CHECKOUT), port=down_port)
        self.configs = make_configs(where, {
            ("hst", "test"): deep_merge(vm_overrides(where, "127.0.0.2", self.lab.ssh_section(self.test_host, CHECKOUT)),
                                        extra.get("test", {})),
            ("hst", "dev"): deep_merge(vm_overrides(where, "127.0.0.3", self.lab.ssh_section(self.dev_host, CHECKOUT)),
                                       extra.get("dev", {})),
            ("hst", "ops"): vm_overrides(where, "127.0.0.4", ops_ssh),
        })
        self.test_host.start()
        self.dev_host.start()
        self.ops = {kind: Ops(where / kind, self.configs) for kind in ("test", "dev")}
        for kind, ops in self.ops.items():
            ops.state = self.states[kind]
            ops.env["CRDSOPS_STATE"] = str(ops.state)
        # the control machine: only the configs (for -H lookups), no install record
        self.env = dict(os.environ, CRDSOPS_CONFIGS=str(self.configs),
                        CRDSOPS_STATE=str(where / "control-installed.json"))

    def close(self) -> None:
        """Stop both servers and every sshd; the sshds go even when a stop fails."""
        try:
            for ops in self.ops.values():
                ops.inv("stop", check=False)
        finally:
            self.lab.close()

    def fab(self, *args, timeout=120) -> subprocess.CompletedProcess:
        return subprocess.run([FAB, *args], cwd=CHECKOUT, env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)

    def inv(self, *args, timeout=120) -> subprocess.CompletedProcess:
        from support import INV

        return subprocess.run([INV, *args], cwd=CHECKOUT, env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)


def sha256_tree(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
