"""Promises of the README that a newcomer tripped over (issue 19), each kept: sfcluster's options
go before the script and an unknown one is a usage error; `runs` with no history says so;
`config` before any `up` says where its TLS paths come from; a data path relative to nothing is
the loader's error, with its YAML path and line, before any SSH."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sfcluster.cli.run import run_cmd
from sfcluster.errors import InventoryError
from sfcluster.inventory import parse_inventory

INV = "cluster: c\nnodes:\n  alice: {host: 10.0.0.1}\n  bob: {host: 10.0.0.2}\n"


def cli(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sfcluster.cli.main", *args], capture_output=True, text=True,
                          env=dict(os.environ, SFCLUSTER_STATE_DIR=str(tmp_path / "state")), timeout=60)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "inv.yaml").write_text(INV)
    (tmp_path / "s.py").write_text("")
    return tmp_path


@pytest.mark.parametrize("argv, script, args, detach", [
    (["s.py", "--", "--epochs", "3"], "s.py", ("--epochs", "3"), False),   # the README's form
    (["s.py", "--epochs", "3"], "s.py", ("--epochs", "3"), False),         # without `--`
    (["--detach", "s.py", "--detach"], "s.py", ("--detach",), True),       # after SCRIPT: the script's
])
def test_what_follows_the_script_is_the_scripts(files, argv, script, args, detach, monkeypatch):
    monkeypatch.chdir(files)
    ctx = run_cmd.make_context("run", list(argv))
    got = tuple(ctx.params["args"])
    assert ctx.params["script"] == script and ctx.params["detach"] is detach
    assert (got[1:] if got[:1] == ("--",) else got) == args


def test_an_unknown_option_before_the_script_is_a_usage_error(files):
    p = cli(files, "run", "-i", str(files / "inv.yaml"), "--detatch", str(files / "s.py"))
    assert p.returncode == 2 and "No such option --detatch" in p.stderr.replace("'", ""), p.stderr
    p = cli(files, "run", "-i", str(files / "inv.yaml"), "--json", str(files / "s.py"))
    assert p.returncode == 2 and "--json" in p.stderr and "does not exist" not in p.stderr, p.stderr


def test_runs_without_history_says_there_are_none(files):
    p = cli(files, "runs", "-i", str(files / "inv.yaml"))
    assert p.returncode == 0 and "no runs of cluster c yet" in p.stdout, p.stdout


def test_config_before_up_says_the_tls_paths_come_with_up(files):
    p = cli(files, "config", "-i", str(files / "inv.yaml"), "--json")
    assert p.returncode == 0 and '"tls_opts"' not in p.stdout
    assert "tls: on, but this controller has not brought alice, bob up" in p.stderr, p.stderr


def test_a_relative_data_path_is_the_loaders_error():
    with pytest.raises(InventoryError) as ei:
        parse_inventory(INV.replace("alice: {host: 10.0.0.1}", "alice: {host: 10.0.0.1, data: {bc: alice.csv}}"))
    assert "nodes.alice.data.bc (line 3): expected an absolute path on alice's node, got 'alice.csv'" in str(ei.value)


@pytest.mark.parametrize("args, says", [
    (["status", "--jsn", "--json"], "Did you mean '--json'"),
    (["data", "push", "--json", "bob"], "Missing argument 'NAME'"),
    (["check", "--json", "--party"], "requires an argument"),
])
def test_a_usage_error_asked_for_json_prints_its_one_json_object(tmp_path, args, says):
    p = cli(tmp_path, *args)
    assert p.returncode == 2, p.stderr
    got = json.loads(p.stdout)
    assert got["ok"] is False and got["exit_code"] == 2 and says in got["error"] and "--help" in got["fix"], got
    assert "Error:" in p.stderr  # and the terminal still gets click's own message


def test_a_usage_error_without_json_prints_no_json_and_a_script_s_json_flag_is_the_script_s(tmp_path, files):
    p = cli(tmp_path, "status", "--jsn")
    assert p.returncode == 2 and p.stdout == "" and "No such option" in p.stderr
    p = cli(tmp_path, "run", "--json", str(files / "s.py"))  # run has no --json: a usage error, no JSON
    assert p.returncode == 2 and p.stdout == "", p.stdout


def test_the_exit_code_table_is_shown_once_in_sfcluster_help(tmp_path):
    top = cli(tmp_path, "--help")
    assert top.returncode == 0 and "Exit codes" in top.stdout and "run refused or stopped" in top.stdout
    for cmd in (["status"], ["run"], ["data", "push"], ["up"]):
        p = cli(tmp_path, *cmd, "--help")
        assert p.returncode == 0 and "run refused or stopped" not in p.stdout, cmd
        assert "Exit codes: `sfcluster --help`" in p.stdout, (cmd, p.stdout[-500:])


def test_sudo_asking_for_a_password_is_77_whichever_path_finds_it():
    from sfcluster.doctor.checks import Report, Status
    from sfcluster.exitcodes import Exit
    from sfcluster.lifecycle import PreflightFailed

    r = Report()
    r.add("bob", "ssh", Status.OK, "")
    assert r.exit_code == Exit.OK
    r.add("bob", "sudo", Status.FAIL, "user sfops needs root for firewall rules but `sudo -n` asks for a password")
    assert r.exit_code == Exit.NO_PRIVILEGE == PreflightFailed(r).exit_code  # check, and up's preflight: as --skip-check
    r.add("carol", "ports_free", Status.FAIL, "port 6379 is in use")
    assert r.exit_code == Exit.PREFLIGHT == PreflightFailed(r).exit_code  # more than that: a preflight failure


def test_a_party_or_data_name_the_inventory_lacks_is_78_before_any_connection(tmp_path, files):
    for args, says in ((["mallory", "x"], "no party 'mallory'"), (["bob", "iris"], "party bob has no data named 'iris'")):
        p = cli(tmp_path, "data", "push", "-i", str(files / "inv.yaml"), *args, str(files / "s.py"), "--json")
        assert p.returncode == 78 and says in json.loads(p.stdout)["error"], p.stdout + p.stderr
