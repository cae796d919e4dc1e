"""Encrypted off-site copies of verified backups: ``tar | age -r ...``, ``rclone copyto``, checked there.

Config (``backups.offsite``; off while ``remote`` is null):

    remote          an rclone remote and path, e.g. ``crdsoffsite:backups/hst.ops`` (sftp, S3, ...)
    rclone_config   rclone's config file (null: rclone's own default)
    recipients      age public keys; the private key (identity) is never on the server

After ``inv backup`` has sealed and verified a backup (``crdsops.data.backup``), ``after_backup``
packs its directory (tar: its files are compressed already), encrypts the stream to every
recipient and writes it to a temporary file under ``private_dir``, hashing it (size, md5, sha1,
sha256) as it is written; uploads it as ``<remote>/<obs>.<kind>.<backup>.tar.age``; asks the remote
for the object's size and hash (``rclone lsjson --stat --hash``: S3 and sftp give md5, sftp sha1
too) and compares them with what was written; then, last, uploads ``<object>.json`` (the sums and
the backup's identity). An object without its ``.json`` is an upload that did not finish or did not
check: listed as ``incomplete``, never restored from. The remote name carries the server's name so
that two servers given one remote path by mistake never take each other's copies.

A failed upload fails nothing else: the backup stays good and the task succeeds, with a
``warning:`` line that is also the audit line's warning, ``<root>/state/offsite.json`` saying it
failed (``inv status`` WARNs on its ``offsite:`` line) and the notification of a failed run
(``crdsops.runtime.taskrun.alert``), so monitoring hears of it.

``inv offsite [--verify]`` lists the copies (``copies``); ``--verify`` asks the remote for each
object's hash again. ``inv restore --from offsite:NAME --identity FILE`` (``fetch``) downloads the
object, checks its size and sha256 against its ``.json``, decrypts it with the identity and
unpacks it (regular files and directories under NAME only) into ``private_dir/.offsite-fetch-PID``,
which ``fetched`` removes when the task ends; the ordinary restore then verifies the manifest's
sha256s and restores it. A wrong identity is found on the object's first 64 KiB, before the
download, and refused in one line.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from crdsops import commands, interrupts
from crdsops.config.model import Offsite, ServerConfig
from crdsops.data.inventory import human
from crdsops.data.manifest import Manifest
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir
from crdsops.records import Record
from crdsops.runtime import results, taskrun
from crdsops.runtime.results import OffsiteResult

log = logging.getLogger(__name__)

PREFIX = "offsite:"  # ``inv restore --from offsite:NAME``
SUFFIX = ".tar.age"
SUMS = ".json"  # the sidecar, uploaded last
SCHEMA = 1  # of the sidecar and of ``inv offsite --json``
HASHES = ("md5", "sha1")  # what remotes give (S3's ETag is an md5; sftp runs md5sum/sha1sum)
# fail within a minute on an unreachable remote rather than rclone's default of retrying for minutes
RCLONE_FLAGS = ("--contimeout", "20s", "--retries", "2", "--low-level-retries", "2", "--stats", "0")


class OffsiteError(CrdsOpsError):
    """An off-site step failed; its message is one line."""


@dataclass(frozen=True)
class Sums(Record):
    """``<object>.json``: what was uploaded, to check it against the remote and the download."""

    backup: str  # the backup's dated name
    server: str  # whose (hst.ops)
    size: int
    md5: str
    sha1: str
    sha256: str
    created: datetime.datetime | None = None  # the backup's, from its manifest
    uploaded: datetime.datetime | None = None
    recipients: tuple[str, ...] = ()  # the public keys it is encrypted to, to find the right private one
    schema: int = SCHEMA


@dataclass(frozen=True)
class Copy(Record):
    """One off-site copy as ``inv offsite`` lists it."""

    object: str  # its name on the remote
    backup: str
    size: int
    modified: datetime.datetime | None
    sums: Sums | None  # None: incomplete (no sidecar)
    state: str = "unverified"  # ok | BAD | incomplete | unverified
    problems: tuple[str, ...] = ()


# --- rclone ---------------------------------------------------------------------------------

def rclone(offsite: Offsite, *args: str, what: str, text: bool = True, ok_codes=(0,)) -> commands.Result:
    """Run rclone with the configured config file; OffsiteError with rclone's own last line."""
    config = ("--config", str(offsite.rclone_config)) if offsite.rclone_config else ()
    try:
        result = commands.run(["rclone", *config, *RCLONE_FLAGS, *args], what=what, check=False, text=text)
    except commands.CommandFailed as err:  # not installed
        raise OffsiteError(f"{err}; install it (apt-get install rclone)") from None
    if result.returncode not in ok_codes:
        said = _rclone_line(result.stderr)
        raise OffsiteError(f"{what} failed (rclone exit {result.returncode}{': ' + said if said else ''})")
    return result


