"""The Python API (sfcluster.api), without a cluster: its errors carry the CLI's exit codes (an
invalid inventory 78 with YAML path and line, a refused `up` 77, an unreachable `down` 69), its
results are typed (runs, fetch against a node script run here, status, run), and the CLI's
commands are a layer over it: each calls the API and renders what it returns."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import sfcluster
from sfcluster import api, lifecycle
from sfcluster.lifecycle import bringup, preflight, teardown
from sfcluster.cli.main import cli
from sfcluster.doctor import Report, Status
from sfcluster.errors import InventoryError, PrivilegeError, SfclusterError, UnavailableError
from sfcluster.exitcodes import Exit
from sfcluster.inventory import parse_inventory
from sfcluster.remote.group import GroupResult
from sfcluster.run import driver, history
from sfcluster.run.fetch import Fetched

from tests.unit.test_run_history import INVENTORY, RUN_ID, HeadRunner, head_run, record
from tests.unit.test_upplan import NODES, Untouchable, cluster_for, facts_for


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(d))
    return d


@pytest.fixture
def inv(tmp_path) -> Path:
    p = tmp_path / "inv.yaml"
    p.write_text(INVENTORY)
    return p


def no_lock(*a, **kw):  # noqa: ANN002, ANN003 - the cluster lock's stand-in: these nodes run nothing
    return contextlib.nullcontext()


# -- the package's export ------------------------------------------------------------------------
def test_sfcluster_cluster_is_the_api_and_import_sfcluster_stays_light():
    assert sfcluster.Cluster is api.Cluster
    with pytest.raises(AttributeError):
        sfcluster.NoSuchThing  # noqa: B018
    p = subprocess.run([sys.executable, "-c", "import sys, sfcluster; from sfcluster import runtime; "
                        "print(sorted(m for m in sys.modules if m.startswith('sfcluster')))"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "['sfcluster', 'sfcluster.runtime']", p.stdout + p.stderr


# -- errors carry their exit code ---------------------------------------------------------------
def test_an_invalid_inventory_raises_78_with_its_yaml_path_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: demo\nnodes:\n  a: {host: 10.0.0.1, ssh: {port: twenty-two}}\n  b: {host: 10.0.0.2}\n")
    with pytest.raises(InventoryError) as ei:
        api.Cluster.load(bad)
    e = ei.value
    assert e.exit_code == Exit.CONFIG == 78
    assert [(p.path, p.line) for p in e.problems] == [("nodes.a.ssh.port", 3)], e.problems
    assert str(bad) in e.message


def test_a_party_the_inventory_lacks_raises_78_before_any_connection(inv):
    with pytest.raises(InventoryError) as ei:
        api.Cluster.load(inv, parties=["mallory"])
    assert ei.value.exit_code == 78 and "no party 'mallory'" in ei.value.message


def test_every_error_class_carries_an_exit_code_of_the_table():
    # every module with an error class is imported by now (sfcluster.cli.main imports them all)
    def every(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from every(sub)
    classes = list(every(SfclusterError))
    assert len(classes) >= 15, classes
    for cls in [SfclusterError, *classes]:
        assert isinstance(cls.exit_code, int) and cls.exit_code in set(Exit), cls


def test_up_refused_by_its_plan_raises_77_and_touches_no_node(state, monkeypatch):
    c = cluster_for("open")
    monkeypatch.setattr(bringup, "cluster_lock", no_lock)
    monkeypatch.setattr(preflight, "gather_all",
                        lambda *a, **kw: GroupResult(results=facts_for(c, {"carol": {"sudo": "password"}})))
    cluster = api.Cluster(c, runners={n: Untouchable(n) for n in NODES})
    with pytest.raises(PrivilegeError) as ei:
        cluster.up(skip_check=True)
    assert ei.value.exit_code == Exit.NO_PRIVILEGE and "[carol]" in ei.value.message


def test_down_with_a_node_out_of_reach_raises_69_and_stops_nothing(state, monkeypatch):
    c = cluster_for("open")
    monkeypatch.setattr(teardown, "cluster_lock", no_lock)
    monkeypatch.setattr(teardown, "gather_all", lambda *a, **kw: GroupResult(
        results=facts_for(c, {}), errors={"bob": UnavailableError("[bob] connection refused")}))
    with pytest.raises(UnavailableError) as ei:
        api.Cluster(c, runners={n: Untouchable(n) for n in NODES}).down()
    assert ei.value.exit_code == Exit.UNAVAILABLE and "nothing was stopped" in ei.value.message


def test_run_id_is_for_production_mode_only(inv):
    with pytest.raises(SfclusterError) as ei:
        api.Cluster.load(inv).run(inv, run_id=RUN_ID)
    assert ei.value.exit_code == Exit.FAILURE and "--run-id is for production mode" in ei.value.message


# -- typed results ------------------------------------------------------------------------------
def test_runs_lists_the_history_newest_first_as_run_records(state, inv):
    cluster = api.Cluster.load(inv)
    assert cluster.runs() == []
    history.save(record("20261130-000000-000001", exit_code=0))
    history.save(record(RUN_ID, exit_code=3, args=["--epochs", "1"]))
    runs = cluster.runs()
    assert [type(r) for r in runs] == [history.RunRecord] * 2
    assert [(r.run_id, r.exit_code) for r in runs] == [(RUN_ID, 3), ("20261130-000000-000001", 0)]
    assert [r.run_id for r in cluster.runs(last=1)] == [RUN_ID]
    assert cluster.history_dir == state / "demo" / "runs"


def test_fetch_brings_a_run_home_and_copies_it_to_dest(state, tmp_path):
    rd = head_run(tmp_path / "home")
    (rd / "output" / "metrics.json").write_text('{"auc": 0.9}')
    history.save(record(RUN_ID, detached=True, started=1.0))
    runner = HeadRunner(tmp_path / "home")
    cluster = api.Cluster(parse_inventory(INVENTORY), runners={"a": runner, "b": runner})
    notes = []
    got = cluster.fetch(RUN_ID, tmp_path / "results", note=notes.append)
    assert isinstance(got, api.FetchResult) and isinstance(got.fetched, Fetched)
    home = state / "demo" / "runs" / RUN_ID
    assert (got.run_id, got.home, got.output_dir, got.log) == (RUN_ID, home, home / "output", home / "driver.log")
    assert got.record.exit_code == 0 and got.record.fetched and got.record.outputs["files"] == 1
    assert got.dest == str((tmp_path / "results").resolve())
    assert json.loads((tmp_path / "results" / "metrics.json").read_text()) == {"auc": 0.9}
    assert isinstance(got.cleaned, dict)
    assert list(got.to_json()) == ["run_id", "home", "output_dir", "dest", "log", "outputs", "run", "cleaned"]
    assert history.load("demo", RUN_ID).exit_code == 0  # the history has it too


def test_fetch_refuses_a_bad_run_id_before_any_connection(state):
    cluster = api.Cluster(parse_inventory(INVENTORY), runners={"a": Untouchable("a"), "b": Untouchable("b")})
    with pytest.raises(SfclusterError) as ei:
        cluster.fetch("../../etc")
    assert ei.value.exit_code == Exit.FAILURE and "not a run id" in ei.value.message
    assert not state.exists()


@pytest.mark.parametrize("health, code", [("healthy", 0), ("degraded", 71), ("down", 69)])
def test_status_is_typed_with_the_clis_exit_code(inv, monkeypatch, health, code):
    found = {"cluster": "demo", "health": health, "nodes": [], "drivers": [], "lock": {"held": False},
             "problems": []}
    monkeypatch.setattr(lifecycle, "status", lambda c, n: found)
    st = api.Cluster.load(inv, runners={}).status()
    assert st.health is api.Health(health) and st.exit_code == code and st.to_json() is found
    assert (st.nodes, st.drivers, st.lock, st.problems, st.production) == ([], [], {"held": False}, [], False)


def test_run_names_the_run_returns_its_record_and_writes_to_this_processs_streams(state, inv, monkeypatch, capfd):
    def fake_run(cluster, nodes, opts, out, err, note):
        assert history.check_run_id(opts.run_id) and nodes.runners == {}
        history.save(record(opts.run_id, exit_code=3))
        out(b"epoch 1\x1b[2J\n")
        err(b"warn\n")
        note("run ended")
        return 3
    monkeypatch.setattr(driver, "run", fake_run)
    got = api.Cluster.load(inv, runners={}).run(inv, ["--epochs", "1"])
    assert isinstance(got, api.RunResult) and got.exit_code == 3 and not got.ok and not got.detached
    assert got.record is not None and got.record.run_id == got.run_id and got.record.exit_code == 3
    assert got.output_dir == state / "demo" / "runs" / got.run_id / "output"
    out, err = capfd.readouterr()
    assert out == "epoch 1\\x1b[2J\n"  # through termsafe's filter, as the CLI's
    assert err == "warn\nsfcluster: run ended\n"


# -- the CLI is a layer over the API -------------------------------------------------------------
def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_status_up_down_check_runs_fetch_and_run_of_the_cli_call_the_api(state, inv, monkeypatch):
    calls = []

    def fake(name, result):
        def method(self, *a, **kw):
            calls.append((name, a, kw))
            return result
        monkeypatch.setattr(api.Cluster, name, method)
    fake("status", api.StatusResult(api.Health.DEGRADED, {"cluster": "demo", "health": "degraded", "nodes": [],
                                                           "drivers": [], "lock": {}, "problems": []}))
    r = invoke("status", "-i", str(inv), "--json")
    assert r.exit_code == 71 and json.loads(r.stdout)["health"] == "degraded", r.output

    done = lifecycle.UpResult(actions={"a": ["ray head started"]})
    fake("up", api.UpResult("demo", "simulation", done, "10.0.0.1:6379", {"parties": {}}))
    r = invoke("up", "-i", str(inv), "--json", "--wait", "--wait-timeout", "7", "--rotate-certs")
    assert r.exit_code == 0, r.output
    assert list(json.loads(r.stdout)) == ["ok", "exit_code", "cluster", "mode", "changed", "actions", "parties",
                                          "ray_address", "config"]
    assert calls[-1][2]["lock_wait"] == 7 and calls[-1][2]["rotate_certs"] is True

    fake("down", lifecycle.DownResult(errors={"b": "stop failed"}))
    r = invoke("down", "-i", str(inv), "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["problems"][0]["path"] == "b", r.output

    report = Report()
    report.add("a", "ports_free", Status.FAIL, "port 6379 is in use")
    fake("check", report)
    r = invoke("check", "-i", str(inv), "--json", "--no-reach")
    assert r.exit_code == 65 and calls[-1][2] == {"reach": False, "script": None, "script_args": ()}, r.output

    fake("runs", [record(RUN_ID, exit_code=0)])
    r = invoke("runs", "-i", str(inv), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["runs"][0]["run_id"] == RUN_ID, r.output

    home = history.make_home("demo", RUN_ID)
    fake("fetch", api.FetchResult(Fetched(record(RUN_ID), home, {"files": 0, "bytes": 0}), None, {}))
    r = invoke("fetch", "-i", str(inv), RUN_ID)
    assert r.exit_code == 0 and f"outputs of run {RUN_ID}" in r.stderr and calls[-1][1] == (RUN_ID, None), r.output

    fake("run", api.RunResult(RUN_ID, 5, False, home, None))
    r = invoke("run", "-i", str(inv), "--wait", str(inv), "--", "x")
    assert r.exit_code == 5 and calls[-1][1] == (str(inv), ("x",)), r.output
    assert calls[-1][2]["lock_wait"] > 0
    assert [c[0] for c in calls] == ["status", "up", "down", "check", "runs", "fetch", "run"]


def test_an_api_error_is_the_clis_exit_code_and_json(inv, monkeypatch):
    def refused(self, **kw):
        raise UnavailableError("cannot reach b; nothing was stopped anywhere", "fix SSH to those nodes")
    monkeypatch.setattr(api.Cluster, "down", refused)
    r = invoke("down", "-i", str(inv), "--json")
    got = json.loads(r.stdout)
    assert r.exit_code == 69 == got["exit_code"] and got["fix"] == "fix SSH to those nodes", r.output
