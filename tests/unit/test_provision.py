"""`sfcluster provision`: the inventory's pins, the digest that makes a second run a no-op, and
the node side (nodescripts/provision.py) run here as the nodes run it: a venv replaced in place
is put back whole when the new one fails, wheels arrive checked, a non-venv is never replaced."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import hashlib
from pathlib import Path

import pytest

from sfcluster.errors import InventoryError, SfclusterError
from sfcluster.inventory import parse_inventory
from sfcluster.nodescripts import with_state
from sfcluster.nodescripts.contract import OLD_SUFFIX, VENV_MARKER
from sfcluster.provision import digest, read_credentials, venv_dir

BASE = "cluster: demo\nnodes: {a: {host: 10.0.0.1, python: /opt/sf/bin/python}, b: {host: 10.0.0.2, python: /opt/sf/bin/python}}\n"
PINS = "provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3}\n"


def node(req: dict, home: Path, stdin: bytes = b"") -> dict:
    p = subprocess.run([sys.executable, "-c", with_state("provision"), json.dumps(req)], input=stdin,
                       capture_output=True, timeout=300, env=dict(os.environ, SFCLUSTER_NODE_HOME=str(home)))
    assert p.stdout, p.stderr.decode()
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def test_inventory_pins_and_base_python():
    c = parse_inventory(BASE + PINS)
    assert c.provision.requirements == ("secretflow-lite==1.10.0b1", "ray==2.9.3")
    assert [n.base_python for n in c.nodes] == ["python3.10", "python3.10"]
    c = parse_inventory(BASE.replace("python: /opt/sf/bin/python}, b", "python: /opt/sf/bin/python, "
                                     "base_python: /opt/py/bin/python3.10}, b") +
                        "provision: {package: secretflow, version: 1.9.0, ray_version: 2.9.3, base_python: /usr/bin/python3.10}\n")
    assert [n.base_python for n in c.nodes] == ["/opt/py/bin/python3.10", "/usr/bin/python3.10"]
    assert parse_inventory(BASE).provision is None


@pytest.mark.parametrize("prov, path, words", [
    ("{package: secretflow-lite, version: 1.10.0b1}", "provision.ray_version", "missing"),
    ("{package: tensorflow, version: 1, ray_version: 2.9.3}", "provision.package", "not one of"),
    ("{package: secretflow-lite, version: '>=1.10', ray_version: 2.9.3}", "provision.version", "not an exact version"),
    ("{package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3, index_url: 'https://u:pw@pypi.example/simple'}",
     "provision.index_url", "0600 file"),
    ("{package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3, index_credentials: cred}",
     "provision.index_credentials", "without index_url"),
    ("{package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3, wheelhouse: w, index_url: 'https://x/simple'}",
     "provision.wheelhouse", "not both"),
    ("{package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3, pip: 23}", "provision.pip", "unknown key"),
])
def test_inventory_refuses_bad_provision_keys(prov, path, words):
    with pytest.raises(InventoryError) as e:
        parse_inventory(BASE + f"provision: {prov}\n")
    assert any(p.path == path and words in p.message for p in e.value.problems), e.value.problems


def test_controller_paths_are_relative_to_the_inventory(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(BASE + "provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3, wheelhouse: wh}\n")
    from sfcluster.inventory import load_inventory
    assert load_inventory(str(inv)).provision.wheelhouse == str(tmp_path / "wh")


def test_venv_dir_needs_venv_bin_python():
    c = parse_inventory(BASE + PINS)
    assert venv_dir(c.node("a")) == "/opt/sf"
    bare = parse_inventory(BASE.replace("/opt/sf/bin/python}, b", "python3}, b") + PINS)
    with pytest.raises(SfclusterError, match="a: python 'python3' is not <venv>/bin/python"):
        venv_dir(bare.node("a"))
    for py in ("/usr/bin/python3", "/usr/local/bin/python3.10", "/sf/bin/python"):
        system = parse_inventory(BASE.replace("/opt/sf/bin/python}, b", py + "}, b") + PINS)
        with pytest.raises(SfclusterError, match="a venv directory of its own"):
            venv_dir(system.node("a"))


def test_digest_changes_with_a_pin_or_the_base_only():
    c = parse_inventory(BASE + PINS)
    d = digest(c.provision, c.node("a"), "3.10.13")
    assert d == digest(c.provision, c.node("b"), "3.10.13")        # same pins, same base: same digest
    assert d != digest(c.provision, c.node("a"), "3.10.14")
    other = parse_inventory(BASE + PINS.replace("2.9.3", "2.10.0"))
    assert d != digest(other.provision, other.node("a"), "3.10.13")


def test_credentials_file_must_be_private(tmp_path):
    f = tmp_path / "cred"
    f.write_text("user:secret\n")
    inv = tmp_path / "inv.yaml"
    inv.write_text(BASE + "provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3, "
                          "index_url: 'https://idx.example/simple', index_credentials: cred}\n")
    from sfcluster.inventory import load_inventory
    prov = load_inventory(str(inv)).provision
    f.chmod(0o644)
    with pytest.raises(SfclusterError, match="mode 644"):
        read_credentials(prov)
    f.chmod(0o600)
    assert read_credentials(prov) == "user:secret"


def test_inspect_reports_the_base_and_an_absent_venv(tmp_path):
    got = node({"action": "inspect", "venv": str(tmp_path / "sf")}, tmp_path)
    assert got["exists"] is False and got["self_swap"] is True and got["marker"] is None
    assert got["base_version"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")


def test_a_failed_build_puts_the_old_venv_back_whole(tmp_path):
    venv = tmp_path / "sf"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /x\n")
    (venv / VENV_MARKER).write_text(json.dumps({"digest": "old"}))
    got = node({"action": "swap_in", "venv": str(venv), "owner": "nobody"}, tmp_path)
    assert got == {"moved_aside": True} and venv.is_dir() and not os.listdir(venv)
    assert (tmp_path / ("sf" + OLD_SUFFIX) / "pyvenv.cfg").exists()
    (venv / "half").write_text("x")
    assert node({"action": "finish", "venv": str(venv), "ok": False}, tmp_path) == {"restored": True}
    assert json.loads((venv / VENV_MARKER).read_text()) == {"digest": "old"}
    assert not (tmp_path / ("sf" + OLD_SUFFIX)).exists()


def test_a_provision_that_died_midway_is_recovered_at_the_next_one(tmp_path):
    venv, old = tmp_path / "sf", tmp_path / ("sf" + OLD_SUFFIX)
    old.mkdir()
    (old / "pyvenv.cfg").write_text("home = /x\n")
    venv.mkdir()
    (venv / "half").write_text("x")   # no marker: the build never finished
    assert node({"action": "swap_in", "venv": str(venv), "owner": "nobody"}, tmp_path) == {"moved_aside": True}
    assert (old / "pyvenv.cfg").exists() and not (old / "half").exists()


def test_never_replaces_what_is_not_a_venv(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "precious").write_text("x")
    got = node({"action": "swap_in", "venv": str(d), "owner": "nobody"}, tmp_path)
    assert "no venv (no pyvenv.cfg)" in got["refused"] and (d / "precious").exists()
    got = node({"action": "swap_in", "venv": "/opt", "owner": "nobody"}, tmp_path)
    assert "refusing to provision /opt" in got["error"]


def tar_of(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_wheels_arrive_checked_and_are_reused(tmp_path):
    wheels = {"a-1-py3-none-any.whl": b"A" * 1000, "b-2-py3-none-any.whl": b"B" * 10}
    files = {n: [len(d), hashlib.sha256(d).hexdigest()] for n, d in wheels.items()}
    req = {"cluster": "demo", "files": files}
    assert sorted(node(dict(req, action="wheels"), tmp_path)["missing"]) == sorted(wheels)
    bad = dict(wheels, **{"b-2-py3-none-any.whl": b"C" * 10})
    assert "expected 10 bytes" in node(dict(req, action="wheels_put"), tmp_path, tar_of(bad))["refused"]
    assert node(dict(req, action="wheels_put"), tmp_path, tar_of(wheels)) == {"ok": True, "count": 2}
    got = node(dict(req, action="wheels"), tmp_path)
    assert got["missing"] == [] and oct(os.stat(got["dir"]).st_mode & 0o777) == "0o700"
    # a wheel the controller no longer has goes; one it changed is asked for again
    files.pop("a-1-py3-none-any.whl")
    files["b-2-py3-none-any.whl"] = [11, hashlib.sha256(b"B" * 11).hexdigest()]
    got = node({"cluster": "demo", "files": files, "action": "wheels"}, tmp_path)
    assert got["missing"] == ["b-2-py3-none-any.whl"]
    assert sorted(os.listdir(got["dir"])) == ["b-2-py3-none-any.whl", "manifest.json"]


def test_a_pin_the_wheelhouse_lacks_fails_naming_the_package(tmp_path):
    venv = tmp_path / "sf"
    venv.mkdir()
    (tmp_path / "wh").mkdir()
    got = node({"action": "build", "venv": str(venv), "requirements": ["secretflow-lite==9.9.9", "ray==2.9.3"],
                "check": {}, "source": {"wheelhouse": str(tmp_path / "wh")}, "marker": {}}, tmp_path)
    assert got["stage"] == "pip" and got["package"] == "secretflow-lite==9.9.9", got
    assert not (venv / VENV_MARKER).exists()


# -- the whole controller flow, on this machine: two "nodes" (directories), fake SecretFlow/Ray wheels

class LocalRunner:
    """A Runner that runs argv here, as this user, with a node's home (stdin: text, bytes or a stream)."""

    user = "me"

    def __init__(self, name: str, home: Path) -> None:
        self.name, self.env = name, dict(os.environ, SFCLUSTER_NODE_HOME=str(home))

    def run(self, argv, *, sudo=False, timeout=None, stdin=None):
        from sfcluster.remote.base import Result
        kw = {"stdin": stdin} if hasattr(stdin, "read") else {"input": stdin.encode() if isinstance(stdin, str) else stdin}
        p = subprocess.run(list(argv), capture_output=True, timeout=timeout, env=self.env, **kw)
        return Result(self.name, " ".join(argv)[:100], p.returncode, p.stdout.decode(), p.stderr.decode())

    def close(self):
        pass


