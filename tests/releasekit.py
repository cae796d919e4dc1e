"""A git repository of this checkout with the commits an upgrade test needs, made by the test.

    base         this checkout's files as they are (tracked and new), committed
    good         get_server_info says max_headers_per_rpc 501 (the base says 500)
    migrated     good + an additive migration (a nullable column on catalog_catalogfile)
    destructive  migrated + a migration that drops that column again
    broken       good + a server whose URLs do not import
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from support import copy_checkout

MODELS = "server/crds_server/catalog/models.py"
MIGRATIONS = "server/crds_server/catalog/migrations"
ADD_NOTE = '''from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.AddField("catalogfile", "note", models.CharField(max_length=64, null=True))]
'''
DROP_NOTE = '''from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_catalogfile_note")]
    operations = [migrations.RemoveField("catalogfile", "note")]
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=crdsops tests", "-c", "user.email=tests@localhost",
                           *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, message: str, tag: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


def edit(repo: Path, path: str, old: str, new: str) -> None:
    file = repo / path
    text = file.read_text()
    assert old in text, f"{path} no longer holds {old!r}: update tests/releasekit.py"
    file.write_text(text.replace(old, new, 1))


def make_repo(where: Path) -> Path:
    """The repository (readable by all: Apache's user serves releases exported from it)."""
    repo = copy_checkout(Path(where) / "repo")
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "base: the checkout under test", "base")
    edit(repo, "server/crds_server/catalog/queries.py", '"max_headers_per_rpc": 500,', '"max_headers_per_rpc": 501,')
    commit(repo, "serve 501 headers per rpc", "good")
    edit(repo, MODELS, '    description = models.CharField(max_length=255, blank=True, default="")\n',
         '    description = models.CharField(max_length=255, blank=True, default="")\n'
         '    note = models.CharField(max_length=64, null=True)\n')
    (repo / MIGRATIONS / "0002_catalogfile_note.py").write_text(ADD_NOTE)
    commit(repo, "an additive migration: catalogfile.note", "migrated")
    edit(repo, MODELS, '    note = models.CharField(max_length=64, null=True)\n', "")
    (repo / MIGRATIONS / "0003_remove_catalogfile_note.py").write_text(DROP_NOTE)
    commit(repo, "a destructive migration: drop catalogfile.note", "destructive")
    git(repo, "checkout", "-q", "good")
    edit(repo, "server/crds_server/urls.py", "urlpatterns", "raise ImportError('broken on purpose')\nurlpatterns")
    commit(repo, "a server whose URLs do not import", "broken")
    git(repo, "checkout", "-q", "main")
    return repo


def release_config(repo: Path) -> dict:
    """The config keys that make a server's upgrades come from ``repo``."""
    return {"upgrade": {"repository": str(repo)}}
