"""`sfcluster ssh`, `exec` and `dashboard`: the ssh argv (a table, then the real OpenSSH client
against a loopback sshd, host keys checked on every hop), exec's lines, exit codes and JSON (fake
runners, then real SSH and a real shell), and the dashboard tunnel (a real HTTP GET through real
SSH, bound to 127.0.0.1 only, ended by Ctrl-C)."""
from __future__ import annotations

import http.server
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from click.testing import CliRunner

from sfcluster.cli import ops
from sfcluster.cli.main import cli
from sfcluster.connect import Nodes
from sfcluster.errors import ConnectError, UnavailableError
from sfcluster.remote.adhoc import prefixed
from sfcluster.remote.ssh import SshTarget
from sfcluster.remote.ssh_argv import as_user_command, parse_jump, proxy_command, ssh_argv
from sfcluster.remote.tunnel import LocalTunnel
from tests.unit.loopback_sshd import SHELL, LoopbackSshd

SRC = str(Path(__file__).resolve().parents[2] / "src")
TRUST = ["-o", "StrictHostKeyChecking=yes", "-o", "UpdateHostKeys=no"]
HAS_SSH = shutil.which("ssh") is not None


# -- the argv: a table ----------------------------------------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return str(tmp_path / "home")


@pytest.mark.parametrize("target, jump, remote, tty, want", [
    (SshTarget("10.0.0.5"), None, (), False,
     ["ssh", *TRUST, "-o", "ConnectTimeout=8", "--", "10.0.0.5"]),
    (SshTarget("10.0.0.5", user="ops", port=2222), None, (), False,
     ["ssh", *TRUST, "-o", "ConnectTimeout=8", "-p", "2222", "-l", "ops", "--", "10.0.0.5"]),
    (SshTarget("10.0.0.5", identity_file="~/.ssh/id_ed25519", known_hosts="~/kh", config_file="~/cfg"), None, (), False,
     ["ssh", "-F", "{home}/cfg", *TRUST, "-o", "UserKnownHostsFile={home}/kh", "-i", "{home}/.ssh/id_ed25519",
      "-o", "ConnectTimeout=8", "--", "10.0.0.5"]),
    (SshTarget("10.0.0.5", known_hosts="~/a /etc/kh"), None, (), False,   # several files, as the transport reads them
     ["ssh", *TRUST, "-o", "UserKnownHostsFile={home}/a /etc/kh", "-o", "ConnectTimeout=8", "--", "10.0.0.5"]),
    (SshTarget("10.0.0.5", user="root"), None, ("sh", "-c", "echo 'a b'; exit 3"), False,
     ["ssh", *TRUST, "-o", "ConnectTimeout=8", "-l", "root", "--", "10.0.0.5", "sh -c 'echo '\"'\"'a b'\"'\"'; exit 3'"]),
    (SshTarget("10.0.0.5", user="ops"), None, as_user_command("sfray", []), True,
     ["ssh", *TRUST, "-o", "ConnectTimeout=8", "-l", "ops", "-t", "--", "10.0.0.5", "sudo -u sfray -i"]),
    (SshTarget("10.0.0.5", known_hosts="/k%h/kh", identity_file="/k%h/id"), None, (), False,  # % is literal
     ["ssh", *TRUST, "-o", "UserKnownHostsFile=/k%%h/kh", "-o", "IdentityFile=/k%%h/id", "-o", "ConnectTimeout=8",
      "--", "10.0.0.5"]),
])
def test_ssh_argv_table(home, target, jump, remote, tty, want):
    assert ssh_argv(target, jump=jump, remote=remote, tty=tty) == [w.replace("{home}", home) for w in want]


def test_a_remote_command_is_one_word_that_splits_back_into_its_argv():
    cmd = ["printf", "%s|", "a b", "c'd", "$HOME", "*", ""]
    argv = ssh_argv(SshTarget("h"), remote=cmd)
    assert argv[-2:] == ["h", shlex.join(cmd)] and shlex.split(argv[-1]) == cmd


