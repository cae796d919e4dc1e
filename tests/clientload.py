"""A client load of real requests, in threads, that counts what a pipeline job would see fail.

Each thread loops over JSON-RPC ``get_server_info`` (POST /json/) and a file download (GET),
a new connection per request as the crds client makes them, with no retry: a refused
connection, a reset, a 5xx or a timeout is one failed request. ``gap`` is the longest time
during which no thread got an answer (the figure the issue names: 3.15 s before graceful
reloads). Stdlib only, so bench/ can use it as well as tests/.
"""

from __future__ import annotations

import collections
import http.client
import json
import threading
import time

RPC_BODY = json.dumps({"jsonrpc": "1.0", "id": 1, "method": "get_server_info", "params": []}).encode()


class ClientLoad:
    """``with ClientLoad(host, port, download) as load: ...``; then ``load.failures``, ``load.gap``."""

    def __init__(self, host: str, port: int, download: str | None = None, threads: int = 4, timeout: float = 30):
        self.host, self.port, self.download, self.timeout = host, port, download, timeout
        self.failures: collections.Counter = collections.Counter()
        self.examples: list[str] = []
        self.answered = 0
        self._answers: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self):
        self.started = time.monotonic()
        self._wall_offset = time.time() - self.started
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)
        self.ended = time.monotonic()

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def gap(self) -> float:
        """The longest stretch (seconds) in which no request was answered, from start to end."""
        return self._longest_gap()[1]

    @property
    def gap_began(self) -> float:
        """When that stretch began (``time.time()``), to find it in a server's log."""
        return self._longest_gap()[0] + self._wall_offset

    def _longest_gap(self) -> tuple[float, float]:
        times = sorted([self.started, *self._answers, self.ended])
        return max(((a, b - a) for a, b in zip(times, times[1:], strict=False)), key=lambda pair: pair[1])

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.failures.items())) or "none failed"
        return f"{self.answered} answered, {kinds}, longest gap {self.gap:.2f}s"

    def _loop(self, index: int) -> None:
        n = index
        while not self._stop.is_set():
            n += 1
            rpc = self.download is None or n % 2 == 0
            kind = self._one(rpc)
            with self._lock:
                if kind is None:
                    self.answered += 1
                    self._answers.append(time.monotonic())
                else:
                    self.failures[kind] += 1
            if kind is not None:
                time.sleep(0.05)  # a job every 50 ms per thread: a refusing port is not hammered

    def _one(self, rpc: bool) -> str | None:
        """One request; None when it was answered well, else what went wrong."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            if rpc:
                conn.request("POST", "/json/", RPC_BODY, {"Content-Type": "application/json"})
            else:
                conn.request("GET", self.download)
            response = conn.getresponse()
            body = response.read()
            if response.status >= 500:
                return self._note(f"{response.status}", body[:200])
            if response.status != 200 or (rpc and json.loads(body).get("error")):
                return self._note(f"http {response.status}", body[:200])
            return None
        except ConnectionRefusedError as err:
            return self._note("refused", err)
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                http.client.IncompleteRead) as err:
            return self._note("reset", err)
        except TimeoutError as err:
            return self._note("timeout", err)
        except (OSError, ValueError, http.client.HTTPException) as err:
            return self._note(type(err).__name__, err)
        finally:
            conn.close()

    def _note(self, kind: str, what) -> str:
        with self._lock:
            if len(self.examples) < 5:
                self.examples.append(f"{kind}: {what!r}")
        return kind
