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


def _env(state_dir):
    return ENV if state_dir is None else dict(ENV, SFCLUSTER_STATE_DIR=str(state_dir))


def sfc(*args, timeout=300, state_dir=None):
    """The CLI to its end; `state_dir`: another controller's state (an organisation of a federation)."""
    return subprocess.run([*SFC, *args], capture_output=True, text=True, timeout=timeout, env=_env(state_dir))


def start(*args, state_dir=None, stderr=subprocess.STDOUT):
    """The CLI in the background (output and, by default, stderr on .stdout)."""
    return subprocess.Popen([*SFC, *args], stdout=subprocess.PIPE, stderr=stderr, text=True, env=_env(state_dir))


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
