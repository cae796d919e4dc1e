"""Encrypted off-site copies with real parts: age keys made by age-keygen, rclone's sftp backend
against a throwaway sshd on 127.0.0.x (tests/sshd.py), the hst django server.

Skipped when rclone, age or sshd are not installed (system-packages.txt, purpose test, has them).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from receivers import PingReceiver
from sshd import SSHD, SshLab
from support import free_port, make_configs

MISSING = [tool for tool in ("rclone", "age", "age-keygen") if not shutil.which(tool)]
pytestmark = pytest.mark.skipif(bool(MISSING) or not Path(SSHD).exists(),
                                reason=f"needs rclone, age and sshd (missing: {', '.join(MISSING) or 'sshd'})")


def age_key(path: Path) -> tuple[Path, str]:
    """A new age identity file and its public key."""
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(path)], check=True, capture_output=True, text=True)
    return path, public.stdout.strip()


class Offsite:
    """An sftp "off-site store" on its own sshd, an rclone.conf reaching it, an age key pair."""

    def __init__(self, where: Path, address: str):
        self.lab = SshLab(where / "ssh")
        self.host = self.lab.host(address)
        self.store = where / "offsite-store"  # what the far side holds, to look at and to damage
        self.rclone_conf = where / "rclone.conf"
        self.rclone_conf.write_text(
            f"[crdsoffsite]\ntype = sftp\nhost = {address}\nport = {self.host.port}\nuser = root\n"
            f"key_file = {self.lab.client_key}\nknown_hosts_file = {self.lab.known_hosts}\n")
        self.identity, self.public = age_key(where / "offsite.key")

    def section(self, port: int | None = None) -> dict:
        """``backups.offsite``; ``port``: point the rclone remote elsewhere (nobody listening there)."""
        if port is not None:
            text = self.rclone_conf.read_text().replace(f"port = {self.host.port}", f"port = {port}")
            self.rclone_conf.write_text(text)
        return {"remote": f"crdsoffsite:{self.store}", "rclone_config": str(self.rclone_conf),
                "recipients": [self.public]}

    def close(self) -> None:
        self.lab.close()


@pytest.fixture
def offsite(ops, tmp_path):
    """hst django installed and running with off-site copies to a local sftp store; stopped afterwards."""
    store = Offsite(tmp_path, "127.0.0.31")
    make_configs(ops.where, {("hst", "django"): {"backups": {"offsite": store.section()}}})
    ops.inv("install", "--obs", "hst", "--kind", "django")
    ops.inv("run")
    try:
        yield ops, store
    finally:
        ops.inv("stop", check=False)
        store.close()


def rows(ops) -> list:
    con = sqlite3.connect(ops.config("hst", "django").database.name)
    try:
        return con.execute("SELECT * FROM catalog_catalogfile ORDER BY id").fetchall()
    finally:
        con.close()


def private_backups(ops) -> list[str]:
    base = ops.config("hst", "django").backups.private_dir
    return sorted(p.name for p in base.iterdir() if not p.name.startswith(".") and p.is_dir())


def test_backup_uploads_and_a_restore_from_the_copy_gets_the_rows_back(offsite):
    ops, store = offsite
    backup = ops.inv("backup")
    assert "off-site copy of" in backup.stdout and "md5" in backup.stdout, backup.stdout + backup.stderr
    name = private_backups(ops)[-1]
    stored = store.store / f"hst.django.{name}.tar.age"
    assert stored.exists() and (store.store / f"hst.django.{name}.tar.age.json").exists()
    assert b"age-encryption.org/v1" in stored.read_bytes()[:40]  # encrypted, not a bare tarball
    assert b"manifest.json" not in stored.read_bytes()

    listed = json.loads(ops.inv("offsite", "--verify", "--json").stdout)
    assert [(c["backup"], c["state"]) for c in listed["copies"]] == [(name, "ok")]
    status = ops.inv("status", check=False).stdout
    assert "offsite:" in status and "ok" in status.split("offsite:")[1].splitlines()[0]

    before = rows(ops)
    con = sqlite3.connect(ops.config("hst", "django").database.name)
    con.execute("DELETE FROM catalog_catalogfile WHERE filekind = 'reference'")
    con.commit()
    con.close()
    assert rows(ops) != before
    result = ops.inv("restore", "--from", "offsite:latest", "--identity", str(store.identity), "--yes")
    assert "healthy" in result.stdout, result.stdout
    assert rows(ops) == before
    base = ops.config("hst", "django").backups.private_dir
    assert not list(base.glob(".offsite-fetch-*"))  # the fetched copy is gone once restored

    # a copy damaged on the far side: --verify says so and exits 1
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0xFF
    stored.write_bytes(bytes(data))
    damaged = ops.inv("offsite", "--verify", check=False)
    assert damaged.returncode == 1 and "BAD" in damaged.stdout, damaged.stdout + damaged.stderr


def test_a_wrong_identity_is_refused_before_anything_changes(offsite, tmp_path):
    ops, store = offsite
    ops.inv("backup")
    wrong, _ = age_key(tmp_path / "someone-else.key")
    con = sqlite3.connect(ops.config("hst", "django").database.name)
    con.execute("UPDATE catalog_catalogfile SET description = 'after the backup' WHERE id = 1")
    con.commit()
    con.close()
    before, backups = rows(ops), private_backups(ops)
    refused = ops.inv("restore", "--from", "offsite:latest", "--identity", str(wrong), "--yes", check=False)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not decrypt it" in lines[0] and "nothing was changed" in lines[0], lines
    assert rows(ops) == before and private_backups(ops) == backups  # no safety backup even: nothing began
    assert not list(ops.config("hst", "django").backups.private_dir.glob(".offsite-fetch-*"))


def test_an_unreachable_remote_warns_but_the_backup_succeeds(offsite):
    ops, store = offsite
    with PingReceiver() as pings:
        section = store.section(port=free_port("127.0.0.31"))  # nobody listens there
        make_configs(ops.where, {("hst", "django"): {"backups": {"offsite": section},
                                                     "monitoring": {"ping_url": pings.url}}})
        result = ops.inv("backup", check=False)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any("off-site copy" in line and "failed" in line for line in warned), result.stderr
    assert len(private_backups(ops)) == 1  # the backup itself was made
    assert ops.config("hst", "django").backups.shared_dir.joinpath("hst.django").exists()

    audit = json.loads(ops.config("hst", "django").layout.audit_log.read_text().splitlines()[-1])
    assert audit["task"] == "backup" and audit["result"] == "ok"
    assert any("off-site copy" in w for w in audit["warnings"])
    assert [p.path.rsplit("/", 1)[-1] for p in pings.pings] == ["start", "fail"]  # a failed backup's path
    assert "off-site copy" in pings.pings[-1].body

    status = ops.inv("status", check=False)
    assert status.returncode == 2
    line = next(x for x in status.stdout.splitlines() if x.startswith("offsite:"))
    assert "FAILED" in line and "WARN" in line, status.stdout


def test_offsite_config_is_checked_when_loaded(tmp_path):
    from crdsops.config.loader import load_config
    from crdsops.errors import CrdsOpsError

    identity, public = age_key(tmp_path / "k")
    secret = next(x for x in identity.read_text().splitlines() if x.startswith("AGE-SECRET-KEY-"))
    cases = [
        ({"remote": "r:x", "recipients": [secret]}, "PRIVATE key"),
        ({"remote": "r:x", "recipients": []}, "recipients is empty"),
        ({"remote": "r:x", "recipients": ["age1nope"]}, "expected an age public key"),
        ({"remote": "/just/a/path", "recipients": [public]}, "REMOTE:PATH"),
    ]
    for section, expected in cases:
        configs = make_configs(tmp_path / expected.replace(" ", "-"), {("hst", "django"): {
            "backups": {"offsite": section}}})
        with pytest.raises(CrdsOpsError, match=expected) as caught:
            load_config("hst", "django", configs)
        assert secret not in str(caught.value)
    configs = make_configs(tmp_path / "ok", {("hst", "django"): {
        "backups": {"offsite": {"remote": "r:x", "recipients": [public]}}}})
    assert load_config("hst", "django", configs).backups.offsite.recipients == (public,)
