"""``inv fleet-upgrade``: one revision to every server of an observatory, in tier order, gated.

    dev tier:  `inv upgrade --to REV --yes` on each host (in parallel), then the gate:
               `inv runtests` passed on each
    test tier: the same
    ops tier:  `inv upgrade` only (ops never runs the self-tests), and only after a yes that
               names the ops hosts (or --yes)

The first host that fails its upgrade or its gate stops the rollout: the line names the host
and what failed, and the later tiers are not touched. Each host's own ``inv upgrade`` rolls
itself back when it fails after its switch, so a stopped rollout leaves every server serving.

A dry run (``probe``) asks every host of every tier for its own plan, `inv upgrade --to REV
--dry-run` (its read-only checks run for real there: the revision resolves in its git, what it
serves now), all at once, and changes nothing; a host that cannot be reached or refuses the
plan is one failed line, and the dry run fails.

Each host gets one SSH connection for the whole rollout (``fleet.Connections``): its upgrade
and its gate are two sessions on it; it is closed once the host's tier is through, and every
connection is closed in a ``finally`` when the rollout stops, fails or is interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.remote import fleet
from crdsops.remote import ssh as remote

ORDER = ("dev", "test", "ops")
GATED = ("dev", "test")  # the tiers whose self-tests gate the next tier


@dataclass
class Tier:
    name: str
    targets: list[remote.Target]

    def hosts(self) -> str:
        return ", ".join(f"{t.name} ({t.where})" for t in self.targets)


@dataclass
class Rollout:
    observatory: str
    revision: str
    tiers: list[Tier]
    lines: list[str] = field(default_factory=list)  # what happened, one line per host and step
    stopped: str = ""  # why it stopped ("": it did not)

    def plan_lines(self) -> list[str]:
        out = [f"plan for upgrading {self.observatory} to {self.revision}, tier by tier:"]
        for tier in self.tiers:
            out.append(f"  - {tier.name}: `inv upgrade --to {self.revision} --yes` on {tier.hosts()}")
            if tier.name in GATED:
                out.append(f"  - {tier.name} gate: `inv runtests` passes on each (else stop: later tiers untouched)")
        if not self.tiers:
            out.append("  - (no servers of it on other hosts)")
        return out


def tiers_of(observatory: str, kinds: list[str] | None = None) -> list[Tier]:
    """The observatory's servers on other hosts, by tier in rollout order (a django kind has none)."""
    configs = [c for c in remote.all_configs(observatory) if c.host not in remote.LOCAL_HOSTS]
    if kinds:
        configs = [c for c in configs if c.kind in kinds]
    tiers = []
    for name in ORDER:
        members: list[ServerConfig] = [c for c in configs if c.tier == name]
        if members:
            tiers.append(Tier(name, [remote.target_for(c) for c in sorted(members, key=lambda c: c.kind)]))
    if not tiers:
        raise CrdsOpsError(f"no servers of {observatory} on other hosts in the configs; nothing to do")
    return tiers


def probe(rollout: Rollout, parallel: int, timeout: float | None, say=print) -> bool:
    """The dry run: each host's own plan; return whether every host gave one (``rollout.stopped`` says why not)."""
    argv = ["upgrade", "--to", rollout.revision, "--dry-run"]
    members = [(tier.name, target) for tier in rollout.tiers for target in tier.targets]
    say(f"`inv {' '.join(argv)}` on {len(members)} host(s) ...")
    results = fleet.run_fleet([target for _, target in members], argv, parallel, timeout)
    for (tier, _), res in zip(members, results):
        line = f"{tier} probe: {res.line()}"
        rollout.lines.append(line)
        say(line)
        for text in (res.stdout, res.stderr):
            for each in text.rstrip().splitlines():
                say(f"    {res.target.name}| {each}")
    failed = [r for r in results if not r.ok]
    if failed:
        rollout.stopped = "; ".join(f"{r.target.name} ({r.target.where}) gave no plan: {r.summary}" for r in failed)
        return False
    return True


def roll_out(rollout: Rollout, parallel: int, timeout: float | None, say=print) -> bool:
    """Run the rollout; return whether every tier went out (``rollout.stopped`` says why not)."""
    with fleet.Connections(timeout) as hosts:
        for tier in rollout.tiers:
            steps = [("upgrade", ["upgrade", "--to", rollout.revision, "--yes"])]
            if tier.name in GATED:
                steps.append(("gate", ["runtests"]))
            for what, argv in steps:
                say(f"{tier.name}: `inv {' '.join(argv)}` on {tier.hosts()} ...")
                results = fleet.run_fleet(tier.targets, argv, parallel, timeout, hosts=hosts)
                for res in results:
                    line = f"{tier.name} {what}: {res.line()}"
                    rollout.lines.append(line)
                    say(line)
                failed = [r for r in results if not r.ok]
                if failed:
                    later = [t.name for t in _after(rollout, tier)]
                    first = failed[0]
                    rollout.stopped = (f"{first.target.name} ({first.target.where}) failed its {what} on the "
                                       f"{tier.name} tier: {first.summary}"
                                       + (f"; not touched: the {', '.join(later)} tier(s)" if later else ""))
                    return False
            # through: close the connections of the hosts no later tier needs
            needed = {hosts.key(target) for after in _after(rollout, tier) for target in after.targets}
            hosts.release([target for target in tier.targets if hosts.key(target) not in needed])
    return True


def _after(rollout: Rollout, tier: Tier) -> list[Tier]:
    return rollout.tiers[rollout.tiers.index(tier) + 1:]
