"""Plans that are the actions: a changing task's ``--dry-run`` prints the steps it then runs.

A ``Plan`` is a list of steps, each a line of text (written from the read-only probes,
which run for real also under ``--dry-run``) and the action that does it. ``show`` prints
the list; ``run`` executes it in order and keeps the name of the step under way, so an
interrupt or a failure can say where it happened (``current()``).

    plan = Plan(f"backing up {config.name}")
    plan.add("dump the database ...", dump, name="dump")
    plan.show()              # --dry-run stops here
    plan.run()
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

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

    def add(self, text: str, action: Callable[[], object] | None = None, name: str = "") -> Step:
        step = Step(text, action, name)
        self.steps.append(step)
        return step

    def show(self, say=print) -> None:
        say(f"plan for {self.title}:")
        for step in self.steps:
            say(f"  - {step.text}")

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
