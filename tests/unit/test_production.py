"""Production mode's pure logic: the inventory's `mode`, its port plan (cross-silo + SPU, no Ray),
each party's generated config, `check`'s refusal of a simulation cluster on a SecretFlow without
simulation mode, and the runtime guard of a party's driver."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent
from types import SimpleNamespace

import pytest

from sfcluster import runtime
from sfcluster.config import CROSS_SILO_BACKEND, production_config, secretflow_config
from sfcluster.doctor.checks import Report, Status, _versions, release
from sfcluster.errors import InventoryError
from sfcluster.inventory import parse_inventory
from sfcluster.inventory.model import Mode
from sfcluster.inventory.ports import plan_ports, spu_clashes_with_ray_defaults

PROD = dedent("""
    cluster: fed
    mode: production
    tls: on
    nodes:
      alice: {host: 10.0.0.1}
      bob: {host: 10.0.0.2, cross_silo_port: 30000, keep_outputs: true}
      carol: {host: 10.0.0.3, advertise: 203.0.113.3, bind: 10.0.0.3}
""").lstrip()


def problems(text: str) -> str:
    with pytest.raises(InventoryError) as ei:
        parse_inventory(text, source="bad.yaml")
    return "\n".join(ei.value.problems)


def test_mode_defaults_to_simulation_and_reads_production():
    sim = parse_inventory(PROD.replace("mode: production\n", ""))
    assert sim.mode is Mode.SIMULATION and sim.mode.runs_ray
    c = parse_inventory(PROD)
    assert c.mode is Mode.PRODUCTION and not c.mode.runs_ray
    assert [n.cross_silo_port for n in c.nodes] == [20200, 30000, 20202]
    assert [n.keep_outputs for n in c.nodes] == [False, True, False]


def test_mode_and_keep_outputs_refusals_name_path_and_line():
    assert "mode (line 2): " in problems(PROD.replace("mode: production", "mode: federated"))
    assert "nodes.bob.keep_outputs (line 6): expected true or false, got 'yes please'" in problems(
        PROD.replace("keep_outputs: true", "keep_outputs: yes please"))


def test_cross_silo_ports_are_validated_like_spu_ports():
    # the default past 65535
    text = PROD.replace("tls: on\n", "tls: on\nports: {cross_silo_base: 65535}\n")
    assert "nodes.carol.cross_silo_port (line 8): default cross-silo port 65535+2 = 65537 is past 65535" in problems(text)
    # a cross-silo port on the SPU port of the same host
    two = PROD.replace("bob: {host: 10.0.0.2, cross_silo_port: 30000", "bob: {host: 10.0.0.1, cross_silo_port: 20100")
    assert "cross_silo_port" in problems(two) or "spu" in problems(two)


def test_production_plan_has_no_ray_ports_and_scopes_every_port_to_the_peers():
    c = parse_inventory(PROD)
    plan = plan_ports(c)
    assert {e.purpose for e in plan.entries} == {"cross_silo", "spu"}
    for e in plan.entries:
        assert set(e.reachers) == set(c.party_names) - {e.node}, e
    assert sorted((e.node, e.purpose, e.port) for e in plan.entries) == [
        ("alice", "cross_silo", 20200), ("alice", "spu", 20100), ("bob", "cross_silo", 30000), ("bob", "spu", 20101),
        ("carol", "cross_silo", 20202), ("carol", "spu", 20102)]
    # a simulation plan of the same file has Ray's ports and no cross-silo port
    sim = plan_ports(parse_inventory(PROD.replace("mode: production\n", "")))
    assert "cross_silo" not in {e.purpose for e in sim.entries} and "ray_gcs" in {e.purpose for e in sim.entries}


def test_spu_ports_inside_ray_ranges_are_no_clash_without_ray():
    text = PROD.replace("tls: on\n", "tls: on\nports: {spu_base: 10100}\n")
    assert spu_clashes_with_ray_defaults(parse_inventory(text)) == []
    assert spu_clashes_with_ray_defaults(parse_inventory(text.replace("mode: production\n", "")))


TLS = {"alice": "/home/a/.sfc/tls", "bob": "/home/b/.sfc/tls", "carol": "/home/c/.sfc/tls"}


def test_production_config_of_each_party_holds_only_its_own_secrets():
    c = parse_inventory(PROD)
    for party in c.party_names:
        cfg = production_config(c, party, "20261203-120000-abcdef", TLS)
        json.dumps(cfg)  # shipped as JSON
        assert cfg["mode"] == "production" and cfg["self_party"] == party
        assert cfg["job_name"] == "20261203-120000-abcdef"
        assert "ray_address" not in cfg and "temp_dir" not in cfg
        parties = cfg["cluster_config"]["parties"]
        assert cfg["cluster_config"]["self_party"] == party
        # every party's address is where its peers dial; only its own has a listen address
        assert [p for p, v in parties.items() if "listen_addr" in v] == [party]
        assert cfg["cross_silo"]["backend"] == CROSS_SILO_BACKEND == "brpc_link"
        assert cfg["cross_silo"]["tls_config"] == {"cert": f"{TLS[party]}/node.pem", "key": f"{TLS[party]}/node.key",
                                                   "ca_cert": f"{TLS[party]}/ca.pem"}
        # the SPU's cluster_def names every party, with certificate paths for this party only
        nodes = cfg["spu_cluster_def"]["nodes"]
        assert [n["party"] for n in nodes] == list(c.party_names)
        assert [n["party"] for n in nodes if "tls_opts" in n] == [party]
        others = json.dumps({k: v for k, v in cfg.items() if k != "cross_silo"})
        for other, d in TLS.items():
            if other != party:
                assert d not in others
    carol = production_config(c, "carol", "r", TLS)["cluster_config"]["parties"]
    assert carol["carol"] == {"address": "203.0.113.3:20202", "listen_addr": "10.0.0.3:20202"}
    assert carol["bob"] == {"address": "10.0.0.2:30000"}


def test_production_config_without_tls_has_no_tls_config():
    c = parse_inventory(PROD.replace("tls: on", "tls: off"))
    cfg = production_config(c, "alice", "r", TLS)
    assert cfg["cross_silo"]["tls_config"] is None
    assert all("tls_opts" not in n for n in cfg["spu_cluster_def"]["nodes"])


def test_simulation_config_says_its_mode():
    c = parse_inventory(PROD.replace("mode: production\n", ""))
    assert secretflow_config(c)["mode"] == "simulation"


def _report(versions):
    r = Report()
    r.facts = {n: SimpleNamespace(python="3.10.13", ray=ray, secretflow=sf) for n, (ray, sf) in versions.items()}
    return r


@pytest.mark.parametrize("v, want", [("1.10.0b1", (1, 10)), ("1.13.0b0", (1, 13)), ("2.0", (2, 0)), ("", ()),
                                     ("dev", ())])
def test_release(v, want):
    assert release(v) == want


def test_check_refuses_simulation_on_a_secretflow_without_it_naming_node_version_and_fix():
    sim = parse_inventory(PROD.replace("mode: production\n", "").replace("tls: on", "tls: off"))
    r = _report({"alice": ("2.9.3", "1.13.0b0"), "bob": ("2.9.3", "1.13.0b0"), "carol": ("2.9.3", "1.13.0b0")})
    _versions(sim, r)
    modes = [c for c in r.checks if c.name == "mode"]
    assert [c.node for c in modes] == ["alice", "bob", "carol"]
    assert all(c.status is Status.FAIL and "1.13.0b0" in c.detail and "mode: production" in c.fix for c in modes)
    # 1.10 runs simulation: no mode row
    r = _report({"alice": ("2.9.3", "1.10.0b1"), "bob": ("2.9.3", "1.10.0b1"), "carol": ("2.9.3", "1.10.0b1")})
    _versions(sim, r)
    assert not [c for c in r.checks if c.name == "mode"]
    assert all(c.status is Status.OK for c in r.checks)


def test_check_production_needs_no_ray():
    prod = parse_inventory(PROD)
    r = _report({"alice": (None, "1.13.0b0"), "bob": (None, "1.13.0b0"), "carol": (None, "1.13.0b0")})
    _versions(prod, r)
    assert [c.status for c in r.checks] == [Status.OK] * 3, r.checks
    # ... but a simulation cluster without Ray fails, naming it
    sim = parse_inventory(PROD.replace("mode: production\n", ""))
    r = _report({"alice": (None, "1.10.0b1"), "bob": ("2.9.3", "1.10.0b1"), "carol": ("2.9.3", "1.10.0b1")})
    _versions(sim, r)
    assert any(c.node == "alice" and c.status is Status.FAIL and "ray not installed" in c.detail for c in r.checks)


def test_runtime_guard_of_a_party_driver(tmp_path, monkeypatch):
    """A party's driver starts only where its own listen address is local, and only with the
    run's token; the refusal says how production mode runs."""
    c = parse_inventory(PROD.replace("10.0.0.1", "127.0.0.1"))
    for party, local in (("alice", True), ("bob", False)):
        cfg = production_config(c, party, "r1", TLS)
        path = tmp_path / f"{party}.json"
        path.write_text(json.dumps(cfg))
        lock = tmp_path / "lock.json"
        lock.write_text(json.dumps({"token": "t0k", "run_id": "r1", "pid": os.getpid()}))
        monkeypatch.setenv(runtime.ENV_CONFIG, str(path))
        monkeypatch.setenv(runtime.ENV_TOKEN, "t0k")
        monkeypatch.setenv(runtime.ENV_LOCK, str(lock))
        if local:
            assert runtime.guard()["self_party"] == "alice"
        else:
            with pytest.raises(runtime.GuardError) as ei:
                runtime.guard()
            assert "not party bob's node (10.0.0.2)" in str(ei.value)
            assert "ONE driver per party" in str(ei.value)
    monkeypatch.delenv(runtime.ENV_TOKEN)
    with pytest.raises(runtime.GuardError):
        runtime.guard()