def fake_wheel(d: Path, dist: str, version: str, package: str) -> None:
    import zipfile
    stem = f"{dist.replace('-', '_')}-{version}"
    with zipfile.ZipFile(d / f"{stem}-py3-none-any.whl", "w") as z:
        z.writestr(f"{package}/__init__.py", f"__version__ = {version!r}\n")
        z.writestr(f"{stem}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{stem}.dist-info/RECORD", "")


@pytest.fixture
def local_cluster(tmp_path, monkeypatch):
    import sfcluster.provision as prov
    monkeypatch.setattr(prov, "PROVISION_PYTHON", f"{sys.version_info[0]}.{sys.version_info[1]}")
    wh = tmp_path / "wheelhouse"
    wh.mkdir()
    fake_wheel(wh, "secretflow-lite", "1.10.0b1", "secretflow")
    fake_wheel(wh, "ray", "2.9.3", "ray")

    def inventory(version="1.10.0b1"):
        return parse_inventory(
            f"cluster: demo\nprovision: {{package: secretflow-lite, version: {version}, ray_version: 2.9.3, "
            f"base_python: {sys.executable}, wheelhouse: {wh}}}\n"
            f"nodes: {{a: {{host: 10.0.0.1, python: {tmp_path}/a/sf/bin/python}}, "
            f"b: {{host: 10.0.0.2, python: {tmp_path}/b/sf/bin/python}}}}\n")
    for n in ("a", "b"):
        (tmp_path / n / "home").mkdir(parents=True)
    runners = {n: LocalRunner(n, tmp_path / n / "home") for n in ("a", "b")}
    return inventory, runners, tmp_path


