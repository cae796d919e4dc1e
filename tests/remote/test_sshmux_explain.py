"""What OpenSSH says when the mirror's master cannot connect, as the one line paramiko's errors get."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdsops.remote.ssh import Target
from crdsops.remote.sshmux import explain

TARGET = Target(host="10.0.0.5", port=2222, user="crds", known_hosts=Path("/etc/crdsops/known_hosts"))

CASES = [
    ("No ED25519 host key is known for [10.0.0.5]:2222 and you have requested strict checking.\n"
     "Host key verification failed.\n",
     "host key of 10.0.0.5:2222 is unknown (not in /etc/crdsops/known_hosts); refusing. Check its fingerprint "
     "out of band, then add it: `ssh-keyscan -p 2222 10.0.0.5 >> /etc/crdsops/known_hosts`"),
    ("@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
     "The fingerprint for the ED25519 key sent by the remote host is\nSHA256:abcDEF/12+x.\n"
     "Host key verification failed.\n",
     "host key of 10.0.0.5:2222 CHANGED: it offered SHA256:abcDEF/12+x, /etc/crdsops/known_hosts records another; "
     "refusing. If the host was rebuilt, check the new key out of band, then "
     "`ssh-keygen -R '[10.0.0.5]:2222' -f /etc/crdsops/known_hosts` and add the new one"),
    ("crds@10.0.0.5: Permission denied (publickey).\n",
     "10.0.0.5:2222 refused our key for user crds (crds@10.0.0.5: Permission denied (publickey).); "
     "check ssh.user and ssh.key"),
    ("ssh: connect to host 10.0.0.5 port 2222: Connection refused\n",
     "cannot reach 10.0.0.5:2222 (Connection refused); is the host up and sshd listening?"),
    ("ssh: Could not resolve hostname 10.0.0.5: Name or service not known\n",
     "cannot resolve host 10.0.0.5 (Name or service not known); check the host name"),
    ("", "SSH to 10.0.0.5:2222 failed (no reason given)"),
]


@pytest.mark.parametrize("stderr, line", CASES)
def test_openssh_failures_read_as_one_line(stderr, line):
    assert explain(stderr, TARGET) == line
