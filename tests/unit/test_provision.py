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
from sfcluster.nodescripts import bundle
from sfcluster.nodescripts.contract import OLD_SUFFIX, VENV_MARKER
from sfcluster.provision import digest, read_credentials, venv_dir
from sfcluster.remote.local import LocalRunner

BASE = "cluster: demo\nnodes: {a: {host: 10.0.0.1, python: /opt/sf/bin/python}, b: {host: 10.0.0.2, python: /opt/sf/bin/python}}\n"
PINS = "provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3}\n"


def node(req: dict, home: Path, stdin: bytes = b"") -> dict:
    p = subprocess.run([sys.executable, "-c", bundle("provision"), json.dumps(req)], input=stdin,
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


def test_a_pin_the_lock_lacks_fails_naming_the_package(tmp_path):
    venv = tmp_path / "sf"
    venv.mkdir()
    (tmp_path / "wh").mkdir()
    lock = [["secretflow-lite", "1.10.0b1", ["a" * 64], None], ["ray", "2.9.3", ["b" * 64], None]]
    got = node({"action": "build", "cluster": "demo", "venv": str(venv), "lock": lock,
                "requirements": ["secretflow-lite==9.9.9", "ray==2.9.3"], "check": {},
                "source": {"wheelhouse": str(tmp_path / "wh")}, "marker": {}}, tmp_path)
    assert got["stage"] == "lock check" and got["package"] == "secretflow-lite==9.9.9", got
    assert "it locks secretflow-lite==1.10.0b1" in got["failed"], got
    assert not (venv / VENV_MARKER).exists()


# -- the whole controller flow, on this machine: two "nodes" (directories), fake SecretFlow/Ray wheels


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
    runners = {n: LocalRunner(n, home=tmp_path / n / "home") for n in ("a", "b")}
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
    assert "provision failed on 2 of 2 node(s)" in text and "[a] lock check failed (secretflow-lite==1.10.0b2)" in text, text
    assert "[b] lock check failed (secretflow-lite==1.10.0b2)" in text and "previous venv is back in place" in text, text
    assert (tmp / "a" / "sf" / VENV_MARKER).read_text() == before
    assert not any(o.changed for o in provision(c, Nodes(c, runners=runners)).values())


# -- the hash lock (issue 17, item 10): pip trusts neither the index nor the node's pip config

def node_module() -> dict:
    """The node script's functions: it is a module that acts only as __main__."""
    from sfcluster.nodescripts import provision as node_provision
    return vars(node_provision)


def test_pip_runs_isolated_wheels_only_and_checks_every_hash():
    m = node_module()
    argv = m["pip_argv"]("/opt/sf/bin/python", {"wheelhouse": "/h/wh"}, "/h/.sfcluster/demo/pip-lock.txt")
    assert argv[:5] == ["/opt/sf/bin/python", "-I", "-m", "pip", "install"]
    for flag in ("--isolated", "--no-input", "--only-binary=:all:", "--require-hashes", "--no-index"):
        assert flag in argv, (flag, argv)
    assert argv[-2:] == ["-r", "/h/.sfcluster/demo/pip-lock.txt"] and "--find-links" in argv
    index = m["pip_argv"]("/opt/sf/bin/python", {"index_url": "https://idx.example/simple"}, "/r.txt")
    assert "--no-index" not in index and not any("idx.example" in a for a in index), index  # the URL is in the file
    env = m["pip_env"]({"PIP_INDEX_URL": "http://evil/simple", "PIP_USER": "1", "PYTHONPATH": "/evil",
                        "HOME": "/home/sf", "HTTPS_PROXY": "http://proxy:3128"})
    assert env == {"PIP_CONFIG_FILE": os.devnull, "HOME": "/home/sf", "HTTPS_PROXY": "http://proxy:3128"}


def test_the_requirements_file_carries_the_index_and_refuses_plain_http():
    m = node_module()
    lock = [["ray", "2.9.3", ["a" * 64, "b" * 64], None], ["async-timeout", "4.0.3", ["c" * 64], 'python_version < "3.11"']]
    text = m["requirements_text"]({"index_url": "https://idx.example/simple"}, lock, "me:p@ss")
    assert text.splitlines() == ["--index-url https://me:p%40ss@idx.example/simple",
                                 f"ray==2.9.3 --hash=sha256:{'a' * 64} --hash=sha256:{'b' * 64}",
                                 f'async-timeout==4.0.3 ; python_version < "3.11" --hash=sha256:{"c" * 64}']
    with pytest.raises(m["UnsafeState"], match="only https"):
        m["requirements_text"]({"index_url": "http://idx.example/simple"}, lock, "")
    for bad in (["ray", "2.9.3", ["a" * 64], "x --index-url http://evil"], ["--index-url=http://e", "1", ["a" * 64], None],
                ["ray", "2.9.3", ["short"], None], ["ray", "2.9.3", [], None]):
        with pytest.raises(m["UnsafeState"], match="malformed lock entry"):
            m["lock_lines"]([bad])


PIP_HASH_MISMATCH = """ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated the package versions, please update the hashes. Otherwise, examine the package contents carefully; someone may have tampered with them.
    beta==2.0 from file:///tmp/hpip/wh/beta-2.0-py3-none-any.whl (from -r lock.txt (line 2)):
        Expected sha256 0000000000000000000000000000000000000000000000000000000000000000
             Got        96141e69d5d5e10a36dd7c9607c7737bc63a2bcbadaaec05fd2f7f91dbc419ca
"""
PIP_NOT_PINNED = """ERROR: In --require-hashes mode, all requirements must have their versions pinned with ==. These do not:
    beta from file:///tmp/hpip/wh/beta-2.0-py3-none-any.whl (from alpha==1.0->-r lock2.txt (line 1))
"""


def test_pips_hash_errors_name_the_package():
    # the texts are pip 23.2.1's own, captured from a real install against a lock
    m = node_module()
    assert m["failed_requirement"](PIP_HASH_MISMATCH) == "beta==2.0"
    assert m["failed_requirement"](PIP_NOT_PINNED) == "beta"


def test_the_node_refuses_a_wheel_whose_hash_the_lock_does_not_list(tmp_path):
    wh, venv = tmp_path / "wh", tmp_path / "sf"
    wh.mkdir()
    venv.mkdir()
    fake_wheel(wh, "ray", "2.9.3", "ray")
    fake_wheel(wh, "secretflow-lite", "1.10.0b1", "secretflow")
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in wh.iterdir()}
    lock = [["secretflow-lite", "1.10.0b1", [sha["secretflow_lite-1.10.0b1-py3-none-any.whl"]], None],
            ["ray", "2.9.3", ["0" * 64], None]]     # what the lock says ray is: not these bytes
    got = node({"action": "build", "cluster": "demo", "venv": str(venv), "lock": lock, "check": {},
                "requirements": ["secretflow-lite==1.10.0b1", "ray==2.9.3"], "source": {"wheelhouse": str(wh)},
                "marker": {}}, tmp_path)
    assert got["stage"] == "lock check" and got["package"] == "ray", got
    assert "ray-2.9.3-py3-none-any.whl has sha256 " + sha["ray-2.9.3-py3-none-any.whl"][:16] in got["failed"], got
    assert "pip" not in got and not (venv / "bin").exists()    # pip never ran


