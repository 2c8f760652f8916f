"""Bring the docker-compose harness up and down, and describe it (known_hosts, inventory).

Used by the pytest fixtures and by `make harness` / `make demo`:
    python -m tests.harness.harness up|down|status
Host keys for known_hosts are read from inside each container (docker exec), never scanned over
the network, and never disabled.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("SFCLUSTER_HARNESS_DIR", ROOT / "build" / "harness"))
COMPOSE_FILE = ROOT / "docker-compose.test.yml"
PROJECT = "sfcluster-test"
SUBNET = "172.30.77.0/24"
NODE_PYTHON = "/opt/sf/bin/python"


@dataclass(frozen=True)
class HarnessNode:
    name: str
    ip: str
    user: str
    port: int
    party: bool = True

    @property
    def container(self) -> str:
        return f"{PROJECT}-{self.name}"


NODES: Dict[str, HarnessNode] = {
    "alice": HarnessNode("alice", "172.30.77.11", "root", 22),
    "bob": HarnessNode("bob", "172.30.77.12", "sfops", 22),
    "carol": HarnessNode("carol", "172.30.77.13", "sfops", 2222),
    "mallory": HarnessNode("mallory", "172.30.77.20", "root", 22, party=False),
}
PARTIES = [n for n in NODES.values() if n.party]
# The user Ray, the wrapper and the driver run as on every party's node (entrypoint.sh makes it: no
# sudo rights). `check` fails when Ray would run as a user that can become root, as the SSH users
# here can (root; sfops with passwordless sudo): every harness inventory names it unless a test
# says otherwise.
RAY_USER = "sfray"
RAY_HOME = f"/home/{RAY_USER}"


def state_dir(cluster: str = "harness") -> str:
    """A cluster's private state on a node (~/.sfcluster/<cluster> of the Ray user: lock, run dirs,
    certificates); the same path on every node."""
    return f"{RAY_HOME}/.sfcluster/{cluster}"


def tls_dir(cluster: str = "harness") -> str:
    return f"{state_dir(cluster)}/tls"


def log(msg: str) -> None:
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def sh(argv: List[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, text=True, capture_output=True, **kw)


def compose(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, SFCLUSTER_HARNESS_DIR=str(BUILD))
    return subprocess.run(["docker-compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args],
                          check=check, text=True, capture_output=True, env=env)


def docker_exec(node: str, cmd: str, user: str = "root", check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a shell command inside a harness node as root (the test's hand, not sfcluster's)."""
    p = subprocess.run(["docker", "exec", "-u", user, NODES[node].container, "bash", "-c", cmd],
                       text=True, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"docker exec {node} `{cmd}` exited {p.returncode}: {p.stderr[-2000:]}")
    return p


def netns_sysctl(node: str, key: str, value: Optional[str] = None) -> str:
    """Read (and with `value`, set) a network-namespace sysctl of a node from the host: the node's
    own /proc/sys is read-only under Docker. Returns the value before the change."""
    pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", NODES[node].container],
                         check=True, text=True, capture_output=True).stdout.strip()
    ns = ["nsenter", "-t", pid, "-n", "sysctl", "-n"]
    old = subprocess.run(ns + [key], check=True, text=True, capture_output=True).stdout.strip()
    if value is not None:
        subprocess.run(ns + ["-w", f"{key}={value}"], check=True, text=True, capture_output=True)
    return old


def pause(node: str, tries: int = 10) -> None:
    """Freeze a node (sshd, Ray, everything: a host that vanished silently). The cgroup freezer
    sometimes fails under load ("OCI runtime pause failed: unable to freeze"; runc thaws it
    again): retried, as the freeze itself is what the tests need, not its first attempt."""
    err = ""
    for _ in range(tries):
        p = subprocess.run(["docker", "pause", NODES[node].container], capture_output=True, text=True)
        if p.returncode == 0 or "already paused" in p.stderr:
            return
        err = p.stderr
        time.sleep(1)
    raise RuntimeError(f"docker pause {node} failed {tries} times: {err}")


def unpause(node: str) -> None:
    subprocess.run(["docker", "unpause", NODES[node].container], capture_output=True, text=True)


def ensure_engine() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "ensure-docker.sh")], check=True)


def ensure_image() -> None:
    subprocess.run(["bash", str(ROOT / "tests" / "harness" / "build-image.sh")], check=True)


