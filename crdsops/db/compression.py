"""Compressed dumps and archives: zstd when installed (several times faster than gzip, and
smaller), else gzip; the same two tools read them back and test them to their end.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from crdsops import commands
from crdsops.errors import CrdsOpsError


@dataclass(frozen=True)
class Compression:
    name: str
    suffix: str
    compress: tuple
    decompress: tuple

    def test_argv(self, path: Path) -> list[str]:
        """Read ``path`` to its end, checking its frame checksums, writing nothing."""
        return [self.decompress[0], "-q", "-t", str(path)] if self.name == "zstd" else ["gzip", "-t", str(path)]

    def decompress_argv(self, path: Path) -> list[str]:
        return [*self.decompress, str(path)]


# level 1: on a 500,000-row dump, 1.23-1.44 s and 16.3 MB against 1.38-1.73 s and 18.8 MB at 3 (2 cores)
ZSTD = Compression("zstd", ".zst", ("zstd", "-q", "-1", "-T0", "-c"), ("zstd", "-q", "-d", "-c"))
GZIP = Compression("gzip", ".gz", ("gzip", "-6", "-c"), ("gzip", "-d", "-c"))


def compression() -> Compression:
    """zstd when installed (several times faster than gzip, smaller output), else gzip."""
    return ZSTD if shutil.which("zstd") else GZIP


def compression_of(path: Path) -> Compression | None:
    name = str(path)
    if name.endswith(".zst"):
        return ZSTD
    if name.endswith(".gz"):
        return GZIP
    return None


def open_decompressed(path: Path) -> commands.Popen:
    """A subprocess whose stdout is the decompressed content of ``path``."""
    comp = compression_of(path)
    if comp is None:
        return commands.start(["cat", str(path)], what=f"reading {path}", stdout=commands.PIPE, stderr=commands.PIPE)
    if not shutil.which(comp.decompress[0]):
        raise CrdsOpsError(f"{path} is {comp.name}-compressed but `{comp.decompress[0]}` is not installed; install it")
    return commands.start(comp.decompress_argv(path), what=f"decompressing {path}", stdout=commands.PIPE,
                          stderr=commands.PIPE)


class Checked:
    """What ``compress_stream`` wrote to its file, seen on the way: the sha256 and size of the bytes, and
    whether they decompress to their end (a decompressor reads a copy of them as they are written).

    A backup reads its dump once this way instead of twice after it (a sha256 pass, then the
    decompression test of the seal): 0.04 s and 0.06 s of a 16 MB dump, on its critical path.
    Read the fields after ``wait()``, which the caller calls once the compressor has ended.
    """

    def __init__(self):
        self.sha256: str | None = None
        self.size = 0
        self.problem: str | None = None  # None: the bytes decompressed to their end
        self._copier: threading.Thread | None = None
        self._write_error: OSError | None = None

    def wait(self) -> None:
        """Once the compressor has ended: wait for the last bytes; raise what writing them raised
        (a full disk), the cause of the compressor's SIGPIPE that follows it."""
        if self._copier is not None:
            self._copier.join()
        if self._write_error is not None:
            raise self._write_error

    def start(self, comp: Compression, compressed, fd: int) -> None:
        """Copy ``compressed`` (the compressor's stdout) into ``fd``, hashing it and feeding a decompressor."""
        try:
            tester = commands.start(list(comp.decompress), what=f"testing the {comp.name} stream", stdin=commands.PIPE,
                                    stdout=commands.DEVNULL, stderr=commands.PIPE)
        except commands.NotInstalled:
            tester = None
            self.problem = f"cannot test: {comp.decompress[0]} is not installed"
        self._copier = threading.Thread(target=self._copy, args=(comp, compressed, fd, tester), daemon=True,
                                        name="compressed copy")
        self._copier.start()

    def _copy(self, comp: Compression, compressed, fd: int, tester) -> None:
        sha = hashlib.sha256()
        feeding = tester is not None
        try:
            while chunk := os.read(compressed.fileno(), 1 << 20):
                _write_all(fd, chunk)
                sha.update(chunk)  # hashlib lets go of the GIL for large buffers
                self.size += len(chunk)
                if feeding:
                    try:
                        tester.stdin.write(chunk)
                    except BrokenPipeError:  # it stopped reading: its exit status says why
                        feeding = False
        except OSError as err:
            self._write_error = err
            self.problem = f"could not write it ({err.strerror or err})"
        finally:
            compressed.close()
            os.close(fd)
            self.sha256 = sha.hexdigest()
            if tester is not None:
                try:
                    tester.stdin.close()
                except BrokenPipeError:
                    pass
                err = tester.stderr.read().decode(errors="replace")
                if tester.wait() != 0 and self.problem is None:
                    failure = stage_failure(comp.decompress[0], tester.returncode, err)
                    self.problem = f"does not decompress to its end ({failure})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def compress_stream(source, out: Path, checked: Checked | None = None) -> commands.Popen:
    """Start a compressor reading ``source`` (a pipe or file) and writing ``out`` (0600).

    ``checked``: the compressed bytes pass through this process on their way to ``out``
    (``Checked``); call ``checked.wait()`` once the compressor has ended.
    """
    comp = compression_of(out) or compression()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        proc = commands.start(list(comp.compress), what=f"compressing {out}", stdin=source,
                              stdout=fd if checked is None else commands.PIPE, stderr=commands.PIPE)
    except BaseException:
        os.close(fd)
        raise
    if checked is None:
        os.close(fd)  # the compressor holds it now
    else:
        checked.start(comp, proc.stdout, fd)  # the copier owns fd and the compressor's stdout from here
    return proc


def stage_failure(label: str, returncode: int, stderr: str) -> str:
    """One stage of a pipeline that failed, for an error line: ``tar exited 2: <its last line>``,
    ``zstd was killed by SIGTERM``; never an empty ``label: `` when it said nothing."""
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"exited {returncode}"
    last = (stderr or "").strip().splitlines()[-1:]
    return f"{label} {how}" + (f": {last[0].strip()[-200:]}" if last else " (no message)")


def finish(procs: list[tuple[str, commands.Popen]]) -> None:
    """Wait for a pipeline; raise naming the first stage that failed."""
    errors = []
    for label, proc in procs:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            errors.append(stage_failure(label, proc.returncode, err))
    if errors:
        raise CrdsOpsError("; ".join(errors))