def test_the_jump_host_gets_the_same_trust_identity_and_config(home):
    target = SshTarget("10.0.0.5", user="sfops", port=2222, identity_file="~/id", known_hosts="~/kh",
                       config_file="~/cfg")
    argv = ssh_argv(target, jump="ops@bastion.example:2200")
    assert "-J" not in argv and not any(w.startswith("ProxyJump") for w in argv)
    [pc] = [w[len("ProxyCommand="):] for w in argv if w.startswith("ProxyCommand=")]
    inner = shlex.split(pc)
    assert inner == ["ssh", "-F", f"{home}/cfg", *TRUST, "-o", f"UserKnownHostsFile={home}/kh", "-i", f"{home}/id",
                     "-o", "ConnectTimeout=8", "-o", "ProxyJump=none", "-o", "ProxyCommand=none",
                     "-p", "2200", "-l", "ops", "-W", "[%h]:%p", "--", "bastion.example"]
    assert argv[-6:] == ["-p", "2222", "-l", "sfops", "--", "10.0.0.5"]  # the target's own user and port


def test_a_percent_in_a_path_survives_both_expansions_of_the_proxy_command():
    pc = proxy_command(SshTarget("h", known_hosts="/k%d/kh"), "bastion")
    assert "UserKnownHostsFile=/k%%%%d/kh" in pc and "'[%h]:%p'" in pc  # outer ssh: %%%% -> %%; inner: %% -> %


@pytest.mark.parametrize("spec, want", [
    ("bastion", (None, "bastion", None)),
    ("ops@bastion:2200", ("ops", "bastion", 2200)),
    ("ops@[fe80::1]:2222", ("ops", "fe80::1", 2222)),
    ("[::1]", (None, "::1", None)),
    ("fe80::1", (None, "fe80::1", None)),
])
def test_parse_jump(spec, want):
    assert parse_jump(spec) == want


@pytest.mark.parametrize("spec, says", [("a.example,b.example", "several hops"), ("bastion:ssh", "not a port")])
def test_a_jump_spec_we_cannot_honour_is_refused(spec, says):
    with pytest.raises(ConnectError, match=says):
        ssh_argv(SshTarget("h"), jump=spec)


@pytest.mark.skipif(not HAS_SSH, reason="no OpenSSH client")
def test_openssh_reads_the_argv_as_meant(tmp_path):
    """`ssh -G` prints the configuration it would connect with, without connecting."""
    (tmp_path / "cfg").write_text("Host *\n  StrictHostKeyChecking no\n  ProxyJump elsewhere\n")  # ours win
    target = SshTarget("10.0.0.5", user="sfops", port=2222, known_hosts=str(tmp_path / "kh"),
                       config_file=str(tmp_path / "cfg"))
    argv = ssh_argv(target, jump="ops@bastion:2200")
    got = subprocess.run([argv[0], "-G", *argv[1:]], capture_output=True, text=True, timeout=10)
    conf = dict(line.split(" ", 1) for line in got.stdout.splitlines() if " " in line)
    assert got.returncode == 0, got.stderr
    assert conf["stricthostkeychecking"] == "true" and conf["userknownhostsfile"] == str(tmp_path / "kh")
    assert (conf["user"], conf["port"], conf["hostname"]) == ("sfops", "2222", "10.0.0.5")
    assert conf["proxycommand"].startswith("ssh ") and "proxyjump" not in conf
    assert conf.get("batchmode", "no") == "no"


# -- an inventory on the loopback sshd ------------------------------------------------------------

