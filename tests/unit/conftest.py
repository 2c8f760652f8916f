"""Fixtures shared by the unit tests."""
from __future__ import annotations

import ctypes
import os

import pytest


def _set_comm(name: bytes) -> None:
    ctypes.CDLL(None).prctl(15, name, 0, 0, 0)  # PR_SET_NAME (this thread: pytest's main one)


@pytest.fixture
def login_parent():
    """This test process stands in for the root sshd above an SSH command: the lock holders the
    node scripts verify (nodestate.started_by_login) must hang under a ROOT sshd/sudo that is not
    pid 1. We are root here (CI and the dev machines run the suite as root); a non-root run fails
    loudly rather than skipping the check."""
    assert os.getuid() == 0, "these tests stand in for sshd and need root"
    with open("/proc/self/comm", "rb") as f:
        old = f.read().strip()
    _set_comm(b"sshd")
    try:
        yield
    finally:
        _set_comm(old)
