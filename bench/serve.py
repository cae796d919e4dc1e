#!/usr/bin/env python3
"""Serving speed of a VM kind (Apache/mod_wsgi + MySQL) against the `django` kind (runserver + SQLite).

Figures, all measured in this one run, alternating the two servers over REPEATS rounds,
medians of the rounds:

  apache_vs_runserver_server_info_rps   JSON-RPC get_server_info requests/s, hst dev ÷ hst django
  apache_vs_runserver_bestrefs_rps      JSON-RPC get_best_references requests/s (the demo dataset under
                                        the demo's operational context, computed by the crds library in
                                        the server), hst dev ÷ hst django
  apache_bestrefs_rps                   hst dev's get_best_references/s, absolute (no target)
  apache_bestrefs_vs_library_call       that ÷ the plain crds library call's calls/s, the same context and
                                        header looped in one Python process of the stack (no target:
                                        what HTTP, the WSGI server and Django add to the library's work)
  apache_vs_runserver_download_rps      1 MB reference downloads/s, hst dev ÷ hst django
  apache_download_vs_cat                bytes/s of 1 MB downloads from Apache ÷ bytes/s of
                                        `cat FILE > /dev/null` run once per file (how close
                                        delivery is to the disk; target >= 0.5, i.e. Apache
                                        delivers at least half as fast as cat reads)

Beside them, the make-up of a get_best_references on each server: the CPU seconds its processes
spend per request (read from /proc over each measurement), split into the floor any JSON-RPC
call pays (an unknown method: HTTP, the WSGI server, Django, the dispatcher) and the method's
own part, and how many cores the server kept busy. requests/s = cores busy ÷ CPU per request,
so the Apache/runserver ratio is (cores Apache got ÷ cores runserver got) × (runserver's CPU per
request ÷ Apache's): on a machine busy with other work the first factor is what is left idle.

Both servers are installed with `inv install` into a temporary directory with private
configs (CRDSOPS_CONFIGS/CRDSOPS_STATE), the VM kind on a throwaway MariaDB account and
database at 127.0.0.1:3306 (root with an empty password must be able to create them, as in
CI). The load generator is ApacheBench (`ab`, shipped with apache2-utils, which Apache needs
anyway), a connection per request; without `ab` the bench falls back to a stdlib load generator
(threads, http.client keep-alive) and says so. Only loopback traffic, every loop bounded by
time and count. Everything it creates is removed at the end.

Usage: bench/serve   (from the repository root; as root, the checkout must be readable by www-data)
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import CHECKOUT, INV, MYSQL_MISSING, STACK_BIN, Account, figure, free_port, note, web_option_file

REPEATS = 5
SECONDS = 2.5          # per measurement
CONCURRENCY = 8
CAT_FILES = 40          # files per `cat` measurement
REF_NAME = "d0m09999j_drk.fits"
RPC_BODY = json.dumps({"jsonrpc": "1.0", "id": 1, "method": "get_server_info", "params": []}).encode()

sys.path.insert(0, str(CHECKOUT / "server"))
from crds_server.catalog.demo import demo_dataset, demo_set  # stdlib only: the demo both servers are seeded with

sys.path.pop(0)
DATASET = demo_dataset("hst")
BESTREFS_BODY = json.dumps({"jsonrpc": "1.0", "id": 1, "method": "get_best_references",
                            "params": [demo_set("hst").context, DATASET.header, None]}).encode()
# any JSON-RPC call's floor: the whole path (HTTP, the WSGI server, Django, the dispatcher), no method's work
NONE_BODY = json.dumps({"jsonrpc": "1.0", "id": 1, "method": "no_such_method", "params": []}).encode()


class CannotMeasure(Exception):
    pass


say = note


# --- set-up --------------------------------------------------------------------------

def make_fits(path: Path, megabytes: int = 1) -> None:
    """A valid 1 MB int16 FITS reference (header + 1024 x 512 pixels), stdlib only."""
    def card(key, value):
        text = f"{value:>20}" if not isinstance(value, str) else f"'{value:<8}'"
        if isinstance(value, bool):
            text = f"{'T' if value else 'F':>20}"
        return f"{f'{key:<8}= {text}':<80}"[:80]

    width, height = 1024, 512 * megabytes
    cards = [card("SIMPLE", True), card("BITPIX", 16), card("NAXIS", 2), card("NAXIS1", width),
             card("NAXIS2", height), card("TELESCOP", "HST"), card("INSTRUME", "ACS"),
             card("DETECTOR", "WFC"), card("REFTYPE", "DARKFILE"), card("USEAFTER", "2020-01-01T00:00:00")]
    header = "".join(cards) + f"{'END':<80}"
    header += " " * (-len(header) % 2880)
    data = random.Random(1).randbytes(width * height * 2)
    path.write_bytes(header.encode("ascii") + data + b"\0" * (-len(data) % 2880))


def write_configs(where: Path, port_vm: int, port_dj: int, db: str, option_file: Path) -> Path:
    """configs/ copied, with hst dev and hst django put under ``where`` (YAML appended: later keys win)."""
    configs = where / "configs"
    shutil.copytree(CHECKOUT / "configs", configs)
    common = {"backups": {"private_dir": "{root}/backups", "shared_dir": str(where / "shared")}}
    for kind, extra in (
        ("dev", {"root": str(where / "hst-dev"), "web": {"port": port_vm},
                 "database": {"name": db, "option_file": str(option_file)}}),
        ("django", {"root": str(where / "hst-django"), "web": {"port": port_dj}}),
    ):
        path = configs / "hst" / f"{kind}.yaml"
        result = subprocess.run(
            [str(STACK_BIN / "python"), "-c", (
                "import sys, yaml, json\n"
                "path, extra = sys.argv[1], json.loads(sys.argv[2])\n"
                "data = yaml.safe_load(open(path)) or {}\n"
                "def merge(a, b):\n"
                "    for k, v in b.items():\n"
                "        a[k] = merge(dict(a.get(k) or {}), v) if isinstance(v, dict) else v\n"
                "    return a\n"
                "open(path, 'w').write(yaml.safe_dump(merge(data, extra)))\n"),
             str(path), json.dumps({**common, **extra})],
            capture_output=True, text=True)
        if result.returncode != 0:
            raise CannotMeasure(f"cannot write {path}: {result.stderr.strip()}")
    return configs


class Server:
    def __init__(self, where: Path, configs: Path, kind: str, port: int):
        self.kind, self.port = kind, port
        self.env = dict(os.environ, CRDSOPS_CONFIGS=str(configs), CRDSOPS_STATE=str(where / f"{kind}.json"))
        self.running = False

    def inv(self, *args: str, timeout: float = 600) -> str:
        result = subprocess.run([str(INV), *args], cwd=CHECKOUT, env=self.env, capture_output=True,
                                text=True, stdin=subprocess.DEVNULL, timeout=timeout)
        if result.returncode != 0:
            raise CannotMeasure(f"hst {self.kind}: inv {' '.join(args)} failed: "
                                f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
        return result.stdout

    def start(self) -> None:
        self.inv("run")
        self.running = True

    def stop(self) -> None:
        if self.running:
            subprocess.run([str(INV), "stop"], cwd=CHECKOUT, env=self.env, capture_output=True, timeout=120)
            self.running = False


# --- load ----------------------------------------------------------------------------

def ab_rps(url: str, body: bytes | None, scratch: Path) -> tuple[float, int]:
    """(requests/s, failed) from ApacheBench for SECONDS, a connection per request.

    Not `-k`: ab speaks HTTP/1.0, and runserver never tells a 1.0 client it keeps the
    connection, so ab would wait on it forever; both servers get the same treatment.
    """
    argv = ["ab", "-q", "-c", str(CONCURRENCY), "-t", str(SECONDS), "-n", "2000000", "-s", "30"]
    if body is not None:
        post = scratch / "rpc.json"
        post.write_bytes(body)
        argv += ["-p", str(post), "-T", "application/json"]
    result = subprocess.run([*argv, url], capture_output=True, text=True, timeout=SECONDS + 60)
    rps = re.search(r"Requests per second:\s+([\d.]+)", result.stdout)
    if result.returncode != 0 or not rps:
        raise CannotMeasure(f"ab {url} failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    failed = int(re.search(r"Failed requests:\s+(\d+)", result.stdout).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", result.stdout)
    return float(rps.group(1)), failed + (int(non2xx.group(1)) if non2xx else 0)


def python_rps(url: str, body: bytes | None, _scratch: Path) -> tuple[float, int]:
    """The same with threads and http.client keep-alive connections (no `ab`)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + SECONDS
    counts, failures = [0] * CONCURRENCY, [0] * CONCURRENCY

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while time.monotonic() < deadline:
            try:
                if body is None:
                    conn.request("GET", parts.path)
                else:
                    conn.request("POST", parts.path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                while response.read(1 << 20):
                    pass
                if response.status == 200:
                    counts[i] += 1
                else:
                    failures[i] += 1
            except (OSError, http.client.HTTPException):
                failures[i] += 1
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONCURRENCY)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(SECONDS + 60)
    return sum(counts) / (time.monotonic() - start), sum(failures)


