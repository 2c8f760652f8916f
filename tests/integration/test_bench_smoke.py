"""Keeps the benchmark (bench/, issue #6) from rotting: the sfcluster and lower-bound contenders
bring up and tear down N=2 once each, through the bench's own code, on the bench's own nodes
(compose project sfcluster-benchsmoke, 172.30.79.0/24: neither the harness's nor the bench's).

Benchmarks are not tests: nothing here asserts a time. `ray up` never runs here: it turns
host-key checking off and can hang.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bench import contenders as C
from bench.measure import measure_down, measure_up
from bench.nodes import BenchNodes, BenchSpec, SshMasters
from bench.readiness import install as install_poller
from tests.harness import harness as H

N = 2


def _engine_available() -> bool:
    return shutil.which("docker") is not None and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Two bench nodes from the harness image (rsync and the filelock pin are for `ray up` only)."""
    if not _engine_available() and os.environ.get("CI") != "true" and os.environ.get("SFCLUSTER_REQUIRE_HARNESS") != "1":
        pytest.skip("no Docker engine (run `make test`, which starts one); in CI this is a failure")
    H.ensure_engine()
    H.ensure_image()
    build = tmp_path_factory.mktemp("bench")
    spec = BenchSpec(N, project="sfcluster-benchsmoke", subnet="172.30.79.0/24", image="sfcluster-node:latest", build=build)
    nodes, masters = BenchNodes(spec), SshMasters(spec)
    try:
        nodes.up()
        masters.open()
        install_poller(nodes)
        logs = build / "logs"
        logs.mkdir()
        yield nodes, masters, C.make(["sfcluster", "bare"], nodes, masters, logs), logs
    finally:
        masters.close()
        nodes.down()


def _tail(path: str) -> str:
    try:
        return open(path, errors="replace").read()[-3000:]
    except OSError:
        return ""


@pytest.mark.parametrize("key", ["sfcluster", "bare"])
def test_contender_reaches_n_nodes_and_leaves_nothing(bench, key):
    nodes, masters, contenders, logs = bench
    up = measure_up(contenders[key], masters, nodes, rep=0, give_up=90, logs=logs)
    assert up.ok, f"{key} up: {up.error}\n{_tail(up.log)}"
    assert up.ready_s is not None and up.timeline and up.timeline[-1][1] == N, up.timeline
    assert up.dirty_before == []

    down = measure_down(contenders[key], nodes, rep=0, logs=logs)
    assert down.ok, f"{key} down: {down.error}\n{_tail(down.log)}"
    assert down.leftovers == [], f"{key} down left Ray processes: {down.leftovers}"
    assert down.firewall_left == {}, f"{key} down left firewall rules: {down.firewall_left}"
    assert nodes.leftovers() == []
