"""Which server this checkout runs: recorded by ``inv install``, resolved once for every task.

The record is a small JSON file (``var/installed.json`` in the checkout, or the path in
``CRDSOPS_STATE``), so cron can call ``inv backup`` with no arguments, as ``env.csh`` let
the old scripts do.

``resolve`` is the one answer to "which server, from which configs" that every task, the
stack prefix and the remote helpers use. Precedence, first match wins:

* identity (observatory, kind): the flags, then the install record;
* configs directory: ``CRDSOPS_CONFIGS``, then the directory the record was installed from
  (when the identity is the record's), then ``<checkout>/configs``.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from crdsops import __version__
from crdsops.config.loader import configs_dir, load_config, load_defaults_section
from crdsops.config.model import CHECKOUT, ServerConfig, Stack
from crdsops.errors import CrdsOpsError
from crdsops.files import name_directories, write_atomic


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
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CrdsOpsError(f"{path}: unreadable install record ({err}); run `inv install --obs OBS --kind KIND` again") from None


def require_installed() -> Installed:
    installed = read_installed()
    if installed is None:
        raise CrdsOpsError(
            f"no server is installed here (no {state_file()}); "
            "run `inv install --obs OBS --kind KIND` first"
        )
    return installed


def configs_for(installed: Installed | None) -> Path:
    """The configs directory: CRDSOPS_CONFIGS, else the record's, else the checkout's."""
    if os.environ.get("CRDSOPS_CONFIGS") or installed is None:
        return configs_dir()
    return installed.configs


def configs_here() -> Path:
    """The configs directory tasks read on this machine (see ``configs_for``)."""
    return configs_for(read_installed())


def resolve(obs: str | None = None, kind: str | None = None) -> ServerConfig:
    """The config of the server a task acts on: the one the flags name, else the installed one.

    Its directories are named after their config keys in path errors (``crdsops.files``): this is
    the server on this machine, so a file where ``backups.private_dir`` should be is reported as
    ``backups.private_dir ... is a file``. (Nothing is checked here: ``inv config`` may show a
    server whose paths are on another host; a mirror's source is loaded elsewhere and never named.)
    """
    if (obs is None) != (kind is None):
        raise CrdsOpsError("give both --obs and --kind (or neither, for the installed server)")
    installed = read_installed()
    if obs is None:
        installed = require_installed()
        config = load_config(installed.observatory, installed.kind, configs_for(installed))
    else:
        mine = installed is not None and (obs, kind) == (installed.observatory, installed.kind)
        config = load_config(obs, kind, configs_for(installed if mine else None))
    name_directories(config.directory_keys())
    return config


def resolve_installed_or_none() -> ServerConfig | None:
    installed = read_installed()
    return None if installed is None else resolve()


def stack_prefix() -> Path:
    """The stack prefix of the installed server, else ``stack.prefix`` of defaults.yaml (validated)."""
    config = resolve_installed_or_none()
    if config is not None:
        return config.stack.prefix
    try:
        return load_defaults_section(Stack, "stack").prefix
    except CrdsOpsError as err:
        if "missing key stack.prefix" not in str(err):
            raise
        return CHECKOUT / ".venv"


def record_installed(config: ServerConfig) -> Installed:
    record = Installed(
        observatory=config.observatory,
        kind=config.kind,
        configs=config.configs or configs_dir(),
        installed_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        crdsops_version=__version__,
    )
    data = {k: str(v) for k, v in asdict(record).items()}
    write_atomic(state_file(), json.dumps(data, indent=2) + "\n", mode=0o600)
    return record
