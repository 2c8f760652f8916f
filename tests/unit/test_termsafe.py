"""Text from a node (lock info, output file names, a driver's output) reaches the operator's
terminal as visible escapes, never as terminal control, and never as rich markup."""
from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from sfcluster import api, termsafe
from sfcluster.cli import common
from sfcluster.cli import lifecycle as cli_lifecycle
from sfcluster.cli import run as cli_run
from sfcluster.cli.main import cli
from sfcluster.clusterlock import held_error
from sfcluster.nodescripts.answers import LockHolder
from sfcluster.nodescripts import contract as C
from sfcluster.run import driver, history
from sfcluster.run import fetch as fetching

PWN = "\x1b]0;pwned\x07\x1b[2J"            # OSC: set the window title; CSI: clear the screen
SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J"        # what the operator sees instead
RUN_ID = "20261201-061500-a1b2c3"
INVENTORY = "cluster: demo\nnodes: {a: {host: 10.0.0.1}, b: {host: 10.0.0.2}}\n"


@pytest.mark.parametrize("raw, shown", [
    (PWN, SHOWN),
    ("a\tb\nc", "a\tb\nc"),                       # tab and newline are text
    ("over\rwrite", "over\\x0dwrite"),
    ("\x9b2J\x9d0;t\x9c", "\\x9b2J\\x9d0;t\\x9c"),  # C1: CSI and OSC in one character
    ("del\x7f bell\x07 nul\x00", "del\\x7f bell\\x07 nul\\x00"),
    ("训练 données [bold]x[/]", "训练 données [bold]x[/]"),
])
def test_visible_writes_control_characters_out(raw, shown):
    assert termsafe.visible(raw) == shown


def test_the_stream_filter_keeps_text_whole_across_chunks_and_escapes_the_rest():
    f = termsafe.StreamFilter()
    word = "训练".encode()
    got = f(b"epoch 1\r" + word[:2]) + f(word[2:] + b" \x1b[2J\xff done\n") + f.flush()
    assert got.decode() == "epoch 1\r训练 \\x1b[2J\\xff done\n"
    assert termsafe.StreamFilter()(b"\xc2\x9b2J").decode() == "\\x9b2J"  # C1 in UTF-8