def ensure_wheelhouse(pins: Optional[str] = None) -> Path:
    """The provision tests' wheelhouse: every wheel SecretFlow 1.10.0b1 and Ray 2.9.3 need (or
    `pins`, e.g. "secretflow-lite==1.13.0b0"), for the nodes' CPython 3.10, in
    build/wheelhouse-<digest of the pins and the interpreter>. Downloaded once per machine
    (~400 MB; 1.13.0b0 without Ray: 340 MB), reused after, as the image is."""
    env = dict(os.environ, **({"WHEELHOUSE_PINS": pins} if pins else {}))
    p = subprocess.run(["bash", str(ROOT / "tests" / "harness" / "build-wheelhouse.sh")], check=True, text=True,
                       stdout=subprocess.PIPE, env=env)
    return Path(p.stdout.strip().splitlines()[-1])


def base_python(node: str) -> str:
    """The CPython 3.10 a node has besides its venv: /opt/python3.10 (the default image), else the
    base image's python3.10 (BASE_IMAGE=python:3.10-slim-bookworm)."""
    return docker_exec(node, "p=/opt/python3.10/bin/python3.10; [ -x $p ] || p=$(command -v python3.10); echo $p").stdout.strip()


def ensure_key() -> Path:
    BUILD.mkdir(parents=True, exist_ok=True)
    key = BUILD / "id_ed25519"
    if not key.exists():
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sfcluster-harness", "-f", str(key)])
    return key


def remove_networks(name: str, subnet: str) -> None:
    """Docker networks called `name` or on `subnet`: an earlier (killed) run's."""
    for net in sh(["docker", "network", "ls", "-q"], check=False).stdout.split():
        info = sh(["docker", "network", "inspect", "-f", "{{.Name}} {{range .IPAM.Config}}{{.Subnet}}{{end}}", net],
                  check=False).stdout.split()
        if len(info) >= 2 and (info[1] == subnet or info[0] == name):
            sh(["docker", "network", "rm", net], check=False)


def remove_leftovers() -> None:
    """Containers and networks of an earlier (killed) run: same names or same subnet."""
    compose("down", "-v", "--remove-orphans", "-t", "1", check=False)
    for n in NODES.values():
        sh(["docker", "rm", "-f", n.container], check=False)
    remove_networks(PROJECT, SUBNET)


