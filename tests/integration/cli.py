"""Running the sfcluster CLI from the integration tests, as a user would (a subprocess), with the
controller state of the test session."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "scripts"
SFC = [sys.executable, "-m", "sfcluster.cli.main"]
STATE_DIR = "/tmp/sfc-test-state"  # the controller's state (CA, caches) for every test
ENV = dict(os.environ, SFCLUSTER_STATE_DIR=STATE_DIR)


def sfc(*args, timeout=300):
    return subprocess.run([*SFC, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def start(*args):
    return subprocess.Popen([*SFC, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)


def wait_for(proc, text, timeout=90):
    """Read proc's output until a line holds `text`; the lines read so far."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"never saw {text!r}:\n{''.join(lines)[-3000:]}")
