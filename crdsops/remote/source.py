"""The server another one copies from (``inv mirror``, ``inv check-cache --repair``): named, checked, located.

A source is named by its kind (``--src test``) and configured as any server is
(``configs/<obs>/<kind>.yaml``: its host, SSH settings and checkout). Before anything is
copied, the source must be of this observatory and not this server (``source_config``), lie
in the right direction (``check_direction``: ops > test > dev > django), and say over SSH
that it is who its config says (``source_facts``: its own ``inv config --json``), which also
tells where its data lives on its host.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from crdsops.config.loader import load_config
from crdsops.config.model import TIERS, ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.remote import ssh

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFacts:
    """What the source host says of itself (its `inv config --json`): where its data is there."""

    observatory: str
    kind: str
    cache: str
    server_files: str
    shared_dir: str

    @classmethod
    def from_reported(cls, data: dict, where: str) -> SourceFacts:
        try:
            return cls(data["observatory"], data["kind"], data["cache"], data["server_files"],
                       data["backups"]["shared_dir"])
        except (KeyError, TypeError):
            raise CrdsOpsError(f"{where}: `inv config --json` lacks observatory, kind, cache, server_files or "
                               "backups.shared_dir; is crdsops there too old?") from None


def source_config(dest: ServerConfig, obs: str, src_kind: str) -> ServerConfig:
    """The source's config, from the configs ``dest`` came from; refuse another observatory or itself."""
    if obs != dest.observatory:
        raise CrdsOpsError(
            f"this server is {dest.name}, of {dest.observatory}; it cannot mirror {obs}.{src_kind} "
            f"(run the mirror on a {obs} server)"
        )
    if src_kind == dest.kind:
        raise CrdsOpsError(f"the source {obs}.{src_kind} is this server; name a higher-tier server with --src")
    return load_config(obs, src_kind, dest.configs)


def check_direction(dest: ServerConfig, src: ServerConfig, allow_upward: bool) -> bool:
    """Refuse a mirror that is not downward; return whether it is upward (allowed by override)."""
    if src.tier_rank == dest.tier_rank:
        raise CrdsOpsError(f"{src.name} and {dest.name} are both {dest.tier} tier; a mirror copies from a "
                           f"higher tier ({' > '.join(reversed(TIERS))}) to a lower one")
    if src.tier_rank < dest.tier_rank:
        if not allow_upward:
            raise CrdsOpsError(
                f"refusing to mirror upward: {src.name} ({src.tier}) is below {dest.name} ({dest.tier}); "
                f"data flows {' > '.join(reversed(TIERS))}; nothing was changed"
            )
        return True
    return False


def source_facts(conn, target: ssh.Target, src: ServerConfig) -> SourceFacts:
    """What the source host says of itself (its `inv config --json`), refused unless it is ``src``."""
    res = ssh.run_inv(conn, target.checkout, ["config", "--json"], hide=True)
    if res.exited != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise CrdsOpsError(f"{target.where} could not say which server it is (`inv config`: {last}); "
                           "is crdsops installed there (ssh.checkout)?")
    try:
        reported = json.loads(res.stdout)
    except ValueError:
        raise CrdsOpsError(f"{target.where}: `inv config --json` printed something that is not JSON") from None
    ident = (reported.get("observatory"), reported.get("kind"))
    if ident != (src.observatory, src.kind):
        raise CrdsOpsError(
            f"{target.where} runs {'.'.join(map(str, ident))}, not {src.name} as the config says; "
            "refusing (fix the source's host in the config, or --src-host)"
        )
    return SourceFacts.from_reported(reported, target.where)


def identified(dest: ServerConfig, src_kind: str, src_host: str | None = None) -> tuple[ServerConfig, ssh.Target, SourceFacts]:
    """The source of kind ``src_kind``: its config, where to reach it, and what it says of itself over SSH."""
    src = source_config(dest, dest.observatory, src_kind)
    target = ssh.target_for(src, host=src_host)
    log.info(f"checking {src.name} over SSH at {target.where} ...")
    conn = ssh.connection(target)
    try:
        return src, target, source_facts(conn, target, src)
    finally:
        conn.close()