def wait_ssh(timeout: float = 60, nodes: Optional[List[Tuple[str, str, int, str]]] = None) -> None:
    """Wait until sshd answers with its banner on every node: (name, ip, port, container) tuples,
    the harness's own nodes by default (the bench's generated nodes pass theirs)."""
    deadline = time.monotonic() + timeout
    for name, ip, port, container in nodes or [(n.name, n.ip, n.port, n.container) for n in NODES.values()]:
        while True:
            try:
                with socket.create_connection((ip, port), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(4).startswith(b"SSH-"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                logs = sh(["docker", "logs", "--tail", "30", container], check=False)
                raise RuntimeError(f"sshd on {name} ({ip}:{port}) did not answer within {timeout:.0f} s\n"
                                   f"{logs.stdout}{logs.stderr}")
            time.sleep(0.2)


def known_hosts_text(nodes: List[Tuple[str, int, str]]) -> str:
    """known_hosts lines for (ip, sshd port, container), from the real host keys read inside each
    container (docker exec): never scanned over the network."""
    lines = []
    for ip, port, container in nodes:
        key = sh(["docker", "exec", container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()
        host = ip if port == 22 else f"[{ip}]:{port}"
        lines.append(f"{host} {key[0]} {key[1]}")
    return "\n".join(lines) + "\n"


def write_known_hosts() -> Path:
    path = BUILD / "known_hosts"
    path.write_text(known_hosts_text([(n.ip, n.port, n.container) for n in NODES.values()]))
    return path


def recreate(firewalls: Dict[str, str]) -> None:
    """Start the given nodes afresh with other firewall backends, e.g. {"bob": "ufw"}. New
    containers have new host keys: known_hosts is written again."""
    env = {f"SFCLUSTER_FW_{n.upper()}": fw for n, fw in firewalls.items()}
    os.environ.update(env)  # compose reads them; later recreations see the same choice
    p = compose("up", "-d", "--no-deps", "--force-recreate", *firewalls, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"docker-compose up {' '.join(firewalls)} failed:\n{p.stdout}{p.stderr}")
    wait_ssh()
    for n, fw in firewalls.items():  # the entrypoint writes the backend once it is running
        deadline = time.monotonic() + 60
        while docker_exec(n, "cat /etc/sfcluster/firewall-backend 2>/dev/null || true").stdout.strip() != fw:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n}: firewall {fw} did not come up: {sh(['docker', 'logs', NODES[n].container], check=False).stderr[-2000:]}")
            time.sleep(0.2)
    write_known_hosts()


DATA_NAME = "breast_cancer"   # data/breast_cancer/<party>.csv, the template's default data name


def data_path(name: str, ray_user: Optional[str] = RAY_USER) -> str:
    """Where a party's demo CSV lives on its node: the home of the user Ray runs as."""
    user = ray_user or NODES[name].user
    home = "/root" if user == "root" else f"/home/{user}"
    return f"{home}/data/{DATA_NAME}.csv"


def push_data(inventory: Path, names: Optional[List[str]] = None) -> None:
    """Each party's CSV (of `names`, default every harness party) to its own node with `sfcluster
    data push` (idempotent by sha256)."""
    for name in names or [n.name for n in PARTIES]:
        p = subprocess.run([sys.executable, "-m", "sfcluster.cli.main", "data", "push", "-i", str(inventory),
                            name, DATA_NAME, str(ROOT / "data" / DATA_NAME / f"{name}.csv")],
                           text=True, capture_output=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"data push {name} failed: {p.stdout}{p.stderr}")


def inventory_text(cluster: str = "harness", firewall: str = "open", nodes: Optional[List[str]] = None,
                   extra_node: Optional[Dict[str, Dict[str, str]]] = None, extra_top: str = "",
                   data: bool = False, ray_user: Optional[str] = RAY_USER, cpus: int = 2) -> str:
    """An inventory for the harness; tests tweak it through the arguments. data: each party's
    demo CSV is named (`push_data` puts it there). ray_user None: Ray runs as the SSH user (which
    `check` fails here: they can all become root)."""
    names = nodes or [n.name for n in PARTIES]
    out = [
        f"cluster: {cluster}",
        f"head: {names[0]}",
        f"known_hosts: {BUILD / 'known_hosts'}",
        f"ssh_config: {BUILD / 'ssh_config'}",
        f"python: {NODE_PYTHON}",
        f"cpus: {cpus}",
        f"firewall: {firewall}",
        *([f"ray_user: {ray_user}"] if ray_user else []),
        "ssh:",
        f"  identity_file: {BUILD / 'id_ed25519'}",
    ]
    if extra_top:
        out.append(extra_top.rstrip())
    out.append("nodes:")
    for name in names:
        n = NODES[name]
        out += [f"  {name}:", f"    host: {n.ip}", "    ssh:", f"      user: {n.user}", f"      port: {n.port}"]
        if data:
            out.append(f"    data: {{{DATA_NAME}: {data_path(name, ray_user)}}}")
        for k, v in (extra_node or {}).get(name, {}).items():
            out.append(f"    {k}: {v}")
    return "\n".join(out) + "\n"


def write_inventory(path: Optional[Path] = None, **kw) -> Path:
    path = path or BUILD / "inventory.yaml"
    path.write_text(inventory_text(**kw))
    return path


def up() -> Path:
    ensure_engine()
    ensure_image()
    ensure_key()
    (BUILD / "ssh_config").write_text("# sfcluster harness: no Host sections; tests add their own\n")
    remove_leftovers()
    log("starting alice, bob, carol, mallory")
    p = compose("up", "-d", check=False)
    if p.returncode != 0:
        raise RuntimeError(f"docker-compose up failed:\n{p.stdout}{p.stderr}")
    wait_ssh()
    write_known_hosts()
    inv = write_inventory(data=True)
    log(f"up; inventory: {inv}")
    return inv


def down() -> None:
    remove_leftovers()
    log("down")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=["up", "down", "inventory"])
    args = ap.parse_args()
    if args.action == "up":
        print(up())
    elif args.action == "down":
        down()
    else:
        print(write_inventory())
    return 0


if __name__ == "__main__":
    sys.exit(main())
