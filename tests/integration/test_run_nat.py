"""`sfcluster run` where the network is not plain: an SPU address that is not bound on its node
(peers reach it through NAT), and a party node that is stopped mid-training."""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.integration.test_run import ROOT, lock_free, remote_left, sfc, start, wait_for

# alice and carol reach bob's "public" SPU address 172.30.77.99 through DNAT, as peers behind a
# NAT'ed public IP do; on bob itself 172.30.77.99 is not bound, so brpc must listen on 172.30.77.12.
NAT = "OUTPUT -d 172.30.77.99 -p tcp -j DNAT --to-destination 172.30.77.12"
TRAIN = str(ROOT / "templates" / "train_lr.py")


@pytest.fixture(scope="module")
def nat_cluster(harness, tmp_path_factory):
    inv = harness.write_inventory(tmp_path_factory.mktemp("nat") / "inv.yaml", firewall="open",
                                  extra_node={"bob": {"advertise": "172.30.77.99", "bind": "172.30.77.12"}})
    for peer in ("alice", "carol"):
        harness.docker_exec(peer, f"iptables -t nat -A {NAT}")
    # bob's certificate must now also name the address it advertises (its SAN): a changed address
    # is a new certificate, issued by `up --rotate-certs` (plain `up` refuses, naming bob's node.pem)
    p = sfc("up", "-i", str(inv), "--rotate-certs")
    try:
        assert p.returncode == 0, p.stdout + p.stderr
        yield inv
    finally:
        sfc("down", "-i", str(inv), "--force")
        for peer in ("alice", "carol"):
            harness.docker_exec(peer, f"iptables -t nat -D {NAT}", check=False)


def test_training_through_listen_address_when_advertised_address_is_not_local(harness, nat_cluster):
    cfg = sfc("config", "-i", str(nat_cluster), "--json").stdout
    assert '"address": "172.30.77.99:20101"' in cfg and '"listen_address": "172.30.77.12:20101"' in cfg
    assert harness.docker_exec("bob", "ip -4 addr | grep -c 172.30.77.99 || true").stdout.strip() == "0"
    p = sfc("run", "-i", str(nat_cluster), TRAIN, "--", "--synthetic")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    auc = float(next(l for l in p.stdout.splitlines() if l.startswith("RESULT")).split("auc=")[1].split()[0])
    assert auc >= 0.85
    # the peers' SPU links to bob really went through the DNAT'ed address
    hits = harness.docker_exec("alice", "iptables -t nat -L OUTPUT -v -n -x | grep 172.30.77.99").stdout.split()
    assert int(hits[0]) > 0, "no connection to bob's advertised address was made"


def test_party_node_stopped_mid_training_ends_the_run_naming_it(harness, nat_cluster):
    """docker stop bob during fit: the run ends with bob named, in bounded time, lock freed."""
    proc = start("run", "-i", str(nat_cluster), TRAIN, "--", "--synthetic")
    stopped = False
    try:
        wait_for(proc, "training SS-LR on SPU", timeout=120)
        deadline = time.monotonic() + 30
        while "SPURuntime" not in remote_left(harness, "bob") and time.monotonic() < deadline:
            time.sleep(0.3)
        subprocess.run(["docker", "stop", "-t", "1", harness.NODES["bob"].container], check=True, capture_output=True)
        stopped = True
        t0 = time.monotonic()
        out = proc.communicate(timeout=120)[0]
        took = time.monotonic() - t0
        assert proc.returncode != 0 and "RESULT" not in out
        assert "bob" in out and "down or cut off" in out, out[-3000:]
        assert took < 45, f"the run took {took:.0f} s to notice bob was gone"
        deadline = time.monotonic() + 20
        while not lock_free(harness) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert lock_free(harness)
        for n in ("alice", "carol"):
            assert remote_left(harness, n) == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        if stopped:
            subprocess.run(["docker", "start", harness.NODES["bob"].container], check=True, capture_output=True)
            harness.wait_ssh()
