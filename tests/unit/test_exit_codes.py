"""One exit-code table for every command (sfcluster.exitcodes), and one JSON object on every
outcome with --json. Everything here runs without SSH: an invalid inventory stops before it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sfcluster.exitcodes import MEANING, Exit
from sfcluster.run.driver import STOPPED_EXIT, outcome

SFC = [sys.executable, "-m", "sfcluster.cli.main"]


def sfc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SFC, *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **(env or {})))


BAD = "cluster: demo\nnodes:\n  alice: {host: 10.0.0.1, spu_port: twenty}\n  bob: {host: 10.0.0.2}\n"


def test_codes_are_distinct_and_sfclusters_own_are_in_the_sysexits_range():
    codes = [int(c) for c, _ in MEANING]
    assert len(codes) == len(set(codes)) and set(codes) == {int(c) for c in Exit}
    own = set(codes) - {0, 1, 2, 130}
    assert own and all(64 <= c <= 78 for c in own)
    assert (Exit.CONFIG, Exit.LOCKED, Exit.UNAVAILABLE) == (78, 75, 69)


def test_help_shows_the_table_and_the_environment():
    out = sfc("--help").stdout
    for code, text in MEANING:
        assert f"{int(code):>3}  {text}" in out
    assert "SFCLUSTER_INVENTORY" in out and "_SFCLUSTER_COMPLETE=bash_source" in out
    assert "env var: SFCLUSTER_INVENTORY" in " ".join(sfc("check", "--help").stdout.split())


def test_usage_error_is_2_and_only_click_uses_it():
    assert sfc("up", "--no-such-flag").returncode == 2
    assert Exit.USAGE == 2 and all(int(c) != 2 for c in STOPPED_EXIT.values())


@pytest.mark.parametrize("command", [["check"], ["up"], ["status"], ["down"], ["config"]])
def test_invalid_inventory_is_78_with_one_json_object_naming_path_and_line(command, tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(BAD)
    p = sfc(*command, "-i", str(inv), "--json")
    assert p.returncode == 78, p.stderr
    data = json.loads(p.stdout)  # one object, nothing else on stdout
    assert data["ok"] is False and data["exit_code"] == 78
    assert data["problems"] == [{"path": "nodes.alice.spu_port", "line": 3,
                                 "message": "expected an integer, got 'twenty'"}]
    assert "nodes.alice.spu_port (line 3)" in p.stderr


@pytest.mark.parametrize("command", [["run", "x.py"], ["logs"], ["cancel"]])
def test_invalid_inventory_is_78_for_commands_without_json(command, tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(BAD)
    (tmp_path / "x.py").write_text("print(1)\n")
    p = subprocess.run([*SFC, command[0], "-i", str(inv), *[str(tmp_path / a) for a in command[1:]]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 78 and "nodes.alice.spu_port (line 3)" in p.stderr


def test_inventory_from_the_environment(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(BAD)
    p = sfc("config", "--json", env={"SFCLUSTER_INVENTORY": str(inv)})
    assert p.returncode == 78 and json.loads(p.stdout)["problems"][0]["line"] == 3


def test_config_json_carries_ok_and_exit_code(tmp_path):
    inv = tmp_path / "inv.yaml"
    inv.write_text(BAD.replace("spu_port: twenty", "spu_port: 20100"))
    data = json.loads(sfc("config", "-i", str(inv), "--json").stdout)
    assert data["ok"] is True and data["exit_code"] == 0 and data["cluster"] == "demo"


# -- run: the driver's own code only when it ended by itself ---------------------------------------
def _ctl(code: int, kind: str = "", why: str = "") -> dict:
    return {"STARTED": "{}", "EXIT": json.dumps({"code": code, "kind": kind, "why": why})}


@pytest.mark.parametrize("driver_code", [0, 1, 3, 75, 78])
def test_run_passes_the_drivers_code_through_when_it_ended_by_itself(driver_code):
    notes: list = []
    assert outcome(_ctl(driver_code), 0, False, notes.append) == driver_code
    assert notes == []


@pytest.mark.parametrize("kind,code", [("node_lost", 74), ("foreign_driver", 76), ("starved", 70),
                                       ("cancelled", 130), ("controller_gone", 130)])
def test_run_stopped_by_sfcluster_exits_with_its_own_code_and_says_why_last(kind, code):
    notes: list = []
    # the driver died of the SIGINT we sent: its own code (1, a KeyboardInterrupt) must not leak
    assert outcome(_ctl(1, kind, f"because {kind}"), 1, False, notes.append) == code
    assert len(notes) == 1 and f"because {kind}" in notes[0] and "run stopped by sfcluster" in notes[0]


def test_run_without_an_exit_word_from_the_head_is_unavailable():
    notes: list = []
    assert outcome({"STARTED": "{}"}, -1, False, notes.append) == Exit.UNAVAILABLE and notes