def test_provision_builds_then_is_a_noop_then_rebuilds_only_what_differs(local_cluster):
    from sfcluster.connect import Nodes
    from sfcluster.provision import provision
    inventory, runners, tmp = local_cluster
    c = inventory()
    seen = []
    got = provision(c, Nodes(c, runners=runners), progress=lambda n, m: seen.append((n, m)))
    assert {n: (o.changed, o.wheels_sent, o.versions) for n, o in got.items()} == {
        n: (True, 2, {"secretflow-lite": "1.10.0b1", "ray": "2.9.3"}) for n in ("a", "b")}
    assert {n for n, m in seen if m.startswith("building")} == {"a", "b"}
    assert (tmp / "a" / "sf" / VENV_MARKER).exists() and not (tmp / "a" / ("sf" + OLD_SUFFIX)).exists()
    again = provision(c, Nodes(c, runners=runners))
    assert not any(o.changed for o in again.values()) and all(o.seconds < 5 for o in again.values())
    marker = tmp / "b" / "sf" / VENV_MARKER
    marker.write_text(marker.read_text().replace('"digest": "', '"digest": "x'))
    third = provision(c, Nodes(c, runners=runners))
    assert [n for n, o in third.items() if o.changed] == ["b"] and third["b"].wheels_sent == 0


def test_a_missing_pin_names_node_and_package_and_keeps_every_old_venv(local_cluster):
    from sfcluster.connect import Nodes
    from sfcluster.provision import provision
    inventory, runners, tmp = local_cluster
    c = inventory()
    provision(c, Nodes(c, runners=runners))
    before = (tmp / "a" / "sf" / VENV_MARKER).read_text()
    bad = inventory("1.10.0b2")
    with pytest.raises(SfclusterError) as e:
        provision(bad, Nodes(bad, runners=runners))
    text = e.value.message
    assert "provision failed on 2 of 2 node(s)" in text and "[a] pip failed (secretflow-lite==1.10.0b2)" in text, text
    assert "[b] pip failed (secretflow-lite==1.10.0b2)" in text and "previous venv is back in place" in text, text
    assert (tmp / "a" / "sf" / VENV_MARKER).read_text() == before
    assert not any(o.changed for o in provision(c, Nodes(c, runners=runners)).values())