def _rclone_line(stderr: str | bytes) -> str:
    """rclone's last error line without its timestamp and level (``2026/12/04 11:42:52 ERROR : ``)."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if " ERROR " in line or "Failed" in line] or lines
    errors = [line for line in errors if " Attempt " not in line] or errors  # a retry's summary says less
    last = errors[-1] if errors else ""
    return re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ((ERROR|NOTICE|INFO|DEBUG) *: *)?", "", last).strip()[-300:]


def _said(stderr: str) -> str:
    """The line a tool's error is on: age ends with a line asking for bug reports, after ``age: error: ...``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line] or lines
    return errors[-1].split("error: ", 1)[-1][-300:] if errors else ""


def _finished(procs: list[tuple[str, commands.Popen]]) -> None:
    """Wait for a pipeline; OffsiteError naming each stage that failed, with its error line."""
    errors = []
    for label, proc in procs:
        said = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            errors.append(f"{label} exited {proc.returncode}" + (f": {_said(said)}" if _said(said) else ""))
    if errors:
        raise OffsiteError("; ".join(errors))


def target(offsite: Offsite, name: str) -> str:
    """``REMOTE:PATH/name`` (``REMOTE:name`` for a remote's root)."""
    base = offsite.remote
    return f"{base}{name}" if base.endswith((":", "/")) else f"{base}/{name}"


def object_name(config: ServerConfig, backup: str) -> str:
    return f"{config.name}.{backup}{SUFFIX}"


def _preflight(offsite: Offsite) -> None:
    """What makes every rclone call fail, said once and plainly."""
    if offsite.rclone_config and not offsite.rclone_config.is_file():
        raise OffsiteError(f"rclone's config file {offsite.rclone_config} (backups.offsite.rclone_config) "
                           "does not exist; write it (`rclone config --config FILE`) or fix the key")
    if not shutil.which("rclone") or not shutil.which("age"):
        missing = " and ".join(t for t in ("rclone", "age") if not shutil.which(t))
        raise OffsiteError(f"{missing} not installed; install it (apt-get install rclone age)")


# --- upload ----------------------------------------------------------------------------------

def plan_text(config: ServerConfig) -> str:
    offsite = config.backups.offsite
    keys = len(offsite.recipients)
    return (f"off-site copy: tar | age to {keys} recipient{'s' if keys != 1 else ''}, rclone copyto "
            f"{target(offsite, object_name(config, 'NAME'))}, check its size and hash there "
            "(a failure only warns)")


def after_backup(config: ServerConfig, backup: Path, manifest: Manifest) -> OffsiteResult | None:
    """Upload ``backup`` when ``backups.offsite`` is on; never raises but for an interrupt.

    Whatever fails is recorded, warned about and notified as a failure; the backup stays good.
    """
    if not config.backups.offsite.enabled:
        return None
    started = datetime.datetime.now(datetime.UTC)
    try:
        result = upload(config, backup, manifest)
    except Exception as err:  # noqa: BLE001 - whatever the upload met, the backup it follows stands
        why = str(err) if isinstance(err, CrdsOpsError) else f"{type(err).__name__}: {err}"
        result = OffsiteResult(ok=False, error=why, backup=backup.name,
                               remote=target(config.backups.offsite, object_name(config, backup.name)))
        taskrun.alert(f"warning: the off-site copy of {backup.name} failed: {why}; "
                      f"the backup itself is good ({backup})")
    result = result.replace(seconds=_since(started), at=started.replace(microsecond=0))
    try:
        results.write(config.layout, result)
    except OSError as err:
        log.warning(f"could not record the off-site result in {config.layout.state} ({err.strerror or err})")
    return result