LAUNCH = str(Path(__file__).resolve().parents[2] / "src" / "sfcluster" / "launch.py")
# a stand-in for SecretFlow's cross-silo layer after sf.init: a global context, and a thread that is
# not a daemon and waits for a peer that never answers (what keeps a failed party's driver alive)
FED_UP = """
import sys, threading, types
gc = types.ModuleType("secretflow.distributed.fed.global_context")
gc.get_global_context = lambda assert_none=True: object()
sys.modules[gc.__name__] = gc
threading.Thread(target=threading.Event().wait).start()
"""


@pytest.mark.parametrize("body, code, err", [
    ("import sys; sys.exit(3)", 3, ""),
    ("raise ValueError('boom')", 1, "ValueError: boom"),
    ("import sys; sys.exit('bad input')", 1, "bad input"),
    ("print('fine')", 0, ""),
])
def test_launch_gives_the_scripts_exit_code(tmp_path, body, code, err):
    script = tmp_path / "s.py"
    script.write_text(body + "\n")
    p = subprocess.run([sys.executable, LAUNCH, str(script), "a1"], capture_output=True, text=True, timeout=30)
    assert p.returncode == code and err in p.stderr, (p.returncode, p.stderr)


@pytest.mark.parametrize("body, code", [("import sys; sys.exit(3)", 3), ("raise KeyError('x')", 1)])
def test_a_failed_driver_exits_although_secretflows_threads_wait_for_peers(tmp_path, body, code):
    script = tmp_path / "s.py"
    script.write_text(FED_UP + body + "\n")
    # without the launcher the interpreter waits for the thread forever
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, str(script)], capture_output=True, timeout=3)
    p = subprocess.run([sys.executable, LAUNCH, str(script)], capture_output=True, text=True, timeout=30)
    assert p.returncode == code, p.stderr


