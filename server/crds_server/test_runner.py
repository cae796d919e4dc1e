"""Test runner that points the file cache and server files at scratch directories.

Tests may run with production settings on a real server; whatever a test forgets to
override, it must never write into the live cache or server files.
"""
import shutil
import tempfile

from django.test.runner import DiscoverRunner
from django.test.utils import override_settings


class IsolatedCacheRunner(DiscoverRunner):
    def setup_test_environment(self, **kwargs):
        super().setup_test_environment(**kwargs)
        self._scratch = tempfile.mkdtemp(prefix="crds_server_tests_")
        self._override = override_settings(
            CRDS_PATH=f"{self._scratch}/cache",
            CRDS_SERVER_FILES=f"{self._scratch}/server_files",
            CRDS_DBBACKUP_DIR=f"{self._scratch}/dbbackup",
        )
        self._override.enable()

    def teardown_test_environment(self, **kwargs):
        self._override.disable()
        shutil.rmtree(self._scratch, ignore_errors=True)
        super().teardown_test_environment(**kwargs)
