"""A backup's compressed files are hashed and decompressed to their end as they are written
(``compression.Checked``), so its seal reads none of them again: the stream's sha256 and size
are the file's, a stream that does not decompress is caught, and a backup made by a compressor
that writes garbage (and exits 0) is refused, not published."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from crdsops.db.compression import ZSTD, Checked, compress_stream, finish
from crdsops.files import digest

pytestmark = pytest.mark.skipif(not shutil.which("zstd"), reason="zstd is not installed")


def _stream(data: bytes) -> Checked:
    """``data`` fed to a Checked as if a compressor had written it; waited for."""
    read, write = os.pipe()
    checked = Checked()
    out = os.open(os.devnull, os.O_WRONLY)
    checked.start(ZSTD, os.fdopen(read, "rb"), out)
    os.write(write, data)
    os.close(write)
    checked.wait()
    return checked


def test_what_passed_through_is_the_file(tmp_path):
    data = b"".join(b"INSERT INTO t VALUES (%d);\n" % i for i in range(200_000))
    source, out = tmp_path / "dump.sql", tmp_path / "dump.sql.zst"
    source.write_bytes(data)
    checked = Checked()
    with open(source, "rb") as feed:
        finish([("compressor", compress_stream(feed, out, checked))])
    checked.wait()
    assert checked.problem is None
    assert (checked.size, checked.sha256) == (out.stat().st_size, digest(out))
    assert subprocess.run(["zstd", "-q", "-d", "-c", str(out)], capture_output=True, check=True).stdout == data


def test_a_stream_that_does_not_decompress_is_caught():
    good = subprocess.run(["zstd", "-q", "-1", "-c"], input=b"x" * 1_000_000, capture_output=True, check=True).stdout
    assert _stream(good).problem is None
    assert _stream(good[: len(good) // 2]).problem.startswith("does not decompress to its end")
    assert _stream(b"not zstd at all\n" * 1000).problem.startswith("does not decompress to its end")


def test_a_compressor_writing_garbage_fails_the_backup(sqlite_server, tmp_path):
    server = sqlite_server
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "zstd").write_text(f"""#!/bin/sh
# decompresses as zstd does; "compresses" into garbage and exits 0
case " $* " in *" -d "*|*" -t "*) exec {shutil.which('zstd')} "$@";; esac
cat > /dev/null
echo 'not a zstd frame'
""")
    (shim / "zstd").chmod(0o755)
    env = dict(server.ops.env, PATH=f"{shim}:{os.environ['PATH']}")
    result = server.ops.inv("backup", check=False, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not verify" in result.stderr and "does not decompress to its end" in result.stderr, result.stderr
    assert not server.shared().exists()  # nothing published
