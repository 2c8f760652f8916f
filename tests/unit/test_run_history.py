"""A run's results and history: run ids that cannot become paths, a fetch that never reads
outside the run's output dir nor more than its limit, the controller's history (newest first,
one per controller and cluster), and the head's cleanup plan (which run and session dirs stay)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sfcluster.cli.main import cli
from sfcluster.connect import Nodes
from sfcluster.errors import ConnectError, SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.inventory import parse_inventory
from sfcluster.nodescripts import contract as C
from sfcluster.nodescripts import bundle
from sfcluster.remote.local import LocalRunner
from sfcluster.run import driver, fetch as fetching, history

RUN_ID = "20261201-061500-a1b2c3"
INVENTORY = "cluster: demo\nnodes: {a: {host: 10.0.0.1}, b: {host: 10.0.0.2}}\n"


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "state"
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(d))
    return d


def planners() -> dict:
    """run_files.py's pure planners: the node script is a module that acts only as __main__."""
    from sfcluster.nodescripts import run_files
    return vars(run_files)


# -- run ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["../../etc", "..", "", "20261201-061500-a1b2c3\n", "20261201-061500-A1B2C3",
                                 "20261201-061500-a1b2c3/../../x", "/etc/shadow", "20261201-061500-a1b2c"])
def test_a_run_id_that_is_not_one_never_becomes_a_path(state, bad):
    with pytest.raises(SfclusterError, match="not a run id"):
        history.run_home("demo", bad)
    with pytest.raises(SfclusterError):
        history.make_home("demo", bad)
    assert not state.exists()


@pytest.mark.parametrize("cmd", [["logs"], ["fetch"], ["fetch", "-", "/tmp/x"]])
def test_the_cli_refuses_a_bad_run_id_naming_it_before_any_connection(state, tmp_path, cmd):
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY)
    args = [cmd[0], "-i", str(inv), "../../etc", *cmd[2:]]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 2, r.output
    assert "'../../etc' is not a run id" in r.output
    assert not state.exists()


def test_the_node_side_refuses_a_bad_run_id_too(tmp_path):
    p = node_fetch(tmp_path, {"run_id": "../../etc"})
    assert p.returncode == C.BAD_EXIT and "bad run id" in summary_of(p)["error"]


# -- history ----------------------------------------------------------------------------------
def record(run_id: str, cluster: str = "demo", **kw) -> history.RunRecord:
    return history.RunRecord(run_id=run_id, cluster=cluster, script="train.py", **kw)


def test_runs_are_listed_newest_first_and_unreadable_ones_still_show(state):
    for rid in ("20261130-235959-000001", "20261201-000001-00000a", "20261201-000000-ffffff"):
        history.save(record(rid, started=1.0))
    broken = history.make_home("demo", "20261201-120000-bbbbbb")
    (broken / "run.json").write_text("{not json")
    (history.runs_dir("demo") / "notes").mkdir()  # not a run id: ignored
    ids = [r.run_id for r in history.list_runs("demo")]
    assert ids == ["20261201-120000-bbbbbb", "20261201-000001-00000a", "20261201-000000-ffffff",
                   "20261130-235959-000001"]
    assert history.list_runs("demo")[0].script == "?"
    assert history.list_runs("other") == []


def test_two_controllers_and_two_clusters_never_mix_histories(tmp_path, monkeypatch):
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "ctl1"))
    history.save(record("20261201-000000-000001"))
    history.save(record("20261201-000000-000002", cluster="demo_b"))
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "ctl2"))
    history.save(record("20261201-000000-000003"))
    assert [r.run_id for r in history.list_runs("demo")] == ["20261201-000000-000003"]
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "ctl1"))
    assert [r.run_id for r in history.list_runs("demo")] == ["20261201-000000-000001"]
    assert [r.run_id for r in history.list_runs("demo_b")] == ["20261201-000000-000002"]


