"""Client load: the real crds client's requests against a server for the whole of a block, each one recorded.

A pipeline job asks the server the way `crds.client.api` does: JSON-RPC through
`crds.client.proxy.CheckingProxy` (`get_server_info`, `get_file_info_map`, `list_mappings`)
and reference downloads from the `reference_url` that `get_server_info` names (what
`FileCacher.get_data_http` opens), checked against the catalog's size and sha1sum as
`FileCacher.verify_file` does. The client does not retry (CRDS_CLIENT_RETRY_COUNT 1) and
its proxy turns a refused connection, a reset, an HTTP 503 and a timeout all into a
`ServiceError`: any of them is a failed job. So every failed request counts here.

Threads of this process: the proxy takes its URL per instance (one per thread, no global
`api.set_crds_server`); only the retry count and the timeout are process-wide environment
settings, set for the block and put back after it.

    with ClientLoad(server.url, "hst") as load:
        ops.inv("rerun")
    assert load.failed == 0, load.describe()

or `under_load(url, obs, operation)`: the load, one second, the operation, one second.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

OK = "ok"
METHODS = ("get_server_info", "get_file_info_map", "list_mappings", "download")


@dataclasses.dataclass(frozen=True)
class Request:
    """One request as the client saw it: what, when (monotonic seconds), and how it ended."""

    what: str
    start: float
    end: float
    outcome: str  # ok, refused, reset, timeout, http NNN, wrong content, rpc error, error NAME


def classify(exc: BaseException) -> str:
    """The kind of a failure, from the exception the client raised and its causes.

    The proxy wraps the socket error (`ServiceError(...) from exc`), urllib wraps it again
    (`URLError.reason`): walk both down to what the socket said.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, urllib.error.HTTPError):
            return f"http {exc.code}"
        if isinstance(exc, ConnectionRefusedError):
            return "refused"
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                            http.client.RemoteDisconnected, http.client.IncompleteRead)):
            return "reset"
        if isinstance(exc, (TimeoutError, socket.timeout)):
            return "timeout"
        if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):
            return "wrong content"
        nxt = exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException) else None
        nxt = nxt or exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    name = type(exc).__name__
    return "rpc error" if name == "ServiceError" else f"error {name}"


@dataclasses.dataclass(frozen=True)
class Report:
    """What the clients saw over a block: its requests and the block's bounds (monotonic seconds)."""

    requests: tuple[Request, ...] = dataclasses.field(repr=False)  # thousands: describe() says it short
    start: float
    end: float

    @property
    def failures(self) -> dict[str, int]:
        return dict(collections.Counter(r.outcome for r in self.requests if r.outcome != OK).most_common())

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def longest_gap(self) -> float:
        """The longest stretch of the block with no successful answer (from its start to its end)."""
        answers = sorted(r.end for r in self.requests if r.outcome == OK and self.start <= r.end <= self.end)
        marks = [self.start, *answers, self.end]
        return max(b - a for a, b in zip(marks, marks[1:], strict=False))

    def describe(self) -> str:
        kinds = ", ".join(f"{kind} {n}" for kind, n in self.failures.items())
        return (f"{len(self.requests)} requests in {self.end - self.start:.1f} s, {self.failed} failed"
                f"{f' ({kinds})' if kinds else ''}, longest gap {self.longest_gap:.2f} s")


