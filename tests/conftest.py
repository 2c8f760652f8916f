"""Shared fixtures. Integration tests (-m integration) run against the docker-compose harness.

In CI (CI=true) a missing Docker engine or harness is a failure, never a silent skip.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import harness as H


def _engine_available() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def harness():
    """The running harness: known_hosts and inventory written; torn down at the end, also on failure."""
    if not _engine_available() and os.environ.get("CI") != "true" and os.environ.get("SFCLUSTER_REQUIRE_HARNESS") != "1":
        pytest.skip("no Docker engine (run `make test`, which starts one); in CI this is a failure")
    H.up()
    try:
        yield H
    finally:
        if os.environ.get("SFCLUSTER_KEEP_HARNESS") != "1":
            H.down()


@pytest.fixture
def inventory(harness, tmp_path) -> Path:
    """Default 3-party harness inventory (firewall: check) in a private file."""
    return harness.write_inventory(tmp_path / "inventory.yaml", firewall="check")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
