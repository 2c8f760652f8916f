"""What the CLI prints: node names in brackets are text, never eaten as rich markup."""
from __future__ import annotations

import pytest

from sfcluster.cli.check import render
from sfcluster.cli.common import handle_errors
from sfcluster.doctor import Report, Status
from sfcluster.errors import RemoteError


def test_error_keeps_the_node_name_and_brackets(capsys):
    @handle_errors
    def boom() -> None:
        raise RemoteError("alice", "ray start", "`ray start` exited 1: [red] is not a colour here",
                          "see [the log] on alice")

    with pytest.raises(SystemExit) as e:
        boom()
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "[alice] `ray start` exited 1: [red] is not a colour here" in err
    assert "see [the log] on alice" in err


def test_check_table_keeps_bracketed_detail(capsys):
    report = Report()
    report.add("carol", "ssh", Status.FAIL, "[carol] SSH to sfops@10.0.0.3:2222 failed", "check [sshd]")
    render(report)
    out = capsys.readouterr().out
    assert "[carol] SSH to" in out and "check [sshd]" in out


# -- Off a terminal, output is never wrapped or cut at a guessed width (COLUMNS included) ---------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

LONG = "a-detail-that-is-much-longer-than-forty-columns " * 4


def _piped(code: str, columns: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("columns", [None, "40", "20"])
def test_table_rows_are_one_line_with_every_cell_whole_when_piped(columns):
    p = _piped(
        "from sfcluster.cli.check import render\n"
        "from sfcluster.doctor import Report, Status\n"
        "r = Report()\n"
        f"r.add('carol', 'firewall', Status.FAIL, {LONG!r}, 'run `sfcluster up` again to add them all')\n"
        "r.add('alice', 'ssh', Status.OK, 'root@alice, host key verified')\n"
        "render(r)\n", columns)
    assert p.returncode == 0, p.stderr
    row = [line for line in p.stdout.splitlines() if "carol" in line]
    assert len(row) == 1, p.stdout
    assert LONG.strip() in row[0] and "run `sfcluster up` again to add them all" in row[0]
    assert "…" not in p.stdout


@pytest.mark.parametrize("columns", [None, "40"])
def test_messages_are_one_line_when_piped(columns, tmp_path):
    bad = tmp_path / "inv.yaml"
    bad.write_text("cluster: demo\nnodes:\n  alice: {host: 10.0.0.1, python_interpreter_path_that_is_long: x}\n"
                   "  bob: {host: 10.0.0.2}\n")
    p = _piped("from sfcluster.cli.main import main; import sys; sys.argv = ['sfcluster', 'check', '-i', "
               f"{str(bad)!r}]; main()", columns)
    assert p.returncode == 78, p.stderr
    line = [x for x in p.stderr.splitlines() if "python_interpreter_path_that_is_long" in x]
    assert len(line) == 1 and line[0].strip().startswith("nodes.alice.python_interpreter_path_that_is_long (line 3): "
                                                         "unknown key 'python_interpreter_path_that_is_long' (allowed:")
    assert line[0].rstrip().endswith(")"), line  # the list of allowed keys is whole, on that line