class Client:
    """One client thread's view of the server: the real proxy, the download URLs and sha1sums it checks."""

    def __init__(self, url: str, obs: str, timeout: float):
        from crds.client.proxy import CheckingProxy  # the stack's crds, as a pipeline job has it

        self.obs, self.timeout = obs, timeout
        self.server = CheckingProxy(url.rstrip("/") + "/json/", version="1.0")
        info = self.server.get_server_info()  # before the block: the server must be up, and right, to start
        if info.get("observatory") != obs or not info.get("operational_context"):
            raise RuntimeError(f"{url} is not a {obs} server with an operational context before the load: "
                               f"{ {k: info.get(k) for k in ('observatory', 'operational_context')} }")
        self.reference_base = info["reference_url"]["unchecked"][obs]
        catalog = self.server.get_file_info_map(obs, None, ["size", "sha1sum"])
        self.references = sorted((name, int(fields["size"]), fields["sha1sum"])
                                 for name, fields in catalog.items() if not name.endswith("map"))
        if not self.references:
            raise RuntimeError(f"{url} catalogs no reference to download")

    def ask(self, what: str, n: int) -> str:
        """Make one request; OK or why its answer is wrong (exceptions are the caller's)."""
        if what == "get_server_info":
            info = self.server.get_server_info()
            return OK if info.get("observatory") == self.obs and info.get("operational_context") else "wrong content"
        if what == "get_file_info_map":
            name, size, sha1 = self.references[n % len(self.references)]
            answer = self.server.get_file_info_map(self.obs, [name], ["size", "sha1sum"])
            return OK if answer.get(name) == {"size": str(size), "sha1sum": sha1} or \
                answer.get(name) == {"size": size, "sha1sum": sha1} else "wrong content"
        if what == "list_mappings":
            return OK if self.server.list_mappings(self.obs, "*") else "wrong content"
        return self.download(n)

    def download(self, n: int) -> str:
        name, size, sha1 = self.references[n % len(self.references)]
        digest, length = hashlib.sha1(), 0
        with urllib.request.urlopen(self.reference_base + name, timeout=self.timeout) as answer:
            while chunk := answer.read(1 << 16):  # the client reads in chunks too (CRDS_DATA_CHUNK_SIZE)
                digest.update(chunk)
                length += len(chunk)
        return OK if (length, digest.hexdigest()) == (size, sha1) else "wrong content"


class ClientLoad:
    """``threads`` client threads making ``rate`` requests/s in all, for as long as the block lasts."""

    def __init__(self, url: str, obs: str, threads: int = 4, rate: float = 80.0, timeout: float = 30.0):
        self.url, self.obs, self.threads, self.rate, self.timeout = url, obs, threads, rate, timeout
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._saved_env: dict[str, str | None] = {}
        self.report: Report | None = None
        self._start = 0.0

    # -- the block

    def __enter__(self) -> ClientLoad:
        # the client's own defaults, whatever the environment says: one try, and a timeout
        # (the client's 3600 s would hang a test; a request held for a swap still fits in 30 s)
        for var, value in (("CRDS_CLIENT_RETRY_COUNT", "1"), ("CRDS_CLIENT_TIMEOUT_SECONDS", str(int(self.timeout)))):
            self._saved_env[var] = os.environ.get(var)
            os.environ[var] = value
        clients = [Client(self.url, self.obs, self.timeout) for _ in range(self.threads)]
        self._start = time.monotonic()
        for i, client in enumerate(clients):
            worker = threading.Thread(target=self._work, args=(i, client), name=f"clientload-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> Report:
        """End the block: no new request; those in flight finish (bounded by the timeout)."""
        if self.report is None:
            end = time.monotonic()
            self._stop.set()
            for worker in self._workers:
                worker.join(self.timeout + 5)
            for var, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
            with self._lock:
                self.report = Report(tuple(self._requests), self._start, end)
        return self.report

    def _work(self, index: int, client: Client) -> None:
        # Each thread keeps its own schedule (rate/threads per second), offset from the others so
        # the requests spread evenly; a held request delays this thread only, it does not burst after.
        interval = self.threads / self.rate
        due = time.monotonic() + index * interval / self.threads
        n = index
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            what = METHODS[n % len(METHODS)]
            start = time.monotonic()
            try:
                outcome = client.ask(what, n // len(METHODS))
            except Exception as exc:  # noqa: BLE001 - every failure is a result to record
                outcome = classify(exc)
            with self._lock:
                self._requests.append(Request(what, start, time.monotonic(), outcome))
            n += 1
            due = max(due + interval, time.monotonic())

    # -- what was seen (the report once stopped, the requests so far before)

    def _now(self) -> Report:
        if self.report is not None:
            return self.report
        with self._lock:
            return Report(tuple(self._requests), self._start, time.monotonic())

    @property
    def requests(self) -> tuple[Request, ...]:
        return self._now().requests

    @property
    def failed(self) -> int:
        return self._now().failed

    @property
    def failures(self) -> dict[str, int]:
        return self._now().failures

    @property
    def longest_gap(self) -> float:
        return self._now().longest_gap

    def describe(self) -> str:
        return self._now().describe()


def under_load(url: str, obs: str, operation, before: float = 1.0, after: float = 1.0, **load):
    """(what ``operation()`` returned, the load's Report): the load from ``before`` s ahead of it to ``after`` s past it.

    The load stops (and the environment is put back) even when the operation raises.
    """
    with ClientLoad(url, obs, **load) as running:
        time.sleep(before)
        result = operation()
        time.sleep(after)
    return result, running.report