def _since(started: datetime.datetime) -> float:
    return round((datetime.datetime.now(datetime.UTC) - started).total_seconds(), 3)


def upload(config: ServerConfig, backup: Path, manifest: Manifest) -> OffsiteResult:
    """Encrypt ``backup`` to a temporary file, upload it, check it there, then upload its sums."""
    offsite = config.backups.offsite
    _preflight(offsite)
    name = object_name(config, backup.name)
    remote = target(offsite, name)
    for old in config.backups.private_dir.glob(f".tmp-offsite-*{SUFFIX}"):  # a killed run's; we hold the lock
        old.unlink(missing_ok=True)
    sums, checked = _send(offsite, backup, remote, name)
    sums = sums.replace(server=config.name, created=manifest.created, recipients=offsite.recipients,
                        uploaded=datetime.datetime.now(datetime.UTC).replace(microsecond=0))
    with tempfile.TemporaryDirectory(prefix="crdsops-offsite-") as work:
        side = Path(work) / (name + SUMS)
        side.write_text(json.dumps(sums.as_dict(), indent=2) + "\n")
        rclone(offsite, "copyto", str(side), remote + SUMS, what=f"uploading {name}{SUMS}")
    line = f"{human(sums.size)} uploaded to {remote}, size and {checked} checked there"
    log.info(f"off-site copy of {backup.name}: {line}")
    return OffsiteResult(ok=True, summary=f"{backup.name}: {line}", backup=backup.name, remote=remote,
                         size=sums.size, hash=checked)


def upload_file(config: ServerConfig, path: Path, name: str) -> str:
    """One file (a closed binlog) through ``age`` to ``<remote>/NAME.tar.age``, checked there; the hashes matched."""
    offsite = config.backups.offsite
    _preflight(offsite)
    remote = target(offsite, name + SUFFIX)
    sums, checked = _send(offsite, path, remote, name)
    log.info(f"off-site copy of {path.name}: {human(sums.size)} to {remote}, {checked} checked there")
    return checked


def _send(offsite: Offsite, source: Path, remote: str, name: str) -> tuple[Sums, str]:
    """``source`` encrypted beside itself, uploaded to ``remote`` and checked there: (its sums, the
    hashes that matched). A copy that does not match is removed: it would look like a good one."""
    tmp = source.parent / f".tmp-offsite-{source.name}-{os.getpid()}{SUFFIX}"
    try:
        sums = encrypt(source, offsite.recipients, tmp)
        rclone(offsite, "copyto", str(tmp), remote, what=f"uploading {name} to {offsite.remote}")
    finally:
        with interrupts.shielded():
            tmp.unlink(missing_ok=True)
    checked = check_remote(offsite, remote, sums)
    if isinstance(checked, list):
        _forget(offsite, remote)
        raise OffsiteError(f"the upload {remote} does not match what was sent ({'; '.join(checked)}); removed it")
    return sums, checked


def encrypt(backup: Path, recipients: tuple[str, ...], out: Path) -> Sums:
    """``tar`` of ``backup`` (its name the archive's one top directory) through ``age -r ...`` into ``out``.

    The bytes are hashed as they are written, so the sums describe exactly what is uploaded
    without reading the file again.
    """
    tar = commands.start(["tar", "-C", str(backup.parent), "-cf", "-", backup.name], what="tar",
                         stdout=commands.PIPE, stderr=commands.PIPE)
    argv = ["age", *[arg for key in recipients for arg in ("-r", key)]]
    try:
        age = commands.start(argv, what="age", stdin=tar.stdout, stdout=commands.PIPE, stderr=commands.PIPE)
    except BaseException:
        tar.kill()
        tar.wait()
        raise
    tar.stdout.close()  # age holds it now; tar gets SIGPIPE should age die
    hashes = {algorithm: hashlib.new(algorithm) for algorithm in ("md5", "sha1", "sha256")}
    size = 0
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            while chunk := age.stdout.read(1 << 20):
                for digest in hashes.values():
                    digest.update(chunk)
                handle.write(chunk)
                size += len(chunk)
        age.stdout.close()
        _finished([("tar", tar), ("age", age)])
    except BaseException:
        for proc in (tar, age):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        raise
    return Sums(backup=backup.name, server="", size=size,
                **{algorithm: digest.hexdigest() for algorithm, digest in hashes.items()})


