"""Plans that are the actions: a changing task's ``--dry-run`` prints the steps it then runs.

A ``Plan`` is a list of steps, each a line of text (written from the read-only probes,
which run for real also under ``--dry-run``) and the action that does it. ``show`` says
the list; ``run`` executes it in order and keeps the name of the step under way, so an
interrupt or a failure can say where it happened (``current()``). ``problems`` are what the
probes found that forbid running it (the driver refuses, nothing changed); ``confirm`` is the
question to ask before a destructive plan runs.

    plan = Plan(f"backing up {config.name}")
    plan.add("dump the database ...", dump, name="dump")
    plan.show()              # --dry-run stops here
    plan.run()

``crdsops.runtime.lifecycle`` drives every changing task through one; the stack builder
builds its own from its facts. Standard library only (the stack builder uses it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_under_way: list[str] = []  # names of the steps being run, outermost first
_stopped_in: list[str] = []  # the innermost step an exception left, once it has left it


@dataclass
class Step:
    text: str
    action: Callable[[], object] | None = None  # None: a line of the plan that needs no action
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.text.split(";")[0].split(":")[0][:60]


@dataclass
class Plan:
    title: str
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # found by the probes: the plan must not run
    confirm: str = ""  # the question before running it ("": none)
    refusal: str = ""  # what a refusal says before its problems ("refusing backup X")

    def add(self, text: str, action: Callable[[], object] | None = None, name: str = "") -> Step:
        step = Step(text, action, name)
        self.steps.append(step)
        return step

    def extend(self, other: Plan) -> None:
        self.steps += other.steps
        self.problems += other.problems

    def lines(self) -> list[str]:
        return [f"plan for {self.title}:"] + [f"  - {step.text}" for step in self.steps]

    def show(self) -> None:
        """Say the plan (a plan of no steps says nothing: a check with nothing to repair)."""
        if not self.steps:
            return
        for line in self.lines():
            log.info(line)

    def refused(self) -> str:
        """The one line a plan with problems is refused with."""
        more = f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        head = self.refusal or f"refusing {self.title}"
        return f"{head}: {'; '.join(self.problems[:3])}{more}; nothing was changed"

    def run(self) -> None:
        for step in self.steps:
            if step.action is not None:
                with under_way(step.label):
                    step.action()


@contextlib.contextmanager
def under_way(name: str):
    """Mark ``name`` as the step being run for the block."""
    _under_way.append(name)
    try:
        yield
    except BaseException:
        if not _stopped_in:
            _stopped_in.append(name)
        raise
    finally:
        _under_way.pop()


def current() -> str | None:
    """The innermost step under way, or the one an exception came out of (for the reports)."""
    if _under_way:
        return _under_way[-1]
    return _stopped_in[0] if _stopped_in else None


def reset() -> None:
    _under_way.clear()
    _stopped_in.clear()