def cat_bytes_per_second(path: Path) -> float:
    script = f'i=0; while [ $i -lt {CAT_FILES} ]; do cat "$1"; i=$((i+1)); done > /dev/null'
    start = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", script, "sh", str(path)], check=True)
    return CAT_FILES * path.stat().st_size / (time.perf_counter() - start)


def warm_up(url: str, body: bytes | None, seconds: float = 2 * SECONDS) -> None:
    """Requests from CONCURRENCY threads, a connection each, for `seconds` and until every thread had two answers.

    The first get_best_references of each server process imports the crds library and loads
    the context, seconds on a busy machine: longer than one measurement, so not part of one.
    """
    import urllib.request

    deadline = time.monotonic() + seconds
    hard_stop = deadline + 300

    def worker() -> None:
        answered = 0
        while (time.monotonic() < deadline or answered < 2) and time.monotonic() < hard_stop:
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"} if body else {})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    response.read()
                answered += 1
            except OSError:
                time.sleep(0.1)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def check_bestrefs(kind: str, rpc_url: str) -> None:
    """One get_best_references answered right (ab counts any HTTP 200, and JSON-RPC errors are 200s)."""
    import urllib.request

    request = urllib.request.Request(rpc_url, BESTREFS_BODY, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    if answer.get("result") != DATASET.bestrefs:
        raise CannotMeasure(f"hst {kind}: get_best_references answered {answer}, not {DATASET.bestrefs}")


# --- the make-up ----------------------------------------------------------------------

def server_cpu_seconds(marker: str) -> float:
    """CPU seconds (user + system) used so far by the live processes whose command line contains `marker`."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                if marker.encode() not in handle.read():
                    continue
            with open(f"/proc/{entry.name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def measured(load, url: str, body: bytes | None, where: Path, marker: str, what: str) -> tuple[float, float]:
    """(requests/s, CPU seconds the server's processes spent per request) of one measurement."""
    cpu, start = server_cpu_seconds(marker), time.monotonic()
    rps, failed = load(url, body, where)
    cores = (server_cpu_seconds(marker) - cpu) / (time.monotonic() - start)
    if failed:
        raise CannotMeasure(f"{failed} {what} requests failed ({url})")
    return rps, cores / rps


LIBRARY_LOOP = """
import json, sys, time
from crds.core import rmap, utils
cache, context, header, seconds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
loaded = rmap.load_mapping(context, path=cache)
def best():  # what the server computes (catalog/rules.py) and the client's local mode too
    conditioned = utils.condition_header(header)
    include = list(set(loaded.get_filekinds(conditioned)) & set(loaded.locate.header_to_reftypes(conditioned, context)))
    return loaded.get_best_references(loaded.minimize_header(conditioned), include=include)
best()
calls, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    best()
    calls += 1
print(calls / (time.perf_counter() - start))
"""


def library_calls_per_second(mappings: Path) -> float:
    """The plain crds library call, looped for SECONDS in one Python process of the stack (no HTTP, no Django)."""
    demo = demo_set("hst")
    env = dict(os.environ, CRDS_SERVER_URL="https://crds-serverless-mode.stsci.edu",
               CRDS_PATH=str(mappings.parent.parent), CRDS_MODE="local")
    argv = [str(STACK_BIN / "python"), "-c", LIBRARY_LOOP, str(mappings), demo.context, json.dumps(DATASET.header),
            str(SECONDS)]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0:
        raise CannotMeasure(f"the plain crds library call failed: {result.stderr.strip().splitlines()[-1:]}")
    return float(result.stdout.split()[-1])


def write_mappings(where: Path) -> Path:
    mappings = where / "library" / "mappings" / "hst"
    mappings.mkdir(parents=True)
    for name, content in demo_set("hst").files.items():
        if name.endswith((".pmap", ".imap", ".rmap")):
            (mappings / name).write_bytes(content)
    return mappings


# --- main ----------------------------------------------------------------------------

def install(where: Path, account: Account) -> tuple[list[Server], Path]:
    """hst dev and hst django installed, seeded, started, holding the 1 MB reference; (servers, reference)."""
    option_file = web_option_file(where / "hst-dev.my.cnf", account)
    port_vm, port_dj = free_port(), free_port()
    configs = write_configs(where, port_vm, port_dj, account.database, option_file)
    reference = where / REF_NAME
    make_fits(reference)
    vm, dj = Server(where, configs, "dev", port_vm), Server(where, configs, "django", port_dj)
    say(f"installing hst dev (Apache/mod_wsgi + MariaDB {account.database}) and hst django (runserver + SQLite) "
        f"in {where}")
    vm.inv("install", "--obs", "hst", "--kind", "dev")
    vm.inv("manage", "--", "seed_demo")
    dj.inv("install", "--obs", "hst", "--kind", "django")
    return [vm, dj], reference


# what each round measures per server: (name, request body, or None for the 1 MB download)
REQUESTS = (("info", RPC_BODY), ("best", BESTREFS_BODY), ("none", NONE_BODY), ("down", None))


def measure(servers: list[Server], reference: Path, where: Path, load) -> dict:
    """{(kind, request): [(requests/s, server CPU s per request) per round]}, and "cat" and "library" series."""
    urls = {s.kind: (f"http://127.0.0.1:{s.port}/json/",
                     f"http://127.0.0.1:{s.port}/unchecked_get/references/hst/{REF_NAME}") for s in servers}
    markers = {s.kind: str(where / f"hst-{s.kind}") for s in servers}
    mappings = write_mappings(where)
    say(f"load: {'ab (a connection per request)' if load is ab_rps else 'python threads (no ab found)'}, "
        f"{CONCURRENCY} connections, {SECONDS}s per measurement, {REPEATS} rounds alternating the servers")
    for kind, (rpc_url, file_url) in urls.items():  # warm up every process of both servers
        check_bestrefs(kind, rpc_url)
        warm_up(rpc_url, BESTREFS_BODY)  # every process loads the crds library and the context
        for _, body in REQUESTS:
            load(file_url if body is None else rpc_url, body, where)
    series = {"cat": [], "library": []}
    for round_ in range(REPEATS):
        for kind in (list(urls) if round_ % 2 == 0 else list(reversed(urls))):
            rpc_url, file_url = urls[kind]
            for what, body in REQUESTS:
                url = file_url if body is None else rpc_url
                series.setdefault((kind, what), []).append(
                    measured(load, url, body, where, markers[kind], f"hst {kind} {what}"))
            if kind == "dev":
                series["cat"].append(cat_bytes_per_second(reference))
        series["library"].append(library_calls_per_second(mappings))
        last = {key: values[-1][0] for key, values in series.items() if isinstance(key, tuple)}
        say(f"round {round_ + 1}: get_server_info/s dev {last['dev', 'info']:.0f} django {last['django', 'info']:.0f}; "
            f"get_best_references/s dev {last['dev', 'best']:.0f} django {last['django', 'best']:.0f}; "
            f"downloads/s dev {last['dev', 'down']:.0f} django {last['django', 'down']:.0f}; "
            f"cat {series['cat'][-1] / 1e6:.0f} MB/s; plain crds library calls/s {series['library'][-1]:.0f}")
    return series


def report(series: dict, size: int) -> None:
    med = statistics.median
    rps = {key: med(r for r, _ in values) for key, values in series.items() if isinstance(key, tuple)}
    cpu_ms = {key: 1e3 * med(c for _, c in values) for key, values in series.items() if isinstance(key, tuple)}
    library = med(series["library"])
    apache_bytes = rps["dev", "down"] * size
    say(f"load average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
        "(the servers share them with ab, MariaDB and anything else running)")
    say(f"medians: get_server_info/s dev {rps['dev', 'info']:.0f}, django {rps['django', 'info']:.0f}; "
        f"get_best_references/s dev {rps['dev', 'best']:.0f}, django {rps['django', 'best']:.0f}; "
        f"1 MB downloads/s dev {rps['dev', 'down']:.0f} ({apache_bytes / 1e6:.0f} MB/s), "
        f"django {rps['django', 'down']:.0f}; cat {med(series['cat']) / 1e6:.0f} MB/s")
    for kind in ("dev", "django"):
        best, none = cpu_ms[kind, "best"], cpu_ms[kind, "none"]
        say(f"make-up, hst {kind}: a get_best_references costs the server's processes {best:.2f} ms of CPU = "
            f"{none:.2f} ms for any JSON-RPC call (an unknown method: HTTP, the WSGI server, Django; "
            f"{rps[kind, 'none']:.0f}/s) + {best - none:.2f} ms of its own; {rps[kind, 'best'] * best / 1e3:.2f} "
            f"cores busy at {rps[kind, 'best']:.0f}/s")
    say(f"the plain crds library call (the same context and header, looped in one process): {library:.0f}/s, "
        f"{1e3 / library:.3f} ms")
    figure("apache_vs_runserver_server_info_rps", rps["dev", "info"] / rps["django", "info"], ">= 2")
    figure("apache_vs_runserver_bestrefs_rps", rps["dev", "best"] / rps["django", "best"], ">= 2")
    print(f"apache_bestrefs_rps = {rps['dev', 'best']:.0f} (no target: get_best_references/s from hst dev, "
          f"{library:.0f} plain crds library calls/s in one process)", flush=True)
    print(f"apache_bestrefs_vs_library_call = {rps['dev', 'best'] / library:.3f} (no target: Apache's "
          "get_best_references/s / the plain library call's calls/s in one process)", flush=True)
    figure("apache_vs_runserver_download_rps", rps["dev", "down"] / rps["django", "down"], ">= 2")
    figure("apache_download_vs_cat", apache_bytes / med(series["cat"]), ">= 0.5")


def main() -> int:
    if not INV.exists():
        print(f"cannot measure: {INV} missing; run `make build`", file=sys.stderr)
        return 1
    if MYSQL_MISSING:
        print(f"cannot measure: {MYSQL_MISSING}", file=sys.stderr)
        return 1
    load = ab_rps if shutil.which("ab") else python_rps
    where = Path(tempfile.mkdtemp(prefix="crdsops-bench-serve-", dir="/tmp"))
    where.chmod(0o755)
    account = Account("bench")
    servers: list[Server] = []
    account_made = False
    try:
        account.create()
        account_made = True
        servers, reference = install(where, account)
        for server in servers:
            server.inv("manage", "--", "ingest", str(reference))
            server.start()
        report(measure(servers, reference, where, load), reference.stat().st_size)
        return 0
    except CannotMeasure as err:
        print(f"cannot measure: {err}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
        if account_made:
            account.drop()
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