def check_remote(offsite: Offsite, remote: str, sums: Sums) -> str | list[str]:
    """The hashes that matched (``md5, sha1``), or the list of what differs from ``sums``."""
    out = rclone(offsite, "lsjson", "--stat", "--hash", remote, what=f"reading back {remote}").stdout
    try:
        info = json.loads(out)
    except ValueError:
        return [f"rclone lsjson said {out[:80]!r}"]
    problems = [] if info.get("Size") == sums.size else [f"size {info.get('Size')} there, {sums.size} sent"]
    given = {k.lower(): v for k, v in (info.get("Hashes") or {}).items() if v}
    matched = [h for h in HASHES if given.get(h) == getattr(sums, h)]
    problems += [f"{h} {given[h][:12]}... there, {getattr(sums, h)[:12]}... sent"
                 for h in HASHES if h in given and h not in matched]
    if not problems and not matched:
        problems.append("the remote gives neither md5 nor sha1 for it, so it cannot be checked (an sftp "
                        "remote needs md5sum or sha1sum on its far side)")
    return problems or ", ".join(matched)


def _forget(offsite: Offsite, remote: str) -> None:
    try:
        rclone(offsite, "deletefile", remote, what=f"removing {remote}")
    except OffsiteError as err:
        log.warning(f"could not remove the bad upload: {err}")


# --- what is there ---------------------------------------------------------------------------

def copies(config: ServerConfig, verify: bool = False) -> list[Copy]:
    """This server's copies on the remote, newest backup first; ``verify``: each object's hash asked again."""
    offsite = _enabled(config)
    _preflight(offsite)
    flags = ("--hash",) if verify else ()
    listed = rclone(offsite, "lsjson", "--files-only", *flags, offsite.remote, ok_codes=(0, 3),
                    what=f"listing {offsite.remote}")  # 3: the directory is not there yet (no upload so far)
    if listed.returncode == 3:
        return []
    entries = {e["Name"]: e for e in json.loads(listed.stdout or "[]")}
    mine = re.compile(re.escape(f"{config.name}.") + r"(.+)" + re.escape(SUFFIX) + "$")
    sums = _sidecars(offsite, [n + SUMS for n in entries if mine.match(n) and n + SUMS in entries])
    out = []
    for name, entry in entries.items():
        match = mine.match(name)
        if not match:
            continue
        side = sums.get(name + SUMS)
        copy = Copy(object=name, backup=match.group(1), size=entry.get("Size", 0),
                    modified=_when(entry.get("ModTime")), sums=side,
                    state="incomplete" if side is None else "unverified")
        out.append(_judged(copy, entry) if verify and side is not None else copy)
    return sorted(out, key=lambda c: c.backup, reverse=True)


def _judged(copy: Copy, entry: dict) -> Copy:
    """``copy`` with what its listing (taken with ``--hash``) says against its sums."""
    sums = copy.sums
    problems = [] if copy.size == sums.size else [f"size {copy.size}, {sums.size} uploaded"]
    given = {k.lower(): v for k, v in (entry.get("Hashes") or {}).items() if v}
    matched = [h for h in HASHES if given.get(h) == getattr(sums, h)]
    problems += [f"{h} differs from what was uploaded" for h in HASHES if h in given and h not in matched]
    if not problems and not matched:
        problems.append("the remote gives neither md5 nor sha1: not checked")
    return copy.replace(state="BAD" if problems else "ok", problems=tuple(problems))


