"""Throwaway SSH hosts for tests: one sshd per "host", each on its own 127.0.0.x address.

Each host has its own host key, accepts only the test's client key (root login by key,
nothing else), and gives every session the environment a VM would have (``SetEnv``):
which configs and which install record its crdsops checkout uses. So a test can have an
"hst test VM" and an "hst dev VM" on one machine, reached only through SSH.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from support import free_port

SSHD = "/usr/sbin/sshd"


def keygen(path: Path, kind: str = "ed25519") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, path.with_suffix(path.suffix + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "crdsops-test", "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL)
    return path


@dataclass
class SshHost:
    """One sshd: start(), stop(), cut() (drop live sessions), rekey() (a new host key)."""

    where: Path
    address: str
    client_pub: Path
    env: dict = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen | None = None

    def __post_init__(self):
        self.where.mkdir(parents=True, exist_ok=True)
        os.chmod(self.where, 0o700)
        self.port = self.port or free_port(self.address)
        self.host_key = self.where / "ssh_host_ed25519_key"
        if not self.host_key.exists():
            keygen(self.host_key)
        self.authorized = self.where / "authorized_keys"
        self.authorized.write_text(self.client_pub.read_text())
        os.chmod(self.authorized, 0o600)

    @property
    def spec(self) -> str:
        return f"root@{self.address}:{self.port}"

    def known_hosts_line(self) -> str:
        kind, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.address}]:{self.port} {kind} {key}\n"

    def write_config(self) -> Path:
        cfg = self.where / "sshd_config"
        setenv = " ".join(f'{k}="{v}"' for k, v in self.env.items())
        cfg.write_text("\n".join([
            f"ListenAddress {self.address}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.where / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "AllowTcpForwarding yes",
            "LogLevel INFO",  # "Accepted publickey ..." per connection: tests count them (accepted())
            "MaxStartups 50",
            "MaxSessions 50",
            "Subsystem sftp internal-sftp",
            *([f"SetEnv {setenv}"] if setenv else []),
            "",
        ]))
        return cfg

    def start(self) -> SshHost:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        cfg = self.write_config()
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=open(self.where / "sshd.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.where / 'sshd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd on {self.address}:{self.port} did not start")

    def accepted(self) -> int:
        """How many connections this sshd has authenticated so far (its log's "Accepted publickey" lines)."""
        log = self.where / "sshd.log"
        return log.read_text(errors="replace").count("Accepted publickey") if log.exists() else 0

    def sessions(self) -> list[int]:
        """Pids of this sshd's session processes (its children), which we started."""
        if not self.process:
            return []
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                out.append(int(stat.parent.name))
        return out

    def cut(self) -> None:
        """Drop every live session abruptly, as a network cut would (the listener stays)."""
        for pid in self.sessions():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.cut()
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def rekey(self) -> None:
        """Give the host a new host key (a rebuilt VM, or an impostor); restart if running."""
        running = self.process is not None
        self.stop()
        keygen(self.host_key)
        if running:
            self.start()


class SshLab:
    """A client key, a known_hosts file and any number of SshHosts on 127.0.0.x."""

    def __init__(self, where: Path):
        self.where = Path(where)
        self.where.mkdir(parents=True, exist_ok=True)
        os.chmod(self.where, 0o700)
        self.client_key = keygen(self.where / "client" / "id_ed25519")
        self.known_hosts = self.where / "client" / "known_hosts"
        self.known_hosts.write_text("")
        self.hosts: list[SshHost] = []

    def host(self, address: str, env: dict | None = None, known: bool = True, start: bool = True,
             port: int = 0) -> SshHost:
        host = SshHost(self.where / f"host-{address}-{len(self.hosts)}", address,
                       self.client_key.with_suffix(".pub"), env or {}, port=port)
        self.hosts.append(host)
        if known:
            self.trust(host)
        return host.start() if start else host

    def trust(self, host: SshHost) -> None:
        with open(self.known_hosts, "a") as handle:
            handle.write(host.known_hosts_line())

    def ssh_section(self, host: SshHost, checkout: Path) -> dict:
        """The ``ssh`` keys of a server config that reaches ``host``."""
        return {"user": "root", "port": host.port, "key": str(self.client_key),
                "known_hosts": str(self.known_hosts), "checkout": str(checkout)}

    def close(self) -> None:
        for host in self.hosts:
            host.stop()
