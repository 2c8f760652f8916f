"""A real sshd whose session is stuck (issue 17, item 5): the node accepts the connection and the
command, then its sshd session process stops (SIGSTOP), so nothing more comes back, no window
opens for input, no EOF. Every SSH operation must still end by its command's deadline, naming the
node (exit 69), not wait for ever. Unlike `docker pause`, the rest of the node (its listener, its
other sessions, TCP) keeps running: only this session is stuck."""
from __future__ import annotations

import json
import time

import pytest

from tests.integration.cli import sfc

NODE = "carol"
USER = "sfstuck"
# The forced command stops its own sshd session process (its parent), then idles: the exec request
# was answered, and from then on the session relays nothing either way.
STUCK = "/usr/local/bin/sfc-stuck-session"
CONF = "/etc/ssh/sshd_config.d/zz-stuck.conf"


@pytest.fixture(scope="module")
def stuck(harness, tmp_path_factory):
    harness.docker_exec(NODE, f"""set -e
id {USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {USER}
install -d -m 0700 -o {USER} -g {USER} /home/{USER}/.ssh
install -m 0600 -o {USER} -g {USER} /etc/sfcluster/authorized_keys /home/{USER}/.ssh/authorized_keys
printf '#!/bin/sh\\nkill -STOP $PPID\\nexec sleep 3600\\n' > {STUCK}
chmod 0755 {STUCK}
printf 'Match User {USER}\\n  ForceCommand {STUCK}\\n' > {CONF}
sshd -t
kill -HUP $(cat /run/sshd.pid)""")
    time.sleep(1)  # sshd re-executes itself with the new config
    d = tmp_path_factory.mktemp("stuck")
    inv = d / "inv.yaml"
    text = harness.inventory_text(cluster="stuck", firewall="check", ray_user=None, data=True)
    inv.write_text(text.replace("user: sfops\n      port: 2222", f"user: {USER}\n      port: 2222"))
    assert f"user: {USER}" in inv.read_text()
    yield {"inv": inv, "dir": d}
    harness.docker_exec(NODE, f"rm -f {CONF} && kill -HUP $(cat /run/sshd.pid); pkill -KILL -f 'sshd: {USER}'; "
                              f"pkill -KILL -u {USER}; true", check=False)


def test_status_ends_naming_the_node_whose_session_is_stuck(harness, stuck):
    t0 = time.monotonic()
    p = sfc("status", "-i", str(stuck["inv"]), "--json", timeout=180)
    took = time.monotonic() - t0
    assert p.returncode == 69, p.stdout[-2000:] + p.stderr[-2000:]
    assert NODE in p.stdout, p.stdout[-2000:]
    assert took < 90, f"status took {took:.0f} s against one stuck session"
    # the session really was stuck: its sshd process is stopped (state T)
    ps = harness.docker_exec(NODE, f"ps -eo stat,args | grep '[s]shd: {USER}' || true").stdout
    assert any(line.startswith("T") for line in ps.splitlines()), ps


def test_data_push_to_a_node_whose_session_is_stuck_ends_naming_it(harness, stuck):
    big = stuck["dir"] / "big.csv"
    with big.open("w") as f:  # 16 MiB: far beyond what the channel's window takes before it stops
        row = "p0," + ",".join("0.123456" for _ in range(30)) + "\n"
        for _ in range(16 * 1024 * 1024 // len(row) + 1):
            f.write(row)
    t0 = time.monotonic()
    p = sfc("data", "push", "-i", str(stuck["inv"]), NODE, "breast_cancer", str(big), "--json", timeout=400)
    took = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode == 69, out[-2000:]
    assert took < 180, f"data push took {took:.0f} s against a stuck session"
    got = json.loads(p.stdout)  # --json: one object on this outcome too
    assert got["exit_code"] == 69 and got["error"].startswith(f"[{NODE}]") and "silent" in got["error"], got