def _sidecars(offsite: Offsite, names: list[str]) -> dict[str, Sums]:
    """The ``.json`` sums of ``names``, fetched in one rclone call; an unreadable one is left out."""
    if not names:
        return {}
    out = {}
    with tempfile.TemporaryDirectory(prefix="crdsops-offsite-") as work:
        listing = Path(work) / "files"
        listing.write_text("\n".join(names) + "\n")
        rclone(offsite, "copy", "--files-from", str(listing), offsite.remote, str(Path(work) / "sums"),
               what=f"reading the sums in {offsite.remote}")
        for name in names:
            try:
                out[name] = Sums.from_dict(json.loads((Path(work) / "sums" / name).read_text()), where=name)
            except (OSError, ValueError, CrdsOpsError) as err:
                log.warning(f"{name} on {offsite.remote} is unreadable ({err}); its copy counts as incomplete")
    return out


def _when(text: str | None) -> datetime.datetime | None:
    try:
        return datetime.datetime.fromisoformat(text).astimezone(datetime.UTC).replace(microsecond=0)
    except (TypeError, ValueError):
        return None


def _enabled(config: ServerConfig) -> Offsite:
    offsite = config.backups.offsite
    if not offsite.enabled:
        raise OffsiteError(f"{config.name} has no off-site copies configured (backups.offsite.remote is "
                           f"null in {', '.join(config.sources) or 'its config'}); set it, its rclone config "
                           "and backups.offsite.recipients")
    return offsite


def document(config: ServerConfig, listed: list[Copy], verified: bool) -> dict:
    """``inv offsite --json``."""
    return {"schema": SCHEMA, "server": config.name, "remote": config.backups.offsite.remote,
            "verified": verified, "copies": [c.as_dict() for c in listed]}


# --- restore from it -------------------------------------------------------------------------

def names_copy(spec: str | None) -> bool:
    """Whether ``inv restore --from SPEC`` means an off-site copy."""
    return bool(spec) and spec.startswith(PREFIX)