def test_run_json_has_what_the_issue_asks_and_is_private(state, tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(INVENTORY)
    p = history.save(record(RUN_ID, args=["--epochs", "3"], user="ann", controller="laptop", started=100.0,
                            ended=160.5, duration=60.5, exit_code=0, driver_exit=0,
                            inventory=str(inv), inventory_digest=history.inventory_digest(str(inv))))
    data = json.loads(p.read_text())
    for key in ("run_id", "cluster", "script", "args", "user", "controller", "started", "ended", "duration",
                "exit_code", "inventory_digest", "outputs", "detached"):
        assert key in data, key
    assert data["inventory_digest"].startswith("sha256:") and len(data["inventory_digest"]) == 7 + 64
    assert (p.stat().st_mode & 0o777) == 0o600 and (p.parent.stat().st_mode & 0o777) == 0o700
    assert p.parent == state / "demo" / "runs" / RUN_ID


@pytest.mark.parametrize("result, code, stopped", [
    ({"code": 3, "kind": "", "started": 10, "ended": 25}, 3, ""),
    ({"code": -2, "kind": "cancelled", "started": 10, "ended": 25}, 130, "cancelled"),
    ({"code": -9, "kind": "", "started": 10, "ended": 25}, 137, ""),
    ({"code": "0", "kind": ["x"], "started": "yesterday", "ended": True}, None, ""),  # what a driver could forge
])
def test_a_detached_runs_exit_code_comes_from_the_heads_result_well_typed_only(result, code, stopped):
    rec = record(RUN_ID, detached=True)
    history.merge_result(rec, result, driver.exit_code_of)
    assert rec.exit_code == code and rec.stopped_by == stopped
    assert rec.duration == (15.0 if code is not None else None)


# -- the controller's unpacking -----------------------------------------------------------------
def tar_of(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, data: bytes = b"x", kind=tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


@pytest.mark.parametrize("bad, why", [
    (member("../escape"), "unsafe path"),
    (member("/etc/passwd"), "unsafe path"),
    (member("output/a/../../../x"), "unsafe path"),
    (member("output/shadow", kind=tarfile.SYMTYPE, link="/etc/shadow"), "not a regular file"),
    (member("output/hard", kind=tarfile.LNKTYPE, link="/etc/shadow"), "not a regular file"),
    (member("output/big", b"y" * 2000), "more than 1000 bytes"),
])
def test_the_controller_does_not_trust_the_archive_either(tmp_path, bad, why):
    src = tmp_path / "in.tar"
    src.write_bytes(tar_of(member("output/ok.txt", b"fine"), bad))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(history.UnsafeArchive, match=why):
        history.extract(src, dest, 1000)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()


# -- the head's side of a fetch (run_files.py, run here as the node runs it) ----------------------
def head_run(home: Path, run_id: str = RUN_ID) -> Path:
    rd = home / ".sfcluster" / "demo" / "runs" / run_id
    rd.mkdir(mode=0o700, parents=True)
    for d in (home / ".sfcluster", home / ".sfcluster" / "demo", rd.parent):
        d.chmod(0o700)
    (rd / C.OUTPUT_DIR).mkdir(mode=0o700)
    (rd / C.LOG_NAME).write_bytes(b"tick 1\nRESULT auc=0.9\n")
    (rd / C.RESULT_NAME).write_text(json.dumps({"code": 0, "kind": "", "why": "", "started": 1.0, "ended": 2.0}))
    return rd


def node_fetch(home: Path, req: dict) -> subprocess.CompletedProcess:
    full = dict({"cluster": "demo", "action": "fetch", "run_id": RUN_ID, "max_bytes": 1 << 20, "log_bytes": 1 << 20}, **req)
    return subprocess.run([sys.executable, "-c", bundle("run_files"), json.dumps(full)], capture_output=True,
                          timeout=60, env=dict(os.environ, SFCLUSTER_NODE_HOME=str(home)))


def summary_of(p: subprocess.CompletedProcess) -> dict:
    prefix = C.CONTROL_PREFIX + C.FETCHED + " "
    return json.loads([ln for ln in p.stderr.decode().splitlines() if ln.startswith(prefix)][-1][len(prefix):])


def names_in(p: subprocess.CompletedProcess) -> dict:
    with tarfile.open(fileobj=io.BytesIO(p.stdout), mode="r|") as t:
        return {m.name: (t.extractfile(m).read() if m.isreg() else m.type) for m in t}


def test_fetch_sends_regular_files_only_and_never_follows_a_link_out(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    rd = head_run(tmp_path / "home")
    out = rd / C.OUTPUT_DIR
    (out / "metrics.json").write_text('{"auc": 0.9}')
    (out / "model").mkdir()
    (out / "model" / "w.npy").write_bytes(b"\x00\x01")
    (out / "shadow").symlink_to("/etc/shadow")
    (out / "secret").symlink_to(secret)
    (out / "outside").symlink_to(tmp_path)  # a link to a directory: not walked into
    os.mkfifo(out / "fifo")                # would block a reader forever
    p = node_fetch(tmp_path / "home", {})
    assert p.returncode == 0, p.stderr
    got = names_in(p)
    assert got == {"output/metrics.json": b'{"auc": 0.9}', "output/model/w.npy": b"\x00\x01",
                   C.LOG_NAME: b"tick 1\nRESULT auc=0.9\n", C.RESULT_NAME: (rd / C.RESULT_NAME).read_bytes()}
    s = summary_of(p)
    assert s["files"] == 2 and s["bytes"] == 14 and not s["refused"]
    assert sorted(path for path, _ in s["skipped"]) == ["fifo", "outside", "secret", "shadow"]
    assert b"TOP SECRET" not in p.stdout


def test_fetch_refuses_an_output_dir_that_is_a_link(tmp_path):
    rd = head_run(tmp_path / "home")
    (rd / C.OUTPUT_DIR).rmdir()
    (rd / C.OUTPUT_DIR).symlink_to("/etc")
    p = node_fetch(tmp_path / "home", {})
    assert p.returncode == 0
    assert set(names_in(p)) == {C.LOG_NAME, C.RESULT_NAME}
    assert summary_of(p)["skipped"] == [[C.OUTPUT_DIR, "not a directory (a link or a file is there)"]]


def test_outputs_above_the_limit_are_refused_whole_and_the_log_still_comes(tmp_path):
    rd = head_run(tmp_path / "home")
    (rd / C.OUTPUT_DIR / "small.txt").write_bytes(b"s" * 100)
    (rd / C.OUTPUT_DIR / "big.bin").write_bytes(b"b" * 5000)
    p = node_fetch(tmp_path / "home", {"max_bytes": 4096})
    s = summary_of(p)
    assert "5100 bytes in 2 files, above the limit of 4096 bytes" in s["refused"]
    assert s["files"] == 0 and set(names_in(p)) == {C.LOG_NAME, C.RESULT_NAME}


def test_a_long_log_comes_back_as_its_tail(tmp_path):
    rd = head_run(tmp_path / "home")
    (rd / C.LOG_NAME).write_bytes(b"a" * 1000 + b"THE END\n")
    p = node_fetch(tmp_path / "home", {"log_bytes": 8})
    assert names_in(p)[C.LOG_NAME] == b"THE END\n" and summary_of(p)["log_truncated"] is True


def test_fetch_of_a_missing_run_says_so_and_sends_nothing(tmp_path):
    head_run(tmp_path / "home")
    p = node_fetch(tmp_path / "home", {"run_id": "20261201-061500-000000"})
    assert p.returncode == 0 and p.stdout == b"" and summary_of(p)["missing"] is True


# -- fetch end to end on the controller, through a Runner ------------------------------------------
class HeadRunner(LocalRunner):
    """The head, here (the node's Python is ours); its first fetch can be cut mid-archive."""

    def __init__(self, home: Path, fail_first: bool = False) -> None:
        super().__init__("a", home=home, python=sys.executable)
        self.fail_first, self.calls = fail_first, 0

    def stream(self, argv, *, on_stdout=None, on_stderr=None, **kw) -> int:
        self.calls += 1
        if self.fail_first and self.calls == 1:
            out = bytearray()
            super().stream(argv, on_stdout=out.extend, **kw)
            on_stdout(bytes(out[:700]))  # the connection dropped mid-archive
            return -1
        return super().stream(argv, on_stdout=on_stdout, on_stderr=on_stderr, **kw)

def fetch_locally(tmp_path, runner, run_id=RUN_ID, **kw):
    cluster = parse_inventory(INVENTORY)
    nodes = Nodes(cluster, runners={"a": runner, "b": runner})
    return fetching.fetch(cluster, nodes, run_id, exit_code_of=driver.exit_code_of, **kw)


def test_a_detached_run_fetched_later_lands_in_history_with_its_exit_code(state, tmp_path):
    rd = head_run(tmp_path / "home")
    (rd / C.OUTPUT_DIR / "metrics.json").write_text('{"auc": 0.9}')
    history.save(record(RUN_ID, detached=True, started=1.0))
    notes = []
    got = fetch_locally(tmp_path, HeadRunner(tmp_path / "home", fail_first=True), note=notes.append)
    assert any("retrying once" in n for n in notes)  # the one retry
    home = state / "demo" / "runs" / RUN_ID
    assert (home / "output" / "metrics.json").read_text() == '{"auc": 0.9}'
    assert (home / "driver.log").read_bytes().endswith(b"RESULT auc=0.9\n")
    rec = history.load("demo", RUN_ID)
    assert rec.exit_code == 0 and rec.fetched and rec.outputs["files"] == 1 and rec.duration is not None
    assert not (home / ".incoming").exists() and not (home / ".incoming.tar").exists()
    # again: idempotent, the outputs replaced whole
    (rd / C.OUTPUT_DIR / "metrics.json").unlink()
    (rd / C.OUTPUT_DIR / "later.txt").write_text("2")
    fetch_locally(tmp_path, HeadRunner(tmp_path / "home"))
    assert sorted(p.name for p in (home / "output").iterdir()) == ["later.txt"]
    assert got.output_dir == home / "output"


def test_a_run_gone_from_the_head_fetched_before_is_no_error_never_fetched_is(state, tmp_path):
    (tmp_path / "home").mkdir()
    with pytest.raises(SfclusterError, match="is not on a"):
        fetch_locally(tmp_path, HeadRunner(tmp_path / "home"))
    assert history.list_runs("demo") == []  # a failed fetch leaves no empty entry behind
    history.save(record(RUN_ID, fetched=time.time(), outputs={"files": 1}))
    notes = []
    got = fetch_locally(tmp_path, HeadRunner(tmp_path / "home"), note=notes.append)
    assert got.record.fetched and "fetched before" in notes[0]


# -- cleanup on the head ----------------------------------------------------------------------------
DAY = 86400


@pytest.mark.parametrize("runs, keep, expect", [
    # (run id, age in s, fetched, started)
    ([("20261201-000000-00000%d" % i, 100, True, True) for i in range(8)], 5,
     ["20261201-000000-000002", "20261201-000000-000001", "20261201-000000-000000"]),
    ([("20261201-000000-000001", 100, False, True), ("20261201-000000-000002", 100, True, True)], 1, []),
    ([("20261201-000000-000001", 8 * DAY, False, True), ("20261201-000000-000002", 100, True, True)], 1,
     ["20261201-000000-000001"]),
    ([("20261201-000000-000001", 7200, False, False), ("20261201-000000-000003", 60, False, False),
      ("20261201-000000-000002", 100, True, True)], 1, ["20261201-000000-000002", "20261201-000000-000001"]),
    ([("20261201-000000-000001", 100, True, True)], 0, []),  # the newest always stays
])
def test_run_cleanup_plan_keeps_the_newest_and_the_unfetched(runs, keep, expect):
    now = 10 * DAY
    plan = planners()["plan_run_cleanup"]([(r, now - age, f, s) for r, age, f, s in runs], keep, 7 * DAY, now)
    assert plan == expect


def test_session_cleanup_plan_never_touches_the_live_or_a_used_session():
    s = ["session_2026-12-01_06-0%d-00_000000_1" % i for i in range(6)]
    plan = planners()["plan_session_cleanup"](s, live=s[1], in_use={s[0]}, keep=2)
    assert plan == [s[3], s[2]]  # s[5], s[4]: the newest two others stay
    assert planners()["plan_session_cleanup"](s[:2], live=s[1], in_use=set(), keep=0) == [s[0]]


def test_clean_on_a_node_removes_old_run_and_session_dirs_and_follows_no_link(tmp_path):
    home = tmp_path / "home"
    ids = ["20261201-0000%02d-aaaaaa" % i for i in range(8)]
    for rid in ids:
        rd = head_run(home, rid) if rid == ids[0] else None
        if rd is None:
            rd = home / ".sfcluster" / "demo" / "runs" / rid
            rd.mkdir(mode=0o700)
            (rd / C.LOG_NAME).write_text("x")
        (rd / C.FETCHED_MARK).write_text("")
    unfetched = home / ".sfcluster" / "demo" / "runs" / ids[1]
    (unfetched / C.FETCHED_MARK).unlink()
    temp = Path("/tmp/sfc-unit_%d/r" % os.getpid())
    sessions = ["session_2026-12-01_06-0%d-00_000000_1" % i for i in range(5)]
    try:
        temp.parent.mkdir(mode=0o700)
        temp.mkdir()
        for s in sessions:
            (temp / s).mkdir()
            (temp / s / "logs").mkdir()
        (temp / "session_latest").symlink_to(temp / sessions[0])  # the live one is the OLDEST name here
        victim = tmp_path / "victim"
        victim.mkdir()
        (victim / "keep.txt").write_text("mine")
        (temp / "session_2026-11-01_00-00-00_000000_1").symlink_to(victim)  # planted by someone
        req = {"cluster": "demo", "action": "clean", "fetched": ids[-1], "keep_runs": 5, "max_age": 7 * DAY,
               "temp_dir": str(temp), "keep_sessions": 2}
        p = subprocess.run([sys.executable, "-c", bundle("run_files"), json.dumps(req)], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, SFCLUSTER_NODE_HOME=str(home)))
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out["cleaned"] and out["runs_removed"] == [ids[0], ids[2]]  # ids[1] was never fetched
        left = sorted(os.listdir(home / ".sfcluster" / "demo" / "runs"))
        assert left == [ids[1]] + ids[3:]
        assert sorted(os.listdir(temp)) == sorted(["session_latest", "session_2026-11-01_00-00-00_000000_1",
                                                   sessions[0], sessions[3], sessions[4]])
        assert (victim / "keep.txt").read_text() == "mine"
        assert out["sessions_removed"] == [sessions[2], sessions[1]]
    finally:
        import shutil
        shutil.rmtree(temp.parent, ignore_errors=True)


def test_clean_skips_while_the_cluster_lock_is_held(tmp_path):
    import fcntl
    home = tmp_path / "home"
    head_run(home)
    fd = os.open(home / ".sfcluster" / "demo", os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        req = {"cluster": "demo", "action": "clean", "fetched": RUN_ID, "keep_runs": 0, "max_age": 0,
               "temp_dir": "/tmp/sfc-demo", "keep_sessions": 0}
        p = subprocess.run([sys.executable, "-c", bundle("run_files"), json.dumps(req)], capture_output=True,
                           text=True, timeout=60, env=dict(os.environ, SFCLUSTER_NODE_HOME=str(home)))
        out = json.loads(p.stdout.strip().splitlines()[-1])
        assert out == {"cleaned": False, "why": "the cluster lock is held (a run, an up or a down): cleaned next time"}
    finally:
        os.close(fd)


# -- the archive's shape: entries and depth are bounded, refused whole, nothing left behind -------------
def tar_file(path: Path, names, data: bytes = b"x") -> Path:
    """A tar of tiny regular files (PAX: long names whole), written as the head writes one."""
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_an_archive_of_more_entries_than_the_limit_is_refused_whole(tmp_path):
    names = [f"output/f{i:05d}" for i in range(history.MAX_ENTRIES + 1)]
    src = tar_file(tmp_path / "in.tar", names)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(history.UnsafeArchive, match=f"run {RUN_ID}.*more than {history.MAX_ENTRIES} entries"):
        history.extract(src, dest, 1 << 30, run_id=RUN_ID)
    assert list(dest.iterdir()) == []  # refused whole: not the first 10,000 and then an error


def test_an_archive_at_the_entry_limit_is_unpacked(tmp_path, monkeypatch):
    monkeypatch.setattr(history, "MAX_ENTRIES", 60)  # 10,000 tiny files take seconds on a shared machine
    names = [f"output/d{i % 7}/f{i:05d}" for i in range(history.MAX_ENTRIES - 2)] + [C.LOG_NAME, C.RESULT_NAME]
    src = tar_file(tmp_path / "in.tar", names)
    dest = tmp_path / "dest"
    dest.mkdir()
    history.extract(src, dest, 1 << 30, run_id=RUN_ID)
    assert sum(1 for p in dest.rglob("*") if p.is_file()) == history.MAX_ENTRIES
    assert (dest / "output" / "d3" / "f00003").read_bytes() == b"x"


@pytest.mark.parametrize("levels", [history.MAX_DEPTH, 1500])
def test_a_path_deeper_than_the_limit_is_refused_clearly_not_with_a_recursion_error(tmp_path, levels):
    deep = "output/" + "d/" * levels + "f.txt"
    src = tar_file(tmp_path / "in.tar", ["output/ok.txt", deep])
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(history.UnsafeArchive, match=f"run {RUN_ID}.*deeper than {history.MAX_DEPTH}"):
        history.extract(src, dest, 1 << 30, run_id=RUN_ID)
    assert list(dest.iterdir()) == []


def test_a_path_at_the_depth_limit_and_a_normal_archive_are_unpacked(tmp_path):
    deep = "output/" + "d/" * (history.MAX_DEPTH - 2) + "f.txt"  # MAX_DEPTH components in all
    src = tar_file(tmp_path / "in.tar", ["output/metrics.json", "output/model/w.npy", deep, C.LOG_NAME])
    dest = tmp_path / "dest"
    dest.mkdir()
    history.extract(src, dest, 1 << 30, run_id=RUN_ID)
    assert (dest / deep).read_bytes() == b"x" and (dest / "output" / "model" / "w.npy").is_file()
    assert stat_mode(dest / "output" / "model") == 0o700 and stat_mode(dest / C.LOG_NAME) == 0o600


def stat_mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


@pytest.mark.parametrize("names, why", [
    (["output/a", "output/a"], "twice"),
    (["output/a", "output/a/b"], "twice"),
])
def test_an_archive_that_names_a_path_twice_is_refused_whole(tmp_path, names, why):
    src = tar_file(tmp_path / "in.tar", names)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(history.UnsafeArchive, match=why):
        history.extract(src, dest, 1 << 30, run_id=RUN_ID)
    assert list(dest.iterdir()) == []


def test_a_fetch_refused_for_its_shape_names_the_run_and_leaves_nothing(state, tmp_path, monkeypatch):
    rd = head_run(tmp_path / "home")
    (rd / C.OUTPUT_DIR / "a.txt").write_text("1")
    (rd / C.OUTPUT_DIR / "b.txt").write_text("2")
    monkeypatch.setattr(history, "MAX_ENTRIES", 3)  # a.txt, b.txt, the log and the result: 4
    monkeypatch.setattr(fetching, "MAX_FILES", 100)  # the head is asked for more than we take: it lies
    with pytest.raises(history.UnsafeArchive, match=f"run {RUN_ID}.*more than 3 entries"):
        fetch_locally(tmp_path, HeadRunner(tmp_path / "home"))
    assert not (state / "demo" / "runs" / RUN_ID).exists()


def test_the_head_refuses_more_output_files_than_the_controller_takes_whole_and_the_log_still_comes(tmp_path):
    rd = head_run(tmp_path / "home")
    for i in range(5):
        (rd / C.OUTPUT_DIR / f"f{i}").write_text("x")
    p = node_fetch(tmp_path / "home", {"max_files": 4})
    s = summary_of(p)
    assert "5 files, above the limit of 4 files" in s["refused"]
    assert s["files"] == 0 and set(names_in(p)) == {C.LOG_NAME, C.RESULT_NAME}


class Unreachable(HeadRunner):
    """A head whose SSH connection cannot be made."""

    def stream(self, argv, **kw) -> int:
        self.calls += 1
        raise ConnectError("a", "ssh", "connection refused")


def test_fetch_from_a_head_that_cannot_be_reached_exits_69_at_once_and_leaves_no_entry(state, tmp_path):
    runner = Unreachable(tmp_path / "home")
    t0 = time.monotonic()
    with pytest.raises(ConnectError) as ei:
        fetch_locally(tmp_path, runner)
    assert ei.value.exit_code == Exit.UNAVAILABLE and str(ei.value).startswith("[a]")
    assert runner.calls == 1 and time.monotonic() - t0 < fetching.RETRY_PAUSE  # no retry against a dead head
    assert not (state / "demo" / "runs" / RUN_ID).exists()  # no empty entry in `runs`
