"""Run one ``inv`` task on every server of an observatory at once (Fabric ThreadingGroup).

The fleet of an observatory is the set of its configured servers that live on another
machine (``host`` is not ``localhost``), one entry per distinct host/port. Each host gets
one result line; a host that cannot be reached, refuses our key or has an unknown or
changed host key is one failed line among the others, never an exception that hides them.
"""

from __future__ import annotations

from dataclasses import dataclass

from crdsops.errors import CrdsOpsError
from crdsops.remote import ssh as remote


@dataclass
class HostResult:
    target: remote.Target
    exited: int | None  # None: the task never ran (could not connect)
    summary: str
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def line(self) -> str:
        state = "ok" if self.ok else ("FAILED" if self.exited is not None else "UNREACHABLE")
        code = f"exit {self.exited}" if self.exited is not None else "no exit"
        return f"{self.target.name:<12} {self.target.where:<24} {state:<11} ({code}) {self.summary}"


def fleet_targets(observatory: str, kinds: list[str] | None = None) -> list[remote.Target]:
    from crdsops.config.installed import configs_here
    from crdsops.config.loader import check_identity

    check_identity(observatory, (kinds or [None])[0] or _any_kind(observatory), configs_here())
    configs = [c for c in remote.all_configs(observatory) if c.host not in remote.LOCAL_HOSTS]
    if kinds:
        unknown = set(kinds) - {c.kind for c in remote.all_configs(observatory)}
        if unknown:
            raise CrdsOpsError(f"unknown kind(s) {', '.join(sorted(unknown))} for {observatory}")
        configs = [c for c in configs if c.kind in kinds]
    targets: dict[tuple, remote.Target] = {}
    for cfg in configs:
        t = remote.target_for(cfg)
        key = (t.host, t.port, t.user)
        if key in targets:
            targets[key] = remote.replace(targets[key], label=f"{targets[key].label},{cfg.kind}")
        else:
            targets[key] = t
    if not targets:
        raise CrdsOpsError(f"no servers of {observatory} on other hosts in the configs; nothing to do")
    return list(targets.values())


def _any_kind(observatory: str) -> str:
    from crdsops.config.installed import configs_here
    from crdsops.config.loader import kinds

    found = kinds(observatory, configs_here())
    return found[0] if found else "?"


def run_fleet(targets: list[remote.Target], argv: list[str]) -> list[HostResult]:
    """Run ``inv ARGV`` on every target in parallel; one HostResult per target, in order."""
    from fabric import ThreadingGroup
    from fabric.exceptions import GroupException

    conns = {}
    results: dict[int, HostResult] = {}
    for i, target in enumerate(targets):
        try:
            conns[i] = remote.connection(target)
        except CrdsOpsError as err:
            results[i] = HostResult(target, None, str(err))
    # One ThreadingGroup per distinct command (hosts with the same checkout path share one).
    by_command: dict[str, list[int]] = {}
    for i in conns:
        try:
            by_command.setdefault(remote.inv_command(targets[i].checkout, argv), []).append(i)
        except CrdsOpsError as err:
            results[i] = HostResult(targets[i], None, str(err))
    for command, members in by_command.items():
        group = ThreadingGroup.from_connections([conns[i] for i in members])
        try:
            outcome = group.run(command, warn=True, hide=True, pty=False, in_stream=False)
        except GroupException as err:
            outcome = err.result
        for i in members:
            conn = conns[i]
            value = outcome.get(conn)
            if isinstance(value, BaseException):
                results[i] = HostResult(targets[i], None, remote.explain(value, conn))
            else:
                results[i] = HostResult(targets[i], value.exited, _summary(value), value.stdout, value.stderr)
            conn.close()
    return [results[i] for i in range(len(targets))]


def _summary(result) -> str:
    """The most telling line of a task's output: its error, else its last line."""
    err = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    out = [ln for ln in result.stdout.strip().splitlines() if ln.strip()]
    if result.exited != 0 and err:
        return err[-1].strip()
    return (out[-1] if out else (err[-1] if err else "")).strip()
