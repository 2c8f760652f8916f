"""`sfcluster provision` on the harness: nodes with no SecretFlow venv at all (the image's /opt/sf
moved away) get one from their own CPython 3.10 and a wheelhouse this controller pushes, pass
`check` and train; a second provision is a no-op in seconds; a venv whose digest differs is
rebuilt on that node only; a pin the wheelhouse lacks fails naming node and package and leaves
the old venv in place; a node without the rights to make the venv is refused, naming the fix."""
from __future__ import annotations

import json
import time

import pytest

from tests.harness.harness import RAY_USER
from tests.integration.cli import ROOT, sfc

PARTIES = ("alice", "bob", "carol")
VENV = "/opt/sf"
HIDDEN = "/opt/sf.image"
OWNER = {n: RAY_USER for n in PARTIES}   # the venv belongs to the user Ray runs as
TIMES = ROOT / "build" / "provision-times.json"


def pins(base: str, wheelhouse: str, version: str = "1.10.0b1") -> str:
    return (f"provision:\n  package: secretflow-lite\n  version: {version}\n  ray_version: 2.9.3\n"
            f"  base_python: {base}\n  wheelhouse: {wheelhouse}\n")


@pytest.fixture(scope="module")
def bare(harness, tmp_path_factory):
    """Every party's node without its SecretFlow venv (the same image, /opt/sf moved away), and an
    inventory that pins what the image had; the image's venv is put back at the end."""
    wheelhouse = harness.ensure_wheelhouse()
    base = harness.base_python("alice")
    for n in PARTIES:
        harness.docker_exec(n, f"mv {VENV} {HIDDEN}")
    d = tmp_path_factory.mktemp("provision")
    inv = harness.write_inventory(d / "inv.yaml", cluster="prov", firewall="check", data=True,
                                  extra_top=pins(base, str(wheelhouse)))
    yield {"inv": inv, "dir": d, "base": base, "wheelhouse": wheelhouse}
    sfc("down", "-i", str(inv), "--force", "--purge")
    for n in PARTIES:
        harness.docker_exec(n, f"rm -rf {VENV} {VENV}.sfc-old && mv {HIDDEN} {VENV}", check=False)


def provision(inv, *args, timeout=1800):
    start = time.monotonic()
    p = sfc("provision", "-i", str(inv), "--json", *args, timeout=timeout)
    return p, time.monotonic() - start


def record(key, value):
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    times[key] = round(value, 1)
    TIMES.write_text(json.dumps(times, indent=1))


def test_check_on_a_bare_node_says_to_provision(harness, bare):
    p = sfc("check", "-i", str(bare["inv"]), "--json", "--no-reach")
    assert p.returncode == 65, p.stdout[-2000:] + p.stderr[-2000:]
    rows = [c for c in json.loads(p.stdout)["checks"] if c["name"] == "python"]
    assert {r["node"] for r in rows} == set(PARTIES) and all("sfcluster provision" in r["fix"] for r in rows), rows


def test_provision_makes_bare_nodes_pass_check(harness, bare):
    p, took = provision(bare["inv"])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    record("cold_provision_s", took)
    got = json.loads(p.stdout)["nodes"]
    for n in PARTIES:
        assert got[n]["changed"] is True and got[n]["versions"] == {"secretflow-lite": "1.10.0b1", "ray": "2.9.3"}, got[n]
        assert got[n]["wheels_sent"] > 50, got[n]
        owner = harness.docker_exec(n, f"stat -c %U {VENV} {VENV}/bin/python {VENV}/lib/python3.10/site-packages/ray")
        assert set(owner.stdout.split()) == {OWNER[n]}, (n, owner.stdout)
        assert harness.docker_exec(n, f"test -e {VENV}.sfc-old && echo left || true").stdout.strip() == ""
    harness.push_data(bare["inv"])
    p = sfc("check", "-i", str(bare["inv"]), "--json")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    versions = [c for c in json.loads(p.stdout)["checks"] if c["name"] == "versions"]
    assert all(c["status"] == "OK" and "ray 2.9.3, secretflow 1.10.0b1" in c["detail"] for c in versions), versions