@pytest.fixture
def inv(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SFCLUSTER_STATE_DIR", str(tmp_path / "state"))
    p = tmp_path / "inv.yaml"
    p.write_text(INVENTORY)

    @contextmanager
    def no_nodes(*a, **kw):  # nothing here may connect anywhere
        yield object()
    for mod in (cli_run, api):  # the commands' connections: the API's (run, status, fetch), the CLI's (logs)
        monkeypatch.setattr(mod, "Nodes", no_nodes)
    return p


def holder(**kw) -> dict:
    return dict({"op": "run", "run_id": RUN_ID, "script": f"train.py{PWN}", "user": f"[bold]mallory[/]{PWN}",
                 "controller": "laptop", "since": "10:00", "verified": True}, **kw)


def assert_safe(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, repr(text)
    assert SHOWN in text


def test_a_lock_holder_named_by_run_shows_no_escape_and_no_markup(inv, monkeypatch):
    def locked(cluster, nodes, opts, out, err, note):
        raise held_error(cluster, LockHolder.parse(holder()), "run")
    monkeypatch.setattr(driver, "run", locked)
    script = inv.parent / "train.py"
    script.write_text("print(1)\n")
    r = CliRunner().invoke(cli, ["run", "-i", str(inv), str(script)])
    assert r.exit_code == 75, r.output
    assert_safe(r.output)
    assert "[bold]mallory[/]" in r.output


def test_a_lock_holder_in_status_shows_no_escape(inv, monkeypatch):
    st = {"cluster": "demo", "health": "healthy", "nodes": [], "problems": [],
          "drivers": [{"driver_ip": f"[red]10.0.0.9{PWN}", "driver_pid": 7, "sanctioned": False,
                       "entrypoint": f"python evil.py{PWN}"}],
          "lock": {"held": True, "text": LockHolder.parse(holder(verified=False, why=f"gone{PWN}")).text()}}
    monkeypatch.setattr(cli_lifecycle.lifecycle, "status", lambda c, n: st)
    r = CliRunner().invoke(cli, ["status", "-i", str(inv)])
    assert r.exit_code == 0, r.output
    assert_safe(r.output)
    assert "driver: [red]10.0.0.9" in r.output and "cluster lock: held by run" in r.output


def test_an_output_file_name_in_the_fetch_message_shows_no_escape(inv, monkeypatch):
    home = inv.parent / "state" / "demo" / "runs" / RUN_ID
    home.mkdir(parents=True)
    rec = history.RunRecord(run_id=RUN_ID, cluster="demo", script="train.py")
    got = fetching.Fetched(rec, home, {"files": 1, "bytes": 3, "skipped": [[f"evil{PWN}.txt", "a symbolic link"]],
                                       "refused": ""})
    monkeypatch.setattr(fetching, "fetch", lambda *a, **kw: got)
    monkeypatch.setattr(fetching, "clean_head", lambda *a, **kw: {})
    r = CliRunner().invoke(cli, ["fetch", "-i", str(inv), RUN_ID])
    assert r.exit_code == 0, r.output
    assert_safe(r.output)
    assert f"skipped output/evil{SHOWN}.txt" in r.output


def test_the_drivers_output_reaches_the_terminal_escaped_and_its_log_stays_raw(inv, monkeypatch):
    def fake_run(cluster, nodes, opts, out, err, note):
        out(f"epoch 1{PWN}\n".encode()[:9])  # split inside the escape sequence
        out(f"epoch 1{PWN}\n".encode()[9:])
        err(b"warn \x9b31m\n")
        note(f"the driver said {PWN}")
        return 0
    monkeypatch.setattr(driver, "run", fake_run)
    script = inv.parent / "train.py"
    script.write_text("print(1)\n")
    r = CliRunner().invoke(cli, ["run", "-i", str(inv), str(script)])
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == f"epoch 1{SHOWN}\n".encode()
    assert b"\x1b" not in r.stderr_bytes and b"\x9b" not in r.stderr_bytes and b"warn \\x9b31m" in r.stderr_bytes


def test_logs_of_a_past_run_print_escaped(inv):
    home = inv.parent / "state" / "demo" / "runs" / RUN_ID
    home.mkdir(parents=True)
    (home / C.LOG_NAME).write_bytes(f"tick{PWN}\n".encode())
    history.save(history.RunRecord(run_id=RUN_ID, cluster="demo", script="train.py", exit_code=0, fetched=1.0))
    r = CliRunner().invoke(cli, ["logs", "-i", str(inv), RUN_ID])
    assert r.exit_code == 0, r.output
    assert r.output == f"tick{SHOWN}\n"
    assert (home / C.LOG_NAME).read_bytes() == f"tick{PWN}\n".encode()  # kept as the head sent it


def test_on_a_terminal_rich_still_styles_but_node_text_cannot_steer_it():
    buf = io.StringIO()
    console = common.SafeConsole(file=buf, force_terminal=True, highlight=False, emoji=False)
    console.print(f"[bold red]error:[/] locked by {common.escape('[blink]x[/] :smile:' + PWN)}")
    out = buf.getvalue()
    assert "\x1b[1;31m" in out                      # our own style
    assert "\x1b]0;" not in out and "\x1b[2J" not in out and SHOWN in out
    assert "[blink]x[/] :smile:" in out              # literal: no markup, no emoji


def test_the_clis_consoles_are_safe_ones():
    assert isinstance(common.console, common.SafeConsole) and isinstance(common.err_console, common.SafeConsole)


def test_a_check_table_cell_from_a_node_shows_no_escape(capsys):
    from sfcluster.cli.check import render
    from sfcluster.doctor import Report, Status
    report = Report()
    report.add("carol", "ports", Status.FAIL, f"port 6379 held by pid 9 ({PWN}) [red]", f"kill [it]{PWN}")
    render(report)
    out = capsys.readouterr().out
    assert_safe(out)
    assert "[red]" in out and "kill [it]" in out
