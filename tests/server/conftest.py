"""Fixtures for tests that run the Django server (server/) as real processes."""

import pytest
from serverproc import RunningServer


@pytest.fixture(params=["hst", "jwst"])
def running_server(request, tmp_path):
    server = RunningServer(tmp_path / "server", request.param)
    server.where.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["hst", "jwst"])
def demo_server(request, tmp_path_factory):
    """One seeded server per observatory for a module whose tests only read from it."""
    server = RunningServer(tmp_path_factory.mktemp(f"{request.param}-server"), request.param)
    try:
        server.start()
        yield server
    finally:
        server.stop()
