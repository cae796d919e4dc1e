"""Helpers for tests that run real servers: private configs, `inv` as a user runs it.

Every test server lives in a temporary directory with its own configs (a copy of the
shipped ones with a few keys overridden) and its own install record, through the same
environment overrides an operator would use: CRDSOPS_CONFIGS and CRDSOPS_STATE.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import yaml

CHECKOUT = Path(__file__).resolve().parent.parent
INV = str(Path(sys.executable).parent / "inv")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def make_configs(where: Path, overrides: dict[tuple[str, str], dict] | None = None) -> Path:
    """Copy configs/ to ``where``/configs and merge ``overrides[(obs, kind)]`` into each file."""
    configs = Path(where) / "configs"
    if not configs.exists():
        shutil.copytree(CHECKOUT / "configs", configs)
    for (obs, kind), extra in (overrides or {}).items():
        path = configs / obs / f"{kind}.yaml"
        data = yaml.safe_load(path.read_text()) if path.exists() else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(deep_merge(data or {}, extra)))
    return configs


def copy_checkout(dest: Path) -> Path:
    """This checkout's files (tracked and new; not .venv, var/ or anything git ignores) copied to DEST."""
    names = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=CHECKOUT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = CHECKOUT / name
        if source.is_file():
            (Path(dest) / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, Path(dest) / name)
    return Path(dest)


def local_overrides(where: Path, port: int | None = None) -> dict:
    """Keys that put a server entirely under ``where`` on a free port."""
    where = Path(where)
    return {
        "root": str(where / "{observatory}-{kind}"),
        "web": {"port": port or free_port()},
        "backups": {"private_dir": "{root}/backups", "shared_dir": str(where / "shared-backups")},
    }


class Ops:
    """One operator's view of one machine: `inv` with a given configs dir and install record."""

    def __init__(self, where: Path, configs: Path | None = None, checkout: Path | None = None):
        """``checkout``: run the `inv` of another checkout (its .venv), e.g. a copy the web user can read."""
        self.where = Path(where)
        self.configs = configs or make_configs(self.where)
        self.state = self.where / "installed.json"
        self.env = dict(os.environ, CRDSOPS_CONFIGS=str(self.configs), CRDSOPS_STATE=str(self.state))
        self.checkout = Path(checkout) if checkout else CHECKOUT
        self.inv_path = str(self.checkout / ".venv" / "bin" / "inv") if checkout else INV

    def inv(self, *args: str, check: bool = True, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
        if "input" not in kwargs:
            kwargs["stdin"] = subprocess.DEVNULL
        result = subprocess.run(
            [self.inv_path, *args], cwd=self.checkout, env=kwargs.pop("env", self.env), capture_output=True, text=True,
            timeout=timeout, **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"inv {' '.join(args)} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def config(self, obs: str, kind: str):
        from crdsops.config.loader import load_config

        return load_config(obs, kind, self.configs)
