"""Run a few jobs side by side in threads, and stop them all when one fails or the task is interrupted.

Backups dump, archive and list at once; restores take the safety backup while they stage.
Python cannot interrupt a thread, so when one job fails or a signal arrives, ``side_by_side``
sets ``interrupts.cancelled`` (loops in the jobs check it), ends the child processes the jobs
started (mysqldump, tar, zstd, rsync: our children in our own session; a server we started
runs in a session of its own and is left alone), waits for every job to return, and only then
raises, so the caller's clean-up never races a job still writing.

What it raises names the causes only: the jobs that failed before the others were stopped.
A job that ends after that (its ``interrupts.check()`` raised, its process died of our
SIGTERM, its tar lost its compressor) was stopped, not failed, and is not reported. A real
signal is still an interrupt (``interrupts.Interrupted``, exit 128+n), as it was.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from crdsops import interrupts
from crdsops.errors import CrdsOpsError


class JobsFailed(CrdsOpsError):
    """One or more side-by-side jobs failed; ``failures`` holds (label, exception), in the order they ended:
    the causes, not the jobs stopped because of them (``stopped`` holds their labels)."""

    def __init__(self, failures: list[tuple[str, BaseException]], stopped: list[str] | None = None):
        self.failures = failures
        self.stopped = stopped or []
        by_cause: dict[str, list[str]] = {}  # jobs that failed for one cause (a refused login) say it once
        for label, err in failures:
            by_cause.setdefault(interrupts.describe(err), []).append(label)
        super().__init__("; ".join(f"{', '.join(labels)}: {cause}" for cause, labels in by_cause.items()))


@dataclass
class Outcome:
    results: dict = field(default_factory=dict)  # label -> what the job returned
    seconds: dict = field(default_factory=dict)  # label -> how long it took


def side_by_side(jobs: dict[str, Callable[[], object]], own_processes: bool = True) -> Outcome:
    """Run every job at once; return their results, or raise once all have stopped.

    ``own_processes=False``: the jobs start no processes, so stopping them signals none (a
    call nested in another's job must not end the processes of that call's other jobs).
    """
    outcome = Outcome()
    failures: list[tuple[str, BaseException]] = []  # the causes: what failed before we stopped the others
    after_stop: list[tuple[str, BaseException]] = []  # what ended in failure once we had stopped them

    def timed(label, job):
        start = time.monotonic()
        try:
            return job()
        finally:
            outcome.seconds[label] = time.monotonic() - start

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(jobs)))
    stopped = False
    try:
        # Signals are deferred for the whole block and looked at between waits: an exception raised
        # inside the executor's own locks (submit, as_completed) can leave one held and hang the pool.
        with interrupts.shielded("stopping the jobs under way", announce=False):
            futures = {pool.submit(timed, label, job): label for label, job in jobs.items()}
            order = list(futures)
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.1,
                                                        return_when=concurrent.futures.FIRST_COMPLETED)
                for future in sorted(done, key=order.index):  # several at once: in the jobs' order
                    try:
                        outcome.results[futures[future]] = future.result()
                    except BaseException as err:  # noqa: BLE001 - a job's failure, reported below
                        (after_stop if stopped else failures).append((futures[future], err))
                if (failures or interrupts.pending()) and not stopped:
                    _stop_the_others(own_processes)
                    stopped = True
            pool.shutdown(wait=True)
    finally:
        if stopped:
            _stopped_done()
    if interrupts.received:  # a signal (in a nested call, raised here: the main thread defers it above)
        interrupted = [e for _, e in failures + after_stop if isinstance(e, KeyboardInterrupt)]
        if interrupted:
            raise interrupted[0]
    if failures:
        raise JobsFailed(failures, stopped=[label for label, _ in after_stop])
    if after_stop:  # stopped by a signal that a job saw first: nothing else failed
        raise JobsFailed(after_stop)
    return outcome


# How many side_by_side calls are stopping their jobs. A job may run its own side_by_side (the
# cache check's hashing pass): ``cancelled`` is cleared only when no call still needs it set and
# no signal set it, so a nested call that stopped its own jobs never un-cancels an outer one.
_stopping = [0]
_stopping_lock = threading.Lock()


def _stopped_done() -> None:
    with _stopping_lock:
        _stopping[0] -= 1
        if not _stopping[0] and not interrupts.received:
            interrupts.cancelled.clear()


def _stop_the_others(processes: bool = True) -> None:
    with _stopping_lock:
        _stopping[0] += 1
        interrupts.cancelled.set()
    for pid in children_in_our_session() if processes else ():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def children_in_our_session() -> list[int]:
    """Pids of our live child processes that share our session (not servers we started)."""
    me, session = os.getpid(), os.getsid(0)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[1]) == me and int(fields[3]) == session:
            found.append(int(entry.name))
    return found