def fetch(config: ServerConfig, spec: str, identity: Path | None) -> Path:
    """Download, check, decrypt and unpack the copy ``offsite:NAME``; the backup directory it made.

    NAME: a backup's name or its date prefix, ``latest``, or the object's name. Nothing of the
    server is touched here; the caller verifies the backup (manifest, sha256s) and restores it.
    """
    offsite = _enabled(config)
    identity = _identity(identity)
    copy = _chosen(config, spec.removeprefix(PREFIX))
    remote = target(offsite, copy.object)
    _check_identity(offsite, remote, identity, copy)
    work = _workdir(config)
    encrypted = work / copy.object
    log.info(f"fetching {remote} ({human(copy.size)}) ...")
    rclone(offsite, "copyto", remote, str(encrypted), what=f"downloading {remote}")
    size, sha = encrypted.stat().st_size, hashlib.sha256()
    with open(encrypted, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    if (size, sha.hexdigest()) != (copy.sums.size, copy.sums.sha256):
        raise OffsiteError(f"refusing {spec}: the download differs from what was uploaded (size {size}, "
                           f"{copy.sums.size} uploaded, or its sha256); nothing was changed")
    _decrypt(encrypted, identity, work, copy.backup)
    encrypted.unlink()
    log.info(f"{spec}: downloaded, checked against its sums and decrypted into {work / copy.backup}")
    return work / copy.backup


def _identity(identity: Path | None) -> Path:
    if identity is None:
        raise OffsiteError("restoring from an off-site copy needs --identity FILE: the age private key of one "
                           "of backups.offsite.recipients (kept off the server; put it there for the restore)")
    identity = Path(identity).expanduser()
    if not identity.is_file() or not os.access(identity, os.R_OK):
        raise OffsiteError(f"cannot read the identity file {identity}; give the age private key file "
                           "(age-keygen's output) with --identity")
    return identity.resolve()


def _chosen(config: ServerConfig, name: str) -> Copy:
    """The complete copy NAME names (exact backup or object name, a date prefix, ``latest``): the newest match."""
    listed = [c for c in copies(config) if c.sums is not None]
    key = name.replace("-", "").replace(":", "")
    if name in ("", "latest"):
        found = listed
    else:
        found = [c for c in listed if name in (c.backup, c.object)] or [c for c in listed if c.backup.startswith(key)]
    if not found:
        there = ", ".join(c.backup for c in listed[:5]) or "none"
        raise OffsiteError(f"no complete off-site copy of {config.name} matches {name!r} in "
                           f"{config.backups.offsite.remote} (newest: {there}); `inv offsite` lists them")
    return found[0]


def _check_identity(offsite: Offsite, remote: str, identity: Path, copy: Copy) -> None:
    """Refuse a wrong identity on the object's first 64 KiB (its age header), before a long download."""
    head = rclone(offsite, "cat", "--count", "65536", remote, what=f"reading the start of {remote}", text=False)
    tried = commands.run(["age", "-d", "-i", str(identity)], what="age", input=head.stdout, text=False, check=False)
    said = tried.stderr.decode(errors="replace")
    if tried.ok or "no identity matched" not in said and "header" not in said:
        return  # decrypted, or stopped only at the cut (a truncated payload): the key fits
    why = _said(said) or f"age exit {tried.returncode}"
    keys = ", ".join(k[:16] + "..." for k in copy.sums.recipients) or "see backups.offsite.recipients"
    raise OffsiteError(f"refusing {PREFIX}{copy.backup}: the identity {identity} does not decrypt it ({why}); "
                       f"it is encrypted to {keys}; nothing was changed")


def _decrypt(encrypted: Path, identity: Path, work: Path, top: str) -> None:
    """``age -d`` into a tar stream, unpacked under ``work``: only files and directories under ``top``.

    Anyone holding a public key could have encrypted a tarball to it: links, devices and
    names outside ``top`` are refused rather than written. age authenticates every chunk and
    the end of the stream, so its exit status says whether all of it was the uploader's.
    """
    age = commands.start(["age", "-d", "-i", str(identity), str(encrypted)], what="age",
                         stdout=commands.PIPE, stderr=commands.PIPE)
    problem = None
    try:
        with tarfile.open(fileobj=age.stdout, mode="r|") as archive:
            for member in archive:
                interrupts.check()
                problem = _unsafe(member, top)
                if problem:
                    break
                archive.extract(member, work, set_attrs=False)
        while not problem and age.stdout.read(1 << 16):  # the tar's padding: age must finish writing to succeed
            pass
    except tarfile.TarError as err:
        problem = f"not a readable backup archive once decrypted ({err})"
    finally:
        if age.poll() is None and problem:
            age.kill()
        age.stdout.close()
        said = _said(age.stderr.read().decode(errors="replace"))
        age.wait()
    if age.returncode > 0 or (age.returncode != 0 and not problem):  # age's own failure says most
        raise OffsiteError(f"refusing {encrypted.name}: age could not decrypt it with {identity} "
                           f"({said or f'exit {age.returncode}'}); nothing was changed")
    if problem:
        raise OffsiteError(f"refusing {encrypted.name}: {problem}; nothing was changed")
    for path in [work / top, *(work / top).rglob("*")]:
        os.chmod(path, 0o700 if path.is_dir() else 0o600)


def _unsafe(member: tarfile.TarInfo, top: str) -> str | None:
    """Why ``member`` may not be unpacked (None: a file or directory under ``top``)."""
    parts = Path(member.name).parts
    if member.name.startswith("/") or ".." in parts or parts[:1] != (top,):
        return f"it holds {member.name!r}, outside the backup {top}"
    if not (member.isfile() or member.isdir()):
        return f"it holds {member.name!r}, which is not a regular file or directory"
    return None


def _workdir(config: ServerConfig) -> Path:
    """``private_dir/.offsite-fetch-PID``, new; those of runs that died are removed first.

    Not ``.tmp-*``: the restore's own safety backup clears those while this one is in use.
    """
    base = config.backups.private_dir
    ensure_dir(base)
    for old in base.glob(".offsite-fetch-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    work = base / f".offsite-fetch-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    ensure_dir(work)
    return work


@contextlib.contextmanager
def fetched(config: ServerConfig):
    """Remove what ``fetch`` downloaded when the block ends, however it ends."""
    try:
        yield
    finally:
        with interrupts.shielded():
            shutil.rmtree(config.backups.private_dir / f".offsite-fetch-{os.getpid()}", ignore_errors=True)
