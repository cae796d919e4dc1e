"""Which server this checkout runs: recorded by ``inv install``, read by every later task.

The record is a small JSON file (``var/installed.json`` in the checkout, or the path in
``CRDSOPS_STATE``), so cron can call ``inv backup`` with no arguments, as ``env.csh`` let
the old scripts do.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from crdsops import __version__
from crdsops.config import CHECKOUT, ServerConfig, configs_dir, load_config
from crdsops.errors import CrdsOpsError
from crdsops.files import write_atomic


@dataclass(frozen=True)
class Installed:
    observatory: str
    kind: str
    configs: Path
    installed_at: str
    crdsops_version: str

    @property
    def name(self) -> str:
        return f"{self.observatory}.{self.kind}"


def state_file() -> Path:
    return Path(os.environ.get("CRDSOPS_STATE") or CHECKOUT / "var" / "installed.json")


def read_installed() -> Installed | None:
    path = state_file()
    try:
        data = json.loads(path.read_text())
        return Installed(
            observatory=data["observatory"],
            kind=data["kind"],
            configs=Path(data["configs"]),
            installed_at=data["installed_at"],
            crdsops_version=data.get("crdsops_version", "?"),
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as err:
        raise CrdsOpsError(f"{path}: unreadable install record ({err}); run `inv install --obs OBS --kind KIND` again") from None


def require_installed() -> Installed:
    installed = read_installed()
    if installed is None:
        raise CrdsOpsError(
            f"no server is installed here (no {state_file()}); "
            "run `inv install --obs OBS --kind KIND` first"
        )
    return installed


def installed_config() -> ServerConfig:
    """The config of the installed server, read from the configs it was installed with."""
    installed = require_installed()
    configs = Path(os.environ["CRDSOPS_CONFIGS"]) if os.environ.get("CRDSOPS_CONFIGS") else installed.configs
    return load_config(installed.observatory, installed.kind, configs)


def record_installed(config: ServerConfig) -> Installed:
    record = Installed(
        observatory=config.observatory,
        kind=config.kind,
        configs=configs_dir(),
        installed_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        crdsops_version=__version__,
    )
    data = {k: str(v) for k, v in asdict(record).items()}
    write_atomic(state_file(), json.dumps(data, indent=2) + "\n", mode=0o600)
    return record
