"""What a long step shows (issue 19): on a terminal a spinner with the step and its elapsed time,
off a terminal (a pipe, CI) none of it; `--debug` on every command: each SSH connection and
remote command with its outcome, and an error's traceback. Nodes on closed loopback ports: each
command ends in a second, having tried for real."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from sfcluster.cli.main import cli

SFC = [sys.executable, "-m", "sfcluster.cli.main"]


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    (tmp_path / "known_hosts").write_text("")
    f = tmp_path / "inventory.yaml"
    f.write_text(f"cluster: pt\nknown_hosts: {tmp_path}/known_hosts\nfirewall: check\nnodes:\n"
                 "  alice: {host: 127.0.0.1, ssh: {port: 1}}\n  bob: {host: 127.0.0.2, ssh: {port: 1}}\n")
    return f


def env(tmp_path: Path) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    e["SFCLUSTER_STATE_DIR"] = str(tmp_path / "state")
    return e


def on_a_terminal(args, tmp_path: Path) -> bytes:
    """What a terminal receives from `sfcluster ARGS` (stdout and stderr on one pty)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([*SFC, *args], stdin=slave, stdout=slave, stderr=slave, env=env(tmp_path), close_fds=True)
    os.close(slave)
    out = b""
    while select.select([master], [], [], 60)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:  # the other side closed: the command ended
            break
        if not data:
            break
        out += data
    os.close(master)
    assert p.wait(timeout=60) == 65
    return out


def test_a_terminal_gets_a_spinner_a_pipe_gets_none(inv, tmp_path):
    tty = on_a_terminal(["check", "-i", str(inv)], tmp_path)
    assert b"\x1b[?25l" in tty and b"check: probing 2 node(s)" in tty  # the spinner (cursor hidden), then gone
    assert tty.rstrip().endswith(b"\x1b[0m") or b"problem(s) must be fixed" in tty
    piped = subprocess.run([*SFC, "check", "-i", str(inv)], capture_output=True, env=env(tmp_path), timeout=60)
    assert piped.returncode == 65 and b"problem(s) must be fixed" in piped.stdout
    assert b"probing" not in piped.stdout + piped.stderr and b"\x1b[" not in piped.stdout + piped.stderr


def test_debug_shows_each_connection_and_an_errors_traceback(inv, tmp_path):
    p = subprocess.run([*SFC, "logs", "-i", str(inv), "--debug"], capture_output=True, text=True, env=env(tmp_path),
                       timeout=60)
    assert p.returncode == 69, p.stderr
    assert "[alice] ssh " in p.stderr and "127.0.0.1:1" in p.stderr and "host keys from" in p.stderr
    assert "Traceback (most recent call last)" in p.stderr and "ConnectError" in p.stderr
    assert p.stderr.rstrip().splitlines()[-2].startswith("error: [alice] cannot reach")  # the message stays last
    quiet = subprocess.run([*SFC, "logs", "-i", str(inv)], capture_output=True, text=True, env=env(tmp_path), timeout=60)
    assert quiet.returncode == 69 and "debug" not in quiet.stderr and "Traceback" not in quiet.stderr


def test_every_command_has_debug_and_v_where_it_has_no_v_of_its_own():
    for name, cmd in cli.commands.items():
        for sub in getattr(cmd, "commands", {"": cmd}).values():
            opts = {o for p in sub.params for o in p.opts}
            assert "--debug" in opts and "-v" in opts, name
    run_v = [p for p in cli.commands["run"].params if "-v" in p.opts]
    assert [p.name for p in run_v] == ["verbose"]  # run's own -v: SecretFlow's logging on the terminal
