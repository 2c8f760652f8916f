"""The hash lock and the wheelhouse maker (sfcluster/wheels): locks read and made from wheel file
names, PEP 508 markers evaluated for the nodes' Python 3.10 (not this controller's), and the
closure that fetches what `pip download --python-version 3.10` left out; no network."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import List

import pytest
from click.testing import CliRunner

from sfcluster.errors import SfclusterError
from sfcluster.wheels.lock import LOCK_NAME, LockError, hash_wheels, lock_from_files, parse_lock, wheelhouse_lock
from sfcluster.wheels.make import Target, closure, download_argv, make_wheelhouse
from sfcluster.wheels.markers import evaluate, parse_requirement, target_environment

PY310, PY311 = target_environment("3.10"), target_environment("3.11")


@pytest.mark.parametrize("marker, extras, on310, on311", [
    ('python_version < "3.11"', (), True, False),
    ('python_version >= "3.11"', (), False, True),
    ("python_version<'3.11' and sys_platform == \"linux\"", (), True, False),
    ('sys_platform == "win32" or (platform_machine == "x86_64" and python_full_version < "3.11.0")', (), True, False),
    ('extra == "default"', (), False, False),
    ('extra == "default"', ("Default",), True, True),
    ('python_version ~= "3.10"', (), True, True),
    ('python_version == "3.10.*"', (), True, False),
    ('platform_machine not in "arm64 aarch64"', (), True, True),
    ('implementation_name == "pypy"', (), False, False),
])
def test_markers_are_evaluated_for_the_target_python(marker, extras, on310, on311):
    assert evaluate(marker, PY310, frozenset(extras)) is on310
    assert evaluate(marker, PY311, frozenset(extras)) is on311


def test_requires_dist_lines_parse():
    r = parse_requirement('async-timeout (<5.0,>=4.0) ; python_version < "3.11"')
    assert (r.key, r.specifier, r.marker, r.for_pip()) == ("async-timeout", "<5.0,>=4.0", 'python_version < "3.11"',
                                                           "async-timeout<5.0,>=4.0")
    r = parse_requirement("Ray[Default, client]>=2.9")
    assert r.extras == frozenset({"default", "client"}) and r.for_pip() == "Ray[client,default]>=2.9"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_lock_of_a_wheelhouse_comes_from_its_file_names():
    files = {"ray-2.9.3-cp310-cp310-manylinux2014_x86_64.whl": (10, sha(b"x86")),
             "ray-2.9.3-cp310-cp310-manylinux2014_aarch64.whl": (10, sha(b"arm")),
             "Async_Timeout-4.0.3-py3-none-any.whl": (5, sha(b"at")),
             "secretflow_lite-1.10.0b1-1-py3-none-any.whl": (5, sha(b"sf"))}   # with a build tag
    lock = lock_from_files(files, "/wh/" + LOCK_NAME)
    assert {k: (e.version, len(e.hashes)) for k, e in lock.entries.items()} == {
        "ray": ("2.9.3", 2), "async-timeout": ("4.0.3", 1), "secretflow-lite": ("1.10.0b1", 1)}
    text = lock.render("test")
    assert f"async-timeout==4.0.3 --hash=sha256:{sha(b'at')}" in text.splitlines()
    again = parse_lock(text, "again.txt")
    assert again.digest == lock.digest and again.entries["ray"].line > 0


@pytest.mark.parametrize("files, words", [
    ({"evil-1.0.tar.gz": (1, "0" * 64)}, "evil-1.0.tar.gz is a source distribution"),
    ({"evil-1.0.zip": (1, "0" * 64)}, "evil-1.0.zip is a source distribution"),
    ({"notawheel.whl": (1, "0" * 64)}, "notawheel.whl is not a wheel file name"),
    ({"six-1.15.0-py2.py3-none-any.whl": (1, "0" * 64), "six-1.16.0-py2.py3-none-any.whl": (1, "1" * 64)},
     "two versions of six"),
])
def test_a_wheelhouse_lock_refuses_what_is_no_single_wheel(files, words):
    with pytest.raises(LockError, match=words):
        lock_from_files(files, "lock.txt")


def test_hash_wheels_refuses_an_sdist_and_ignores_notes(tmp_path):
    (tmp_path / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"w")
    for name in (".complete", ".pins", LOCK_NAME, "README.txt"):
        (tmp_path / name).write_text("x")
    assert hash_wheels(tmp_path) == {"six-1.16.0-py2.py3-none-any.whl": (1, sha(b"w"))}
    (tmp_path / "pkg-1.0.tar.gz").write_bytes(b"sdist")
    with pytest.raises(LockError, match=f"{tmp_path}/pkg-1.0.tar.gz is a source distribution"):
        hash_wheels(tmp_path)


def test_a_pip_compile_lock_reads_and_a_bad_line_is_named():
    text = ("# pip-compile --generate-hashes\n"
            "async-timeout==4.0.3 ; python_version < \"3.11\" \\\n"
            f"    --hash=sha256:{'a' * 64} \\\n    --hash=sha256:{'b' * 64}\n"
            "    # via aiohttp\n"
            f"ray==2.9.3 --hash=sha256:{'c' * 64}\n")
    lock = parse_lock(text, "req.txt")
    e = lock.entries["async-timeout"]
    assert (e.hashes, e.marker, e.line) == (("a" * 64, "b" * 64), 'python_version < "3.11"', 2)
    for bad, line in [("ray==2.9.3\n", 1), (f"# x\nray>=2.9 --hash=sha256:{'c' * 64}\n", 2),
                      (f"-e git+https://x/y --hash=sha256:{'c' * 64}\n", 1),
                      (f"ray==2.9.3 --hash=md5:{'c' * 32}\n", 1)]:
        with pytest.raises(LockError, match=f"^req.txt:{line}: not a locked requirement"):
            parse_lock(bad, "req.txt")


def test_a_wheelhouse_lock_is_made_once_then_checked(tmp_path):
    (tmp_path / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"six")
    lock, made = wheelhouse_lock(str(tmp_path), hash_wheels(tmp_path))
    assert made and (tmp_path / LOCK_NAME).exists()
    lock2, made2 = wheelhouse_lock(str(tmp_path), hash_wheels(tmp_path))
    assert not made2 and lock2.digest == lock.digest
    (tmp_path / "six-1.16.0-py2.py3-none-any.whl").write_bytes(b"evil")
    with pytest.raises(LockError, match=f"six==1.16.0: .* the lock \\({tmp_path}/{LOCK_NAME}:3\\) says") as e:
        wheelhouse_lock(str(tmp_path), hash_wheels(tmp_path))
    assert e.value.package == "six"


# -- the closure: fake wheels with METADATA

def wheel(d: Path, dist: str, version: str, requires: List[str] = ()) -> str:
    stem = f"{dist.replace('-', '_')}-{version}"
    name = f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(d / name, "w") as z:
        z.writestr(f"{stem}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n" +
                   "".join(f"Requires-Dist: {r}\n" for r in requires) + "\nlong description\nRequires-Dist: not-a-header\n")
    return name


def test_the_closure_asks_for_what_python_310_needs_and_pip_left_out(tmp_path):
    wheel(tmp_path, "aiohttp", "3.9.1", ['async-timeout (<5.0,>=4.0) ; python_version < "3.11"', "yarl (<2.0,>=1.0)",
                                         'Brotli ; extra == "speedups"'])
    wheel(tmp_path, "yarl", "1.9.4")
    got = closure(tmp_path, ["aiohttp==3.9.1"], PY310)
    assert sorted(got.missing) == ["async-timeout"] and got.missing["async-timeout"].for_pip() == "async-timeout<5.0,>=4.0"
    assert closure(tmp_path, ["aiohttp==3.9.1"], PY311).missing == {}     # what pip on 3.11 saw
    assert sorted(closure(tmp_path, ["aiohttp[speedups]==3.9.1"], PY311).missing) == ["brotli"]


class FakeIndex:
    """A Download that 'fetches' fake wheels from a dict name -> (version, requires)."""

    def __init__(self, dest: Path, index: dict) -> None:
        self.dest, self.index, self.asked = dest, index, []

    def __call__(self, requirements: List[str]) -> None:
        self.asked.append(list(requirements))
        for r in requirements:
            key = parse_requirement(r).key
            if key in self.index:
                version, requires = self.index[key]
                wheel(self.dest, key, version, requires)
                if key == "aiohttp":   # what pip on 3.11 also downloads: aiohttp's deps as 3.11 sees them
                    wheel(self.dest, "yarl", "1.9.4")
                    wheel(self.dest, "only-above-311", "1.0")


def test_make_wheelhouse_closes_for_310_and_writes_its_lock(tmp_path):
    d = tmp_path / "wh"
    index = {"aiohttp": ("3.9.1", ['async-timeout<5,>=4; python_version < "3.11"', "yarl",
                                   'only-above-311; python_version >= "3.11"']),
             "async-timeout": ("4.0.3", [])}
    fake = FakeIndex(d, index)
    made = make_wheelhouse(str(d), ["aiohttp==3.9.1"], Target(), fake)
    assert fake.asked == [["aiohttp==3.9.1"], ["async-timeout<5,>=4"]]
    assert made.added == ["async-timeout<5,>=4"] and made.removed == ["only_above_311-1.0-py3-none-any.whl"]
    assert sorted(made.lock.entries) == ["aiohttp", "async-timeout", "yarl"]
    assert parse_lock((d / LOCK_NAME).read_text(), "x").digest == made.lock.digest


def test_a_needed_wheel_that_cannot_be_fetched_fails_naming_it(tmp_path):
    d = tmp_path / "wh"
    fake = FakeIndex(d, {"aiohttp": ("3.9.1", ['async-timeout<5,>=4; python_version < "3.11"'])})
    with pytest.raises(SfclusterError, match=r"async-timeout<5,>=4 is needed on Python 3.10 but its download brought no"):
        make_wheelhouse(str(d), ["aiohttp==3.9.1"], Target(), fake)


def test_download_argv_targets_the_nodes_python_wheels_only_and_no_pip_conf():
    argv = download_argv("/py", Target("3.10", "x86_64", "2.28"), "/wh", "/r.txt")
    assert argv[:4] == ["/py", "-m", "pip", "download"]
    for flag in ("--isolated", "--no-input", "--only-binary=:all:"):
        assert flag in argv
    pairs = list(zip(argv, argv[1:]))
    assert ("--python-version", "3.10") in pairs and ("--implementation", "cp") in pairs and ("--abi", "cp310") in pairs
    platforms = [b for a, b in pairs if a == "--platform"]
    assert platforms[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in platforms
    assert "manylinux2014_x86_64" in platforms and "manylinux_2_29_x86_64" not in platforms
    assert [b for a, b in pairs if a == "--platform"] == platforms and argv[-2:] == ["-r", "/r.txt"]


def test_the_wheelhouse_command(tmp_path, monkeypatch):
    import sfcluster.cli.provision as cli
    from sfcluster.cli.main import cli as main
    inv = tmp_path / "inv.yaml"
    inv.write_text("cluster: demo\nnodes: {a: {host: 10.0.0.1, python: /opt/sf/bin/python}, "
                   "b: {host: 10.0.0.2, python: /opt/sf/bin/python}}\n"
                   "provision: {package: secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3}\n")
    seen = {}

    def fake_download(python, target, dest, index_url, secret):
        seen.update(target=target, index_url=index_url)
        return FakeIndex(Path(dest), {"secretflow-lite": ("1.10.0b1", ["ray==2.9.3"]), "ray": ("2.9.3", [])})
    monkeypatch.setattr(cli, "pip_download", fake_download)
    r = CliRunner().invoke(main, ["wheelhouse", "-i", str(inv), str(tmp_path / "wh"), "--glibc", "2.17", "--json"])
    assert r.exit_code == 0, r.output
    assert seen["target"] == Target("3.10", "x86_64", "2.17") and seen["index_url"] is None
    assert '"packages": 2' in r.output and (tmp_path / "wh" / LOCK_NAME).exists()
    r = CliRunner().invoke(main, ["wheelhouse", "-i", str(inv), str(tmp_path / "wh2"), "--glibc", "2.5"])
    assert r.exit_code != 0 and "2.17 or later" in r.output