def test_launch_leaves_with_os_exit_after_the_scripts_atexit_and_unclosed_files(tmp_path):
    # os._exit skips the interpreter's own teardown (SecretFlow's link handshake, C++ destructors):
    # what a script expects of a normal exit still happens, and a thread left running does not hold it
    script = tmp_path / "s.py"
    script.write_text(dedent(f"""
        import atexit, threading, time
        atexit.register(lambda: open({str(tmp_path / 'atexit')!r}, 'w').write('ran'))
        class Box: pass
        b = Box(); b.self = b                      # a cycle: only the collector frees it
        b.f = open({str(tmp_path / 'out')!r}, 'w'); b.f.write('all of it')
        threading.Thread(target=time.sleep, args=(600,)).start()
        print('done')
    """))
    p = subprocess.run([sys.executable, LAUNCH, str(script)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "done" in p.stdout, p.stderr
    assert (tmp_path / "atexit").read_text() == "ran" and (tmp_path / "out").read_text() == "all of it"


def test_launch_runs_the_script_as_main_with_its_args_and_dir(tmp_path):
    (tmp_path / "helper_mod.py").write_text("X = 7\n")
    script = tmp_path / "s.py"
    script.write_text("import sys, helper_mod\nassert __name__ == '__main__'\nprint(sys.argv[1:], helper_mod.X)\n")
    p = subprocess.run([sys.executable, LAUNCH, str(script), "--epochs", "3"], capture_output=True, text=True,
                       timeout=30, cwd="/")
    assert p.returncode == 0 and "['--epochs', '3'] 7" in p.stdout, p.stderr


GUARDED = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from sfcluster import runtime
runtime.guard()
import secretflow as sf          # imported after guard(): patched through the import hook
try:
    eval(sys.argv[2])
    print("CALLED", sf.calls, "GATES", json.dumps(sys.modules["ray"].gates if "ray" in sys.modules else None))
except runtime.GuardError as e:
    print("REFUSED", e)
"""


FAKE_RAY = """
import types
gates = []
def remote(**kw):
    def wrap(cls):
        return types.SimpleNamespace(options=lambda **o: types.SimpleNamespace(
            remote=lambda *a: (gates.append({"class": cls.__name__, "actor": kw, "options": o, "args": list(a)}),
                               types.SimpleNamespace(where=types.SimpleNamespace(remote=lambda: a[0])))[1]))
    return wrap
def get(x, timeout=None):
    return x
def kill(h):
    pass
"""


def _fake_ray(root: Path) -> None:
    """A `ray` that records the actors runtime.py starts (the SPU gates), as the node's real Ray would run them."""
    (root / "ray").mkdir(exist_ok=True)
    (root / "ray" / "__init__.py").write_text(FAKE_RAY)


@pytest.mark.parametrize("mode, call, refused, says", [
    ("production", "sf.init(['alice', 'bob'], address='local')", True, "PRODUCTION mode"),
    ("production", "sf.init(parties=['alice', 'bob'], address='local')", True, "simulation form"),
    ("production", "sf.init(address='local', cluster_config={}, ray_mode=False)", True, "runtime.init()"),
    ("simulation", "sf.init(address='local', cluster_config={'parties': {}}, ray_mode=False)", True, "SIMULATION mode"),
    ("simulation", "sf.init(parties=['alice', 'bob'], address='10.0.0.1:6379')", False, "CALLED"),
])
def test_the_guard_stops_sf_init_in_the_other_modes_form(tmp_path, mode, call, refused, says):
    fake = tmp_path / "fake"
    (fake / "secretflow").mkdir(parents=True)
    (fake / "secretflow" / "__init__.py").write_text("calls = []\ndef init(*a, **k):\n    calls.append(k)\n")
    _fake_ray(fake)
    text = PROD if mode == "production" else PROD.replace("mode: production\n", "")
    c = parse_inventory(text.replace("10.0.0.1", "127.0.0.1"))
    cfg = production_config(c, "alice", "r1", TLS) if mode == "production" else secretflow_config(c, TLS)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "lock.json").write_text(json.dumps({"token": "t", "pid": os.getpid()}))
    (tmp_path / "g.py").write_text(GUARDED)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = dict(os.environ, PYTHONPATH=src, **{runtime.ENV_CONFIG: str(tmp_path / "cfg.json"), runtime.ENV_TOKEN: "t",
                                               runtime.ENV_LOCK: str(tmp_path / "lock.json")})
    p = subprocess.run([sys.executable, str(tmp_path / "g.py"), str(fake), call], capture_output=True, text=True,
                       env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("REFUSED" if refused else "CALLED") and says in p.stdout, p.stdout
    if not refused:  # simulation, tls on: a TLS-only gate per party on its SPU port, right after sf.init
        gates = json.loads(p.stdout.split("GATES ", 1)[1])
        assert [(g["class"], g["actor"], g["options"], g["args"][:3]) for g in gates] == [
            ("SpuDoor", {"num_cpus": 0}, {"resources": {party: 0.001}}, [party, host, port])
            # carol's gate holds her bind address (NAT), not the advertised one, as her SPU would
            for party, host, port in (("alice", "127.0.0.1", 20100), ("bob", "10.0.0.2", 20101),
                                      ("carol", "10.0.0.3", 20102))], gates
        assert {tuple(g["args"][3:]) for g in gates} == {(c.temp_root, "spu.sock")}


def test_provision_without_ray_only_in_production():
    prov = "provision: {package: secretflow-lite, version: 1.13.0b0}\n"
    c = parse_inventory(PROD.replace("tls: on\n", "tls: on\n" + prov))
    assert c.provision.requirements == ("secretflow-lite==1.13.0b0",) and c.provision.ray_version is None
    from sfcluster.provision import requested
    assert requested(c.provision) == {"secretflow-lite": "1.13.0b0"}
    assert "provision.ray_version (line 1): missing" in problems(prov + PROD.replace("mode: production\n", ""))
    # a production cluster on 1.13 without Ray: versions OK against those pins
    r = _report({"alice": (None, "1.13.0b0"), "bob": (None, "1.13.0b0"), "carol": (None, "1.13.0b0")})
    _versions(c, r)
    assert [x.status for x in r.checks] == [Status.OK] * 3, r.checks


FAKE_SF = {
    "secretflow/__init__.py": (
        "calls = []\n"
        "def init(address=None, ray_mode=True, cluster_config=None, job_name=None, cross_silo_comm_backend='grpc',\n"
        "         cross_silo_comm_options=None, tls_config=None, omp_num_threads=None):\n"
        "    calls.append(dict(locals()))\n"
        "class PYU:\n"
        "    def __init__(self, party): self.party = party\n"),
    "secretflow/device/__init__.py": "",
    "secretflow/device/driver.py": "barriers = []\ndef barrier():\n    barriers.append(1)\n",
    "secretflow/distributed/__init__.py": "",
    "secretflow/distributed/fed/__init__.py": "",
    "secretflow/distributed/fed/proxy/__init__.py": "",
    "secretflow/distributed/fed/proxy/brpc_link/__init__.py": "",
    "secretflow/distributed/fed/proxy/brpc_link/brpc_link.py": (
        "class Desc:\n    enable_ssl = False\n"
        "class BrpcLinkProxy:\n"
        "    def __init__(self, tls_config=None):\n        self._tls_config, self._desc = tls_config, Desc()\n"
        "    def stop(self):\n        pass\n"),
}
INIT_AS_A_PARTY = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from sfcluster import runtime
cluster = runtime.init()
import secretflow as sf
from secretflow.device import driver
from secretflow.distributed.fed.proxy.brpc_link.brpc_link import BrpcLinkProxy
proxy = BrpcLinkProxy(tls_config={"cert": "c"})
print(json.dumps({"call": sf.calls[0], "barriers": len(driver.barriers), "ssl": proxy._desc.enable_ssl,
                  "ready": open(os.environ[runtime.ENV_READY]).read(), "self": cluster.self_party, "mode": cluster.mode,
                  "listen": cluster.cfg["cluster_config"]["parties"]["alice"]["listen_addr"],
                  "spu_listen": [n.get("listen_address") for n in cluster.cfg["spu_cluster_def"]["nodes"]]}))
"""


def test_runtime_init_of_a_party_passes_what_secretflow_reads(tmp_path):
    """Against a stand-in with SecretFlow's own keyword names (no **kwargs: a misspelt option fails
    here, where SecretFlow itself swallows it): the comm options by their real name, TLS really on,
    one barrier with the peers, the ready file, and the gate's unix sockets as this party's listen
    addresses."""
    fake = tmp_path / "fake"
    for rel, text in FAKE_SF.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    c = parse_inventory(PROD.replace("10.0.0.1", "127.0.0.1"))
    cfg = production_config(c, "alice", "r1", TLS, start_timeout=50)
    assert cfg["cross_silo"]["comm_config"]["connect_retry_times"] == 80  # past the start deadline
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "lock.json").write_text(json.dumps({"token": "t", "pid": os.getpid()}))
    (tmp_path / "p.py").write_text(INIT_AS_A_PARTY)
    gate = {"cross_silo": f"unix:{tmp_path}/cross_silo.sock", "spu": f"unix:{tmp_path}/spu.sock"}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"),
               **{runtime.ENV_CONFIG: str(tmp_path / "cfg.json"), runtime.ENV_TOKEN: "t",
                  runtime.ENV_LOCK: str(tmp_path / "lock.json"), runtime.ENV_READY: str(tmp_path / "ready"),
                  runtime.ENV_GATE: json.dumps(gate)})
    p = subprocess.run([sys.executable, str(tmp_path / "p.py"), str(fake)], capture_output=True, text=True, env=env,
                       timeout=30)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout.strip().splitlines()[-1])
    call = got["call"]
    assert call["address"] == "local" and call["ray_mode"] is False and call["job_name"] == "r1"
    assert call["cross_silo_comm_backend"] == "brpc_link"
    assert call["cross_silo_comm_options"]["recv_timeout_ms"] == 600_000
    assert call["tls_config"]["cert"].endswith("/node.pem")
    assert got["ssl"] is True and got["barriers"] == 1 and got["ready"] == "ready"
    assert got["self"] == "alice" and got["mode"] == "production"
    assert got["listen"] == gate["cross_silo"] and got["spu_listen"][0] == gate["spu"]


def test_simulation_under_tls_puts_every_spu_behind_its_gate_and_only_then(tmp_path, monkeypatch):
    sim = parse_inventory(PROD.replace("mode: production\n", ""))
    # before `up` (no certificate dirs) and with tls off: no gate, the SPU listens where it did
    assert "spu_gate" not in secretflow_config(sim)
    off = parse_inventory(PROD.replace("mode: production\n", "").replace("tls: on", "tls: off"))
    assert "spu_gate" not in secretflow_config(off, TLS)
    cfg = secretflow_config(sim, TLS)
    assert cfg["spu_gate"]["root"] == "/tmp/sfc-fed" and cfg["spu_gate"]["socket"] == "spu.sock"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    monkeypatch.setenv(runtime.ENV_CONFIG, str(tmp_path / "cfg.json"))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # load() installs sf.init's check (gates after it)
    loaded = runtime.load()
    # what the driver hands sf.SPU: every party's runtime on the unix socket of its node's temp root,
    # peers still dialling the public address (the gate there)
    assert [(n["address"], n["listen_address"]) for n in loaded["spu_cluster_def"]["nodes"]] == [
        ("10.0.0.1:20100", "unix:/tmp/sfc-fed/spu.sock"), ("10.0.0.2:20101", "unix:/tmp/sfc-fed/spu.sock"),
        ("203.0.113.3:20102", "unix:/tmp/sfc-fed/spu.sock")]
    assert all("tls_opts" in n for n in loaded["spu_cluster_def"]["nodes"])