def test_the_nodes_pip_conf_and_pip_variables_do_not_apply(local_cluster):
    # a pip.conf and PIP_* of the Ray user that would send pip elsewhere (here: --user, which a
    # venv refuses; an http index) change nothing
    from sfcluster.connect import Nodes
    from sfcluster.provision import provision
    inventory, runners, tmp = local_cluster
    for name, r in runners.items():
        home = tmp / name / "userhome"
        (home / ".config" / "pip").mkdir(parents=True)
        (home / ".config" / "pip" / "pip.conf").write_text("[global]\nindex-url = http://127.0.0.1:9/simple\n"
                                                           "[install]\nuser = true\nno-index = false\n")
        r.env.update(HOME=str(home), PIP_USER="1", PIP_REQUIRE_HASHES="0", PIP_FIND_LINKS=str(tmp))
    c = inventory()
    got = provision(c, Nodes(c, runners=runners))
    assert all(o.changed and o.versions["ray"] == "2.9.3" for o in got.values()), got


def test_an_sdist_in_the_wheelhouse_is_refused_naming_it_before_any_node(local_cluster):
    from sfcluster.connect import Nodes
    from sfcluster.provision import provision
    from sfcluster.wheels.lock import LockError
    inventory, runners, tmp = local_cluster
    (tmp / "wheelhouse" / "evil-1.0.tar.gz").write_bytes(b"setup.py runs here")
    c = inventory()
    with pytest.raises(LockError, match=r"wheelhouse/evil-1.0.tar.gz is a source distribution") as e:
        provision(c, Nodes(c, runners=runners))
    assert "only wheels" in e.value.hint
    assert not (tmp / "a" / "home" / ".sfcluster").exists()


