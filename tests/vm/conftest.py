"""Fixtures for the VM kinds: a throwaway MariaDB account and hst dev under Apache."""

import secrets
import shutil

import pytest
from support import make_configs
from vmkinds import SKIP_REASON, Account, vm_ops, vm_overrides, web_checkout, web_dir


@pytest.fixture(scope="session")
def web_checkout_served():
    """The checkout Apache's user serves (a readable copy when this one is not); removed at the end."""
    web = web_checkout()
    yield web
    if web.copied:
        shutil.rmtree(web.root, ignore_errors=True)


@pytest.fixture(scope="module")
def vm_account(web_checkout_served):
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    account = Account(secrets.token_hex(4))
    account.create()
    try:
        yield account
    finally:
        account.drop()


@pytest.fixture(scope="module")
def vm(vm_account):
    """hst dev set up for MySQL + Apache under a temporary root: an Ops, not installed yet."""
    where = web_dir("crdsops-vm-")
    option_file = vm_account.write_option_file(where / "hst-dev.my.cnf")
    configs = make_configs(where, {("hst", "dev"): vm_overrides(where, vm_account, option_file)})
    ops = vm_ops(where, configs)
    ops.account = vm_account
    ops.option_file = option_file
    try:
        yield ops
    finally:
        ops.inv("stop", check=False)
        cfg = ops.config("hst", "dev")
        from crdsops.runtime.backends.modwsgi import ModWsgiBackend

        ModWsgiBackend().sweep(cfg)
        shutil.rmtree(where, ignore_errors=True)
