#!/usr/bin/env python3
"""Serving speed of a VM kind (Apache/mod_wsgi + MySQL) against the `django` kind (runserver + SQLite).

Figures, all measured in this one run, alternating the two servers over REPEATS rounds,
medians of the rounds:

  apache_vs_runserver_server_info_rps   JSON-RPC get_server_info requests/s, hst dev ÷ hst django
  apache_vs_runserver_download_rps      1 MB reference downloads/s, hst dev ÷ hst django
  apache_download_vs_cat                bytes/s of 1 MB downloads from Apache ÷ bytes/s of
                                        `cat FILE > /dev/null` run once per file (how close
                                        delivery is to the disk; target >= 0.5, i.e. Apache
                                        delivers at least half as fast as cat reads)

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
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
STACK_BIN = CHECKOUT / ".venv" / "bin"
INV = STACK_BIN / "inv"
REPEATS = 5
SECONDS = 2.5          # per measurement
CONCURRENCY = 8
CAT_FILES = 40          # files per `cat` measurement
REF_NAME = "d0m09999j_drk.fits"
ROOT_SQL = ["mysql", "-uroot", "-h127.0.0.1", "-P3306", "--batch", "--skip-column-names"]
RPC_BODY = json.dumps({"jsonrpc": "1.0", "id": 1, "method": "get_server_info", "params": []}).encode()


class CannotMeasure(Exception):
    pass


def say(text: str) -> None:
    print(f"# {text}", flush=True)


# --- set-up --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def root_sql(sql: str) -> str:
    result = subprocess.run(ROOT_SQL, input=sql, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise CannotMeasure(f"MariaDB root at 127.0.0.1:3306 refused ({result.stderr.strip()}); start MariaDB")
    return result.stdout


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


# --- main ----------------------------------------------------------------------------

def main() -> int:
    if not INV.exists():
        print(f"cannot measure: {INV} missing; run `make build`", file=sys.stderr)
        return 1
    load = ab_rps if shutil.which("ab") else python_rps
    where = Path(tempfile.mkdtemp(prefix="crdsops-bench-serve-", dir="/tmp"))
    where.chmod(0o755)
    tag = secrets.token_hex(4)
    user, db, password = f"crdsops_bench_{tag}", f"crds_bench_{tag}", secrets.token_urlsafe(18)
    servers: list[Server] = []
    account_made = False
    try:
        root_sql("".join(f"CREATE USER '{user}'@'{h}' IDENTIFIED BY '{password}';"
                         f"GRANT ALL ON `{db}`.* TO '{user}'@'{h}';" for h in ("localhost", "127.0.0.1")))
        account_made = True
        option_file = where / "hst-dev.my.cnf"
        fd = os.open(option_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"[client]\nuser = {user}\npassword = {password}\n")
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("www-data")
            os.chown(option_file, entry.pw_uid, entry.pw_gid)
        port_vm, port_dj = free_port(), free_port()
        configs = write_configs(where, port_vm, port_dj, db, option_file)
        reference = where / REF_NAME
        make_fits(reference)
        vm, dj = Server(where, configs, "dev", port_vm), Server(where, configs, "django", port_dj)
        servers = [vm, dj]
        say(f"installing hst dev (Apache/mod_wsgi + MariaDB {db}) and hst django (runserver + SQLite) in {where}")
        vm.inv("install", "--obs", "hst", "--kind", "dev")
        vm.inv("manage", "--", "seed_demo")
        dj.inv("install", "--obs", "hst", "--kind", "django")
        for server in servers:
            server.inv("manage", "--", "ingest", str(reference))
            server.start()
        size = reference.stat().st_size
        urls = {s.kind: (f"http://127.0.0.1:{s.port}/json/",
                         f"http://127.0.0.1:{s.port}/unchecked_get/references/hst/{REF_NAME}") for s in servers}
        say(f"load: {'ab (a connection per request)' if load is ab_rps else 'python threads (no ab found)'}, {CONCURRENCY} connections, "
            f"{SECONDS}s per measurement, {REPEATS} rounds alternating the servers")
        for _kind, (rpc_url, file_url) in urls.items():  # warm up every process of both servers
            load(rpc_url, RPC_BODY, where)
            load(file_url, None, where)
        info = {k: [] for k in urls}
        down = {k: [] for k in urls}
        cat = []
        for round_ in range(REPEATS):
            order = list(urls) if round_ % 2 == 0 else list(reversed(urls))
            for kind in order:
                rpc_url, file_url = urls[kind]
                rps, failed = load(rpc_url, RPC_BODY, where)
                if failed:
                    raise CannotMeasure(f"hst {kind}: {failed} get_server_info requests failed")
                info[kind].append(rps)
                rps, failed = load(file_url, None, where)
                if failed:
                    raise CannotMeasure(f"hst {kind}: {failed} downloads failed")
                down[kind].append(rps)
                if kind == "dev":
                    cat.append(cat_bytes_per_second(reference))
            say(f"round {round_ + 1}: get_server_info/s dev {info['dev'][-1]:.0f} django {info['django'][-1]:.0f}; "
                f"downloads/s dev {down['dev'][-1]:.0f} django {down['django'][-1]:.0f}; cat {cat[-1] / 1e6:.0f} MB/s")
        med = statistics.median
        apache_bytes = med(down["dev"]) * size
        say(f"load average during the run: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
            "(the servers share them with ab, MariaDB and anything else running)")
        say(f"medians: get_server_info/s dev {med(info['dev']):.0f}, django {med(info['django']):.0f}; "
            f"1 MB downloads/s dev {med(down['dev']):.0f} ({apache_bytes / 1e6:.0f} MB/s), "
            f"django {med(down['django']):.0f}; cat {med(cat) / 1e6:.0f} MB/s")
        print(f"apache_vs_runserver_server_info_rps = {med(info['dev']) / med(info['django']):.2f} (target >= 2)")
        print(f"apache_vs_runserver_download_rps = {med(down['dev']) / med(down['django']):.2f} (target >= 2)")
        print(f"apache_download_vs_cat = {apache_bytes / med(cat):.2f} (target >= 0.5)")
        return 0
    except CannotMeasure as err:
        print(f"cannot measure: {err}", file=sys.stderr)
        return 1
    finally:
        for server in servers:
            server.stop()
        if account_made:
            root_sql(f"DROP DATABASE IF EXISTS `{db}`;"
                     + "".join(f"DROP USER IF EXISTS '{user}'@'{h}';" for h in ("localhost", "127.0.0.1")))
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