def test_the_wheelhouse_lock_is_kept_and_a_changed_wheel_fails_naming_the_package(local_cluster):
    from sfcluster.connect import Nodes
    from sfcluster.provision import provision
    from sfcluster.wheels.lock import LOCK_NAME, LockError
    inventory, runners, tmp = local_cluster
    c = inventory()
    seen = []
    provision(c, Nodes(c, runners=runners), progress=lambda n, m: seen.append(m))
    lock = tmp / "wheelhouse" / LOCK_NAME
    assert lock.exists() and any("made from the wheelhouse" in m for m in seen)
    assert "ray==2.9.3 --hash=sha256:" in lock.read_text()
    (tmp / "wheelhouse" / "ray-2.9.3-py3-none-any.whl").unlink()
    import zipfile
    with zipfile.ZipFile(tmp / "wheelhouse" / "ray-2.9.3-py3-none-any.whl", "w") as z:   # same name, other bytes
        z.writestr("ray/__init__.py", "import os; os.system('id')\n")
    with pytest.raises(LockError, match=r"^ray==2.9.3: .*ray-2.9.3-py3-none-any.whl has sha256 .* the wheel changed") as e:
        provision(c, Nodes(c, runners=runners))
    assert e.value.package == "ray" and f"{LOCK_NAME}:" in e.value.message
    fake_wheel(tmp / "wheelhouse", "extra-pkg", "1.0", "extra_pkg")   # a wheel added after the lock: refused too
    with pytest.raises(LockError, match="extra-pkg 1.0: .* is not in the lock"):
        provision(c, Nodes(c, runners=runners))


def test_an_index_without_a_lock_is_refused_saying_how_to_make_one(tmp_path):
    from sfcluster.connect import Nodes
    from sfcluster.provision import provision
    c = parse_inventory(BASE + "provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3, "
                               "index_url: 'https://idx.example/simple'}\n")
    with pytest.raises(SfclusterError, match=r"installing from https://idx.example/simple needs a hash lock") as e:
        provision(c, Nodes(c, runners={}))
    assert "sfcluster wheelhouse -i INVENTORY DIR" in e.value.hint and "provision.lock" in e.value.hint
    plain = parse_inventory(BASE + PINS)     # no index_url: PyPI, and the same rule
    with pytest.raises(SfclusterError, match=r"installing from https://pypi.org/simple needs a hash lock"):
        provision(plain, Nodes(plain, runners={}))


def test_an_http_index_is_refused_with_path_and_line():
    text = BASE + "provision:\n  package: secretflow-lite\n  version: 1.10.0b1\n  ray_version: 2.9.3\n" \
                  "  index_url: http://pypi.example/simple\n"
    with pytest.raises(InventoryError) as e:
        parse_inventory(text)
    got = [(p.path, p.line) for p in e.value.problems if "plain http" in p.message]
    assert got == [("provision.index_url", 7)], e.value.problems
    assert "https://" in str(e.value)


def test_the_inventory_names_a_lock_relative_to_itself(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(BASE + "provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3, "
                          "index_url: 'https://idx.example/simple', lock: locks/sf.txt}\n")
    from sfcluster.inventory import load_inventory
    assert load_inventory(str(inv)).provision.lock == str(tmp_path / "locks" / "sf.txt")