def test_a_second_provision_is_a_noop_in_seconds(harness, bare):
    p, took = provision(bare["inv"])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    record("noop_provision_s", took)
    got = json.loads(p.stdout)
    assert got["changed"] is False and all(o["wheels_sent"] == 0 for o in got["nodes"].values()), got
    assert took < 20, took


def test_a_venv_whose_digest_differs_is_rebuilt_on_that_node_only(harness, bare):
    # bob's venv says it was built for other pins: only bob rebuilds, from the wheels it already has
    harness.docker_exec("bob", f"sed -i 's/\"digest\": \"/\"digest\": \"x/' {VENV}/.sfcluster-provision.json")
    p, took = provision(bare["inv"])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    record("one_node_rebuild_s", took)
    got = json.loads(p.stdout)["nodes"]
    assert [n for n in PARTIES if got[n]["changed"]] == ["bob"], got
    assert got["bob"]["wheels_sent"] == 0, got["bob"]


def test_a_pin_the_wheelhouse_lacks_fails_naming_node_and_package_and_keeps_the_venv(harness, bare):
    inv = harness.write_inventory(bare["dir"] / "b2.yaml", cluster="prov", firewall="check", data=True,
                                  extra_top=pins(bare["base"], str(bare["wheelhouse"]), version="1.10.0b2"))
    p, _ = provision(inv, "--party", "carol")
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    err = json.loads(p.stdout)["error"]
    assert "[carol]" in err and "secretflow-lite==1.10.0b2" in err and "previous venv is back" in err, err
    v = harness.docker_exec("carol", f"{VENV}/bin/python -c 'import importlib.metadata as m; print(m.version(\"secretflow-lite\"))'")
    assert v.stdout.strip() == "1.10.0b1"
    p, _ = provision(bare["inv"], "--party", "carol")
    assert json.loads(p.stdout)["changed"] is False, p.stdout   # the old venv came back whole, marker and all


def test_no_python_310_is_a_clear_error(harness, bare):
    inv = harness.write_inventory(bare["dir"] / "nopy.yaml", cluster="prov", firewall="check",
                                  extra_node={"bob": {"base_python": "/usr/bin/python3.10"}},
                                  extra_top=pins(bare["base"], str(bare["wheelhouse"])))
    p, _ = provision(inv, "--party", "bob")
    assert p.returncode == 1, p.stdout + p.stderr
    err = json.loads(p.stdout)
    assert "[bob] no Python 3.10 at '/usr/bin/python3.10'" in err["error"] and "apt-get install python3.10" in err["fix"], err


def test_without_rights_to_make_the_venv_it_refuses_naming_the_fix(harness, bare):
    # sfstrict cannot write /opt and its sudo asks for a password
    text = harness.inventory_text(cluster="prov", firewall="check", extra_node={"carol": {"python": "/opt/sfx/bin/python"}},
                                  extra_top=pins(bare["base"], str(bare["wheelhouse"])), ray_user=None)
    inv = bare["dir"] / "strict.yaml"
    inv.write_text(text.replace("user: sfops\n      port: 2222", "user: sfstrict\n      port: 2222"))
    assert "sfstrict" in inv.read_text()
    p, _ = provision(inv, "--party", "carol")
    assert p.returncode == 77, p.stdout + p.stderr
    err = json.loads(p.stdout)
    assert "[carol] cannot make /opt/sfx for sfstrict" in err["error"] and "sudo install -d -o sfstrict /opt/sfx" in err["fix"], err
    assert harness.docker_exec("carol", "test -e /opt/sfx && echo made || true").stdout.strip() == ""


def test_up_provision_then_train(harness, bare):
    start = time.monotonic()
    p = sfc("up", "--provision", "-i", str(bare["inv"]), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "nothing to do" in p.stderr, p.stderr
    record("up_provision_noop_s", time.monotonic() - start)
    p = sfc("run", "-i", str(bare["inv"]), str(ROOT / "templates" / "train_lr.py"), timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    line = next(l for l in p.stdout.splitlines() if l.startswith("RESULT"))
    assert float(line.split("auc=")[1].split()[0]) >= 0.9, line
