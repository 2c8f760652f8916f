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
