"""No operation refuses a client: hst dev (Apache/mod_wsgi + MariaDB) under the real client's load (tests/clientload.py).

One server for the module, installed once; each test runs one operation with the load from a
second before it to a second after. The crds client does not retry: a refused or reset request
is a failed pipeline job.
"""

from __future__ import annotations

import pytest
from clientload import under_load
from mariadb import root_sql
from vmkinds import requires_vm_services, running_dev

pytestmark = requires_vm_services


@pytest.fixture(scope="module")
def served(vm):
    """hst dev installed, seeded and running; its account may stage a restore's database."""
    vm.account.grant_staging()
    try:
        with running_dev(vm):
            yield vm
    finally:
        vm.account.drop_staging()


def url(served) -> str:
    return served.config("hst", "dev").local_url


def catalog(served) -> list[str]:
    return root_sql(f"SELECT name, sha1sum, state FROM `{served.account.database}`.catalog_catalogfile "
                    "ORDER BY name;").splitlines()


def test_backup_refuses_no_client(served):
    shared = served.config("hst", "dev").backups.shared_dir / "hst.dev"
    before = (shared / "manifest.json").stat().st_mtime_ns if (shared / "manifest.json").exists() else None

    _, load = under_load(url(served), "hst", lambda: served.inv("backup"))

    assert (shared / "manifest.json").stat().st_mtime_ns != before, "no new shared latest"
    assert load.failed == 0, load.describe()
    assert load.longest_gap <= 2, load.describe()


def test_restore_refuses_no_client(served):
    served.inv("backup")
    backed_up = catalog(served)
    root_sql(f"DELETE FROM `{served.account.database}`.catalog_catalogfile WHERE name LIKE '%.fits' LIMIT 1;")
    assert catalog(served) != backed_up

    _, load = under_load(url(served), "hst", lambda: served.inv("restore", "--yes"))

    assert catalog(served) == backed_up, "the deleted row is not back"
    assert load.failed == 0, load.describe()
    assert load.longest_gap <= 2, load.describe()


# `inv rerun` under load: tests/vm/test_vm_rerun.py (graceful reload, same Apache parent)