@pytest.fixture
def sshd(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh keys or config of whoever runs the tests
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    s = LoopbackSshd(tmp_path, behaviour=SHELL)
    yield s
    s.stop()


def write_inventory(tmp_path: Path, sshd: LoopbackSshd, *, known: Optional[List[str]] = None,
                    dashboard: Optional[int] = None, extra: str = "", port: Optional[int] = None) -> Path:
    """alice and bob, both served by the loopback sshd (ssh alias 127.0.0.1)."""
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(line + "\n" for line in (known if known is not None else [sshd.known_hosts_line()])))
    inv = tmp_path / "inventory.yaml"
    inv.write_text("\n".join([
        "cluster: t",
        f"known_hosts: {kh}",
        f"ssh_config: {sshd.ssh_config}",
        "ray_user: sfray",
        f"ssh: {{user: tester, port: {port or sshd.port}, identity_file: {sshd.identity}, alias: 127.0.0.1}}",
        *([f"ports: {{dashboard: {dashboard}}}"] if dashboard else []),
        "nodes:",
        "  alice: {host: 10.0.0.1}",
        "  bob: {host: 10.0.0.2}",
        extra,
    ]) + "\n")
    return inv


def sfc(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC, SFCLUSTER_STATE_DIR=str(Path(os.environ["HOME"]) / "state"))
    return subprocess.run([sys.executable, "-m", "sfcluster.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL, **kw)


# -- ssh --------------------------------------------------------------------------------------------

@pytest.fixture
def exec_calls(monkeypatch):
    calls: List[List[str]] = []
    monkeypatch.setattr(ops.os, "execvp", lambda file, argv: calls.append([file, *argv]))
    return calls


def test_ssh_execs_ssh_with_the_inventorys_way_in(tmp_path, sshd, exec_calls):
    inv = write_inventory(tmp_path, sshd)
    r = CliRunner().invoke(cli, ["ssh", "-i", str(inv), "bob", "--", "sh", "-c", "echo 'a b'"])
    assert r.exit_code == 0, r.output
    [[file, *argv]] = exec_calls
    assert file == shutil.which("ssh") and argv[0] == "ssh"
    assert argv == ssh_argv(SshTarget("127.0.0.1", name="bob", user="tester", port=sshd.port,
                                      identity_file=str(sshd.identity), known_hosts=str(tmp_path / "known_hosts"),
                                      config_file=str(sshd.ssh_config)), remote=["sh", "-c", "echo 'a b'"])


def test_ssh_as_ray_is_a_login_shell_of_the_ray_user_on_a_terminal(tmp_path, sshd, exec_calls):
    inv = write_inventory(tmp_path, sshd)
    assert CliRunner().invoke(cli, ["ssh", "-i", str(inv), "--as-ray", "alice"]).exit_code == 0
    [[_, *argv]] = exec_calls
    assert argv[-4:] == ["-t", "--", "127.0.0.1", "sudo -u sfray -i"]


def test_ssh_to_a_party_the_inventory_lacks_is_78_and_nothing_runs(tmp_path, sshd, exec_calls):
    inv = write_inventory(tmp_path, sshd)
    r = CliRunner().invoke(cli, ["ssh", "-i", str(inv), "mallory"])
    assert r.exit_code == 78 and "no party 'mallory'" in r.output and not exec_calls


def test_ssh_without_an_ssh_client_says_what_to_install(tmp_path, sshd, exec_calls, monkeypatch):
    inv = write_inventory(tmp_path, sshd)
    monkeypatch.setattr(ops.shutil, "which", lambda name: None)
    r = CliRunner().invoke(cli, ["ssh", "-i", str(inv), "alice"])
    assert r.exit_code == 1 and "openssh-client" in r.output and not exec_calls


@pytest.mark.skipif(not HAS_SSH, reason="no OpenSSH client")
def test_the_real_ssh_client_gets_in_with_the_inventorys_known_hosts_only(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd)
    p = sfc("ssh", "-i", str(inv), "bob", "--", "printf", "%s|", "a b", "$HOME")
    assert p.returncode == 0 and p.stdout == "a b|$HOME|", p.stderr
    assert sshd.commands == [shlex.join(["printf", "%s|", "a b", "$HOME"])]
    # the same host with a known_hosts that lacks its key: refused, the command never runs
    inv = write_inventory(tmp_path, sshd, known=[])
    p = sfc("ssh", "-i", str(inv), "bob", "--", "touch", str(tmp_path / "ran"))
    assert p.returncode == 255 and "Host key verification failed" in p.stderr, p.stderr
    assert not (tmp_path / "ran").exists()


@pytest.mark.skipif(not HAS_SSH, reason="no OpenSSH client")
def test_the_jump_hosts_key_is_checked_against_the_same_known_hosts(tmp_path, sshd):
    (tmp_path / "jump").mkdir()
    jump = LoopbackSshd(tmp_path / "jump", behaviour=SHELL)
    jump.client_key = sshd.client_key  # one key for both hops, as the inventory's identity_file is
    try:
        extra = f"  carol: {{host: 10.0.0.3, ssh: {{proxy_jump: 'tester@127.0.0.1:{jump.port}'}}}}"
        inv = write_inventory(tmp_path, sshd, extra=extra, known=[sshd.known_hosts_line(), jump.known_hosts_line()])
        p = sfc("ssh", "-i", str(inv), "carol", "--", "echo", "through")
        assert p.returncode == 0 and p.stdout == "through\n", p.stderr
        assert jump.forwarded == [("127.0.0.1", sshd.port)]  # carol was reached through the jump host
        # the jump host missing from that file: refused at the jump, even though the target is known
        inv = write_inventory(tmp_path, sshd, extra=extra, known=[sshd.known_hosts_line()])
        p = sfc("ssh", "-i", str(inv), "carol", "--", "echo", "through")
        assert p.returncode == 255 and "Host key verification failed" in p.stderr and "through" not in p.stdout
    finally:
        jump.stop()


# -- exec: fake runners -----------------------------------------------------------------------------

class Scripted:
    """A Runner whose command prints what it is given and exits with `code` (or cannot connect)."""

    def __init__(self, name: str, out: bytes = b"", err: bytes = b"", code: int = 0, down: bool = False) -> None:
        self.name, self.user = name, "tester"
        self.out, self.err, self.code, self.down = out, err, code, down
        self.argv: Optional[List[str]] = None
        self.timeout: Optional[float] = None

    def stream(self, argv, *, on_stdout=None, on_stderr=None, timeout=None, **kw) -> int:
        if self.down:
            raise ConnectError(self.name, "", f"cannot reach tester@{self.name}:22: Connection refused",
                               "check the address, the sshd port and any firewall between")
        self.argv, self.timeout = list(argv), timeout
        for i in range(0, len(self.out), 3):  # in pieces: a line may be cut anywhere
            on_stdout(self.out[i:i + 3])
        on_stderr(self.err)
        return self.code

    def run(self, *a, **kw):
        raise AssertionError("exec streams")

    def close(self) -> None:
        pass


INV = "cluster: c\nnodes:\n  alice: {host: 10.0.0.1}\n  bob: {host: 10.0.0.2}\n  carol: {host: 10.0.0.3}\n"


def run_exec(tmp_path, monkeypatch, runners: Dict[str, Scripted], *args: str):
    inv = tmp_path / "inv.yaml"
    inv.write_text(INV)
    made: List[List[str]] = []

    def nodes(cluster, names=None):
        made.append(list(names))
        return Nodes(cluster, names, runners={n: runners[n] for n in names})
    monkeypatch.setattr(ops, "Nodes", nodes)
    return CliRunner().invoke(cli, ["exec", "-i", str(inv), *args]), made


def test_exec_prefixes_each_line_and_sums_up_each_node(tmp_path, monkeypatch):
    runners = {"alice": Scripted("alice", b"one\ntwo\r\nno newline", b"warn\n"), "bob": Scripted("bob", b"b\n")}
    r, made = run_exec(tmp_path, monkeypatch, runners, "alice", "bob", "--", "sh", "-c", "echo 'a b'")
    assert r.exit_code == 0, r.output
    assert made == [["alice", "bob"]]
    assert sorted(r.stdout.splitlines()) == ["[alice] no newline", "[alice] one", "[alice] two", "[bob] b"]
    assert "[alice] warn" in r.stderr and "alice: exit 0" in r.stderr and "bob: exit 0" in r.stderr
    assert runners["alice"].argv == ["sh", "-c", "echo 'a b'"] and runners["alice"].timeout == 600


def test_exec_shows_an_endless_line_in_bounded_pieces():
    from sfcluster.remote.adhoc import LONGEST_LINE, LineSplitter
    seen: List[str] = []
    lines = LineSplitter("p", False, lambda line, err: seen.append(line), keep=False)
    for _ in range(3):
        lines.feed(b"x" * LONGEST_LINE)
    lines.flush()
    assert "".join(line[len("[p] "):] for line in seen) == "x" * (3 * LONGEST_LINE) and len(seen) >= 2


def test_exec_writes_a_nodes_terminal_controls_out(tmp_path, monkeypatch):
    runners = {"alice": Scripted("alice", b"\x1b]0;pwned\x07\x1b[2Jhi\n", b"\x9b31m\n")}
    r, _ = run_exec(tmp_path, monkeypatch, runners, "alice", "--", "cat", "x")
    assert "[alice] \\x1b]0;pwned\\x07\\x1b[2Jhi" in r.stdout and "\x1b" not in r.stdout
    assert "[alice] \\x9b31m" in r.stderr and "\x9b" not in r.stderr
    assert prefixed("p", b"\xff ok") == "[p] \\xff ok"  # bytes that are not UTF-8, written out too


@pytest.mark.parametrize("nodes, code, says", [
    ({"alice": {}, "bob": {}, "carol": {}}, 0, []),
    ({"alice": {}, "bob": {"code": 3}, "carol": {}}, 1, ["bob: exit 3"]),
    ({"alice": {"down": True}, "bob": {"code": 3}, "carol": {}}, 69, ["alice: unreachable", "not reached: alice", "bob: exit 3"]),
])
def test_exec_exit_code_is_0_1_or_69(tmp_path, monkeypatch, nodes, code, says):
    runners = {n: Scripted(n, **kw) for n, kw in nodes.items()}
    r, _ = run_exec(tmp_path, monkeypatch, runners, "--all", "--", "true")
    assert r.exit_code == code, r.output
    assert all(s in r.stderr for s in says), r.stderr


def test_exec_json_has_every_nodes_outcome(tmp_path, monkeypatch):
    runners = {"alice": Scripted("alice", b"\x1b[2Jhi\n", b"e\n"), "bob": Scripted("bob", code=3),
               "carol": Scripted("carol", down=True)}
    r, _ = run_exec(tmp_path, monkeypatch, runners, "--json", "--all", "--", "id", "-un")
    assert r.exit_code == 69
    got = json.loads(r.stdout)
    assert got["ok"] is False and got["exit_code"] == 69
    assert got["nodes"]["alice"] == {"exit_code": 0, "stdout": "\x1b[2Jhi\n", "stderr": "e\n"}  # JSON escapes it
    assert got["nodes"]["bob"] == {"exit_code": 3, "stdout": "", "stderr": ""}
    assert got["nodes"]["carol"]["unreachable"] is True and "Connection refused" in got["nodes"]["carol"]["error"]
    assert {p["path"] for p in got["problems"]} == {"bob", "carol"} and "carol" in got["error"]
    assert "\\u001b[2J" in r.stdout  # and the terminal never sees the raw ESC


@pytest.mark.parametrize("args, says", [
    (["alice", "id"], "separate the parties from the command with `--`"),
    (["alice", "--"], "no command after `--`"),
    (["alice", "--json", "--", "id"], "options go before the parties"),
    (["--all", "alice", "bob", "--", "id"], "--all or parties, not both"),
])
def test_exec_usage_errors(tmp_path, monkeypatch, args, says):
    r, made = run_exec(tmp_path, monkeypatch, {}, *args)
    assert r.exit_code == 2 and says in r.output and not made


def test_exec_on_a_party_the_inventory_lacks_is_78_before_any_connection(tmp_path, monkeypatch):
    r, made = run_exec(tmp_path, monkeypatch, {}, "alice", "mallory", "--", "id")
    assert r.exit_code == 78 and "no party 'mallory'" in r.output and not made


def test_exec_all_keeps_a_commands_own_double_dash(tmp_path, monkeypatch):
    runners = {n: Scripted(n) for n in ("alice", "bob", "carol")}
    r, _ = run_exec(tmp_path, monkeypatch, runners, "--all", "--", "grep", "--", "-x", "f")
    assert r.exit_code == 0 and runners["bob"].argv == ["grep", "--", "-x", "f"]


# -- exec: real SSH, a real shell --------------------------------------------------------------------

def test_exec_over_ssh_keeps_each_word_whole_and_reports_exit_codes(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd)
    r = CliRunner().invoke(cli, ["exec", "-i", str(inv), "--all", "--", "printf", "%s|\\n", "a b", "$HOME", "*"])
    assert r.exit_code == 0, r.output
    assert sorted(r.stdout.splitlines()) == sorted(f"[{p}] {w}|" for p in ("alice", "bob") for w in ("a b", "$HOME", "*"))
    r = CliRunner().invoke(cli, ["exec", "-i", str(inv), "--json", "bob", "--", "sh", "-c", "echo out; echo err >&2; exit 3"])
    got = json.loads(r.stdout)
    assert r.exit_code == 1 and got["nodes"] == {"bob": {"exit_code": 3, "stdout": "out\n", "stderr": "err\n"}}


def test_exec_over_ssh_stops_at_its_timeout(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd)
    r = CliRunner().invoke(cli, ["exec", "-i", str(inv), "--timeout", "1", "alice", "--", "sleep", "30"])
    assert r.exit_code == 1 and "alice: failed" in r.stderr and "did not finish within 1 s" in r.stderr, r.stderr


def test_exec_names_the_node_it_cannot_reach_and_the_one_with_a_wrong_key(tmp_path, sshd):
    free = socket.create_server(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()
    (tmp_path / "other").mkdir()
    other = LoopbackSshd(tmp_path / "other", behaviour=SHELL)  # its host key is not the one listed for it
    other.client_key = sshd.client_key  # our key would get in: only the host key keeps us out
    try:
        extra = (f"  carol: {{host: 10.0.0.3, ssh: {{port: {closed_port}}}}}\n"
                 f"  dave: {{host: 10.0.0.4, ssh: {{port: {other.port}}}}}")
        inv = write_inventory(tmp_path, sshd, extra=extra,
                              known=[sshd.known_hosts_line(), sshd.known_hosts_line(port=other.port)])
        r = CliRunner().invoke(cli, ["exec", "-i", str(inv), "--json", "--all", "--", "true"])
        got = json.loads(r.stdout)
        assert r.exit_code == 69 and got["exit_code"] == 69
        assert got["nodes"]["alice"]["exit_code"] == 0 and got["nodes"]["bob"]["exit_code"] == 0
        assert got["nodes"]["carol"]["unreachable"] and "cannot reach" in got["nodes"]["carol"]["error"]
        assert got["nodes"]["dave"]["unreachable"] and "does NOT match known_hosts" in got["nodes"]["dave"]["error"]
        assert other.commands == []  # nothing ran on the host whose key did not match
    finally:
        other.stop()


# -- dashboard --------------------------------------------------------------------------------------

class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"dashboard {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a) -> None:
        pass


@pytest.fixture
def dashboard():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def get(port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return resp.read().decode()


def test_the_tunnel_relays_http_through_ssh_and_listens_on_loopback_only(tmp_path, sshd, dashboard):
    runner = sshd.runner(tmp_path / "known_hosts")
    (tmp_path / "known_hosts").write_text(sshd.known_hosts_line() + "\n")
    tunnel = LocalTunnel(runner.transport, "alice", ("127.0.0.1", dashboard), 0)
    stop = threading.Event()
    try:
        tunnel.probe()
        port = tunnel.listen()
        serving = threading.Thread(target=tunnel.serve, args=(stop,), daemon=True)
        serving.start()
        assert get(port, "/api/jobs") == "dashboard /api/jobs"
        pages: List[str] = []
        threads = [threading.Thread(target=lambda i=i: pages.append(get(port, f"/{i}"))) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        assert sorted(pages) == sorted(f"dashboard /{i}" for i in range(6))  # one channel each, side by side
        assert set(sshd.forwarded) == {("127.0.0.1", dashboard)}
        assert tunnel._listener.getsockname()[0] == "127.0.0.1"
        with pytest.raises(ConnectionRefusedError):  # 127.0.0.2 is this machine too: not bound there
            socket.create_connection(("127.0.0.2", port), timeout=3)
    finally:
        stop.set()
        tunnel.close()
        runner.close()


def test_the_tunnel_says_when_nothing_answers_at_the_far_end(tmp_path, sshd):
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    (tmp_path / "known_hosts").write_text(sshd.known_hosts_line() + "\n")
    runner = sshd.runner(tmp_path / "known_hosts")
    try:
        with pytest.raises(UnavailableError, match="nothing answers there"):
            LocalTunnel(runner.transport, "alice", ("127.0.0.1", port), 0).probe()
        sshd.forwarding = False
        with pytest.raises(UnavailableError, match="AllowTcpForwarding"):
            LocalTunnel(runner.transport, "alice", ("127.0.0.1", port), 0).probe()
    finally:
        runner.close()


def test_dashboard_command_tunnels_until_ctrl_c(tmp_path, sshd, dashboard):
    inv = write_inventory(tmp_path, sshd, dashboard=dashboard)
    env = dict(os.environ, PYTHONPATH=SRC, SFCLUSTER_STATE_DIR=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "sfcluster.cli.main", "dashboard", "-i", str(inv), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:") and "(Ctrl-C ends the tunnel)" in line, proc.stderr.read()
        port = int(line.split("http://127.0.0.1:")[1].split()[0])
        assert get(port, "/") == "dashboard /"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # generous: a loaded CI machine
        assert proc.returncode == 0 and "tunnel closed" in err, err
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=3)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_dashboard_off_is_78_with_the_key_to_set(tmp_path, sshd):
    inv = write_inventory(tmp_path, sshd)
    r = CliRunner().invoke(cli, ["dashboard", "-i", str(inv)])
    assert r.exit_code == 78 and "ports.dashboard is not set" in r.output and "ports: {dashboard: 8265}" in r.output


def test_dashboard_refuses_a_local_port_already_taken(tmp_path, sshd, dashboard):
    inv = write_inventory(tmp_path, sshd, dashboard=dashboard)
    r = CliRunner().invoke(cli, ["dashboard", "-i", str(inv)])  # --port defaults to the dashboard's: taken here
    assert r.exit_code == 1 and "the port is taken" in r.output and "--port" in r.output, r.output



BAD = "cluster: demo\nnodes:\n  alice: {host: 10.0.0.1, spu_port: twenty}\n"


@pytest.mark.parametrize("args", [["exec", "--json", "--all", "--", "true"], ["ssh", "alice"], ["dashboard"]])
def test_an_invalid_inventory_is_78_before_any_connection(tmp_path, args, exec_calls):
    (tmp_path / "inv.yaml").write_text(BAD)
    r = CliRunner().invoke(cli, [args[0], "-i", str(tmp_path / "inv.yaml"), *args[1:]])
    assert r.exit_code == 78 and "nodes.alice.spu_port (line 3)" in r.output and not exec_calls
    if "--json" in args:
        got = json.loads(r.stdout)
        assert got["exit_code"] == 78 and "nodes.alice.spu_port" in [p["path"] for p in got["problems"]]
