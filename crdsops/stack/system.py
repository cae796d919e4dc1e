"""The system packages crdsops needs, by purpose, from ``system-packages.txt`` (stdlib only).

Purposes add up: ``default`` (the default django server's stack), ``vm`` (what the VM kinds
add: a compiler and headers for mysqlclient and mod_wsgi, Apache, the MySQL clients), ``test``
(the test suite's services and tools). `bin/bootstrap` asks for the purposes of what it
builds; ``ensure`` checks them with dpkg-query and, as root on Debian/Ubuntu, installs what
is missing with apt-get (one line first saying which and why; apt-get's own output goes to a log
file); otherwise it stops before changing anything with the `sudo apt-get install` line. A
machine with no dpkg is warned what it needs (Debian names) and carries on: a later failure
names what was missing.
"""

from __future__ import annotations

import configparser
import dataclasses
import logging
import os
import pathlib
import shutil
import tempfile

from crdsops import commands
from crdsops.errors import CrdsOpsError
from crdsops.stack import logged

CHECKOUT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES_FILE = CHECKOUT / "system-packages.txt"
PURPOSES = ("default", "vm", "test")

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Purpose:
    name: str
    why: str
    packages: tuple[str, ...]


def read(path: pathlib.Path = PACKAGES_FILE) -> dict[str, Purpose]:
    """Every purpose of PATH, in file order; CrdsOpsError naming the file on a bad one."""
    parser = configparser.ConfigParser(inline_comment_prefixes=("#",), interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise CrdsOpsError(f"{path} not found; restore it from git") from None
    except (OSError, configparser.Error) as err:
        raise CrdsOpsError(f"cannot read {path} ({err}); fix it or restore it from git") from None
    out = {}
    for name in parser.sections():
        if name not in PURPOSES:
            raise CrdsOpsError(f"{path}: unknown purpose [{name}]; expected one of {', '.join(PURPOSES)}")
        section = parser[name]
        packages = tuple(section.get("packages", "").split())
        if not packages or not section.get("why"):
            raise CrdsOpsError(f"{path}: [{name}] needs `why =` and `packages =`")
        out[name] = Purpose(name, section["why"].strip(), packages)
    if "default" not in out:
        raise CrdsOpsError(f"{path} has no [default] purpose; restore it from git")
    return out


def wanted(purposes, path: pathlib.Path = PACKAGES_FILE) -> list[Purpose]:
    """The purposes asked for (default always first), in the file's order."""
    table = read(path)
    asked = {"default", *purposes}
    unknown = asked - set(PURPOSES)
    if unknown:
        raise CrdsOpsError(f"unknown system-package purpose {', '.join(sorted(unknown))}; use {', '.join(PURPOSES)}")
    return [p for name, p in table.items() if name in asked]


def packages_of(purposes: list[Purpose]) -> list[str]:
    return list(dict.fromkeys(pkg for p in purposes for pkg in p.packages))


def installed(packages: list[str]) -> set[str] | None:
    """Which of PACKAGES dpkg says are installed; None where there is no dpkg-query."""
    query = shutil.which("dpkg-query")
    if query is None:
        return None
    # exit 1 when it knows some of them not at all: its listing of the others still holds
    result = commands.run([query, "-W", "-f=${Package}\t${Status}\n", *packages], what="dpkg-query", check=False)
    found = set()
    for line in result.stdout.splitlines():
        name, _, status = line.partition("\t")
        if status.split()[-1:] == ["installed"]:
            found.add(name.split(":")[0])
    return found


def missing(purposes: list[Purpose]) -> list[str] | None:
    """The packages of PURPOSES that are not installed; None where dpkg cannot tell."""
    packages = packages_of(purposes)
    have = installed(packages)
    return None if have is None else [p for p in packages if p not in have]


def why(purposes: list[Purpose], packages: list[str]) -> str:
    return "; ".join(p.why for p in purposes if set(p.packages) & set(packages))


def apt_line(packages: list[str], sudo: bool = True) -> str:
    return ("sudo " if sudo else "") + "apt-get install -y " + " ".join(packages)


def require(names, path: pathlib.Path = PACKAGES_FILE) -> None:
    """Fail with the apt-get line when a package of purposes NAMES is missing; install nothing."""
    purposes = wanted(names, path)
    absent = missing(purposes)
    if absent:
        raise CrdsOpsError(f"missing system packages for {why(purposes, absent)}: {' '.join(absent)}; "
                           f"install them with `{apt_line(absent, sudo=os.geteuid() != 0)}`")


def ensure(names, *, dry_run: bool = False, path: pathlib.Path = PACKAGES_FILE) -> list[str]:
    """Make sure the packages of purposes NAMES are installed; return what was (or would be) installed.

    Root with apt-get: installs the missing ones non-interactively. Not root: CrdsOpsError
    with the exact `sudo apt-get install` line, before anything changed. No dpkg: a warning
    naming what is needed, then carries on.
    """
    purposes = wanted(names, path)
    absent = missing(purposes)
    if absent is None:
        log.warning(f"no dpkg on this machine, so crdsops cannot check its system packages; it needs the "
                    f"equivalents of these Debian packages: {' '.join(packages_of(purposes))}")
        return []
    if not absent:
        return []
    reason = why(purposes, absent)
    if os.geteuid() != 0:
        raise CrdsOpsError(f"missing system packages for {reason}: {' '.join(absent)}; nothing was changed. "
                           f"Install them with `{apt_line(absent)}` and run this again")
    apt = shutil.which("apt-get")
    if apt is None:
        raise CrdsOpsError(f"missing system packages for {reason}: {' '.join(absent)}, and there is no apt-get "
                           "to install them with; install them with this machine's package manager")
    if dry_run:
        log.info(f"would install system packages {' '.join(absent)} ({reason}) with apt-get")
        return absent
    log.info(f"installing system packages {' '.join(absent)} ({reason}) with apt-get")
    apt_log = _apt_install(apt, absent)
    still = missing(purposes) or []
    if still:
        raise CrdsOpsError(f"apt-get did not install {' '.join(still)}; full log: {apt_log}")
    apt_log.unlink(missing_ok=True)
    return absent


def _apt_install(apt: str, packages: list[str]) -> pathlib.Path:
    """apt-get update, then install PACKAGES non-interactively; return the log their output streamed into."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    apt_log = pathlib.Path(tempfile.gettempdir()) / f"crdsops-apt-{os.getpid()}.log"
    with open(apt_log, "w") as logfh:
        for argv in ([apt, "update", "-q"],
                     [apt, "install", "-y", "-q", "-o", "Dpkg::Options::=--force-confdef",
                      "-o", "Dpkg::Options::=--force-confold", *packages]):
            code, _ = logged.run(argv, logfh, what="apt-get", env=env)
            if code != 0:
                raise CrdsOpsError(f"`{' '.join(argv[:2])}` exited {code} ({_last_line(apt_log)}); "
                                   f"full log: {apt_log}; fix apt and run this again")
    return apt_log


def _last_line(log: pathlib.Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "dpkg:"))]
    return ((errors or lines or ["no output"])[-1])[:300]
