"""The three ways to bring a Ray cluster up and down on the bench nodes.

  sfcluster  `sfcluster up` (preflight on, `firewall: open`) / `sfcluster down`, the CLI as a user runs it
  rayup      Ray's own launcher, `ray up -y` with the local provider / `ray down -y` (same Ray, 2.9.3)
  bare       the lower bound: OpenSSH over ControlMaster connections opened in advance, `ray start
             --head`, then every worker in parallel; no checks, no firewall / a parallel
             `ray stop --force`

Every contender starts Ray with the same flags (sfcluster's argv builder: pinned ports, dashboard
off, usage stats off, MIN_CPUS CPUs and the same party resource per node), minus what only one of them can
express (sfcluster's temp dir; ray up's uniform worker command names the party by hostname).
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import yaml

from bench.nodes import NODE_PYTHON, NODE_RAY, ROOT, BenchNodes, SshMasters, log
from sfcluster.inventory import load_inventory
from sfcluster.inventory.model import MIN_CPUS, Cluster, TlsMode
from sfcluster.nodescripts.contract import TLS_DIR
from sfcluster.raycluster.argv import head_start_argv, worker_start_argv
from sfcluster.raycluster.resources import PARTY_RESOURCE
from sfcluster.tls.install import ray_tls_env

# every contender: the fewest CPUs a party can train with (sfcluster check fails below it) and the
# same party resource sfcluster gives (a label of PARTY_RESOURCE units)
CPUS = MIN_CPUS
BENCH_VENV = ROOT / "build" / "bench" / "venv"
# sfcluster runs Ray as the bench nodes' `ray_user` sfray (the node image makes it, without sudo; `check`
# fails a Ray user that can become root), logging in as root: its state dir is NODE_HOME/.sfcluster.
# The bare and `ray up` contenders run Ray as root, as their users do.
BENCH_RAY_USER = "sfray"
NODE_HOME = f"/home/{BENCH_RAY_USER}"


class Launched:
    """A running step: a subprocess (its own process group, output to a log file) or, for the
    in-process lower bound, a thread. `ended` is the controller's monotonic time at exit."""

    def __init__(self) -> None:
        self.code: Optional[int] = None
        self.ended: Optional[float] = None
        self._done = threading.Event()

    def _finish(self, code: int) -> None:
        self.code, self.ended = code, time.monotonic()
        self._done.set()

    def wait(self, timeout: Optional[float]) -> Optional[int]:
        self._done.wait(timeout)
        return self.code

    def kill(self) -> None:
        pass


class ProcLaunch(Launched):
    def __init__(self, argv: List[str], log_path: Path, env: Optional[Dict[str, str]] = None) -> None:
        super().__init__()
        self.log_path = log_path
        self._out = open(log_path, "ab")
        self._out.write(f"$ {shlex.join(argv)}\n".encode())
        self._out.flush()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._out, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})), start_new_session=True)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        code = self.proc.wait()
        self._finish(code)
        self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: this group only
            except ProcessLookupError:
                pass
            self.wait(10)


class ThreadLaunch(Launched):
    def __init__(self, fn: Callable[[], int]) -> None:
        super().__init__()
        self.error: Optional[BaseException] = None

        def body() -> None:
            try:
                code = fn()
            except BaseException as e:  # noqa: BLE001 - reported as the step's failure
                self.error, code = e, 1
            self._finish(code)
        threading.Thread(target=body, daemon=True).start()


def _strip_timeout(argv: List[str]) -> List[str]:
    """sfcluster wraps `ray start` in `timeout -k 5 60`; the others run it bare."""
    i = next(i for i, a in enumerate(argv) if a.endswith("/ray"))
    return argv[i:]


class Contender:
    key = ""
    label = ""

    def __init__(self, nodes: BenchNodes, masters: SshMasters, cluster: Cluster, logs: Path) -> None:
        self.nodes, self.masters, self.cluster, self.logs = nodes, masters, cluster, logs

    def launch_up(self, log_path: Path) -> Launched:
        raise NotImplementedError

    def launch_down(self, log_path: Path) -> Launched:
        raise NotImplementedError

    def cleanup(self) -> None:
        """After a failed or interrupted step: bring every node back to no Ray at all (untimed)."""
        self.nodes.force_clean()

    def readiness_env(self) -> Dict[str, str]:
        """What the readiness poller on the head needs in its environment to ask this cluster's GCS."""
        return {}


def bench_inventory(nodes: BenchNodes, cluster_name: str, path: Path, tls: TlsMode = TlsMode.OFF) -> Path:
    """sfcluster's inventory for the bench nodes (uniform: root, port 22, firewall open). The
    sections other than the TLS one measure with `tls: off`: their contenders (ray up, the bare
    bound) have no TLS, and their figures stay comparable with the runs before TLS existed; the TLS
    section measures on against off (bench/tlscost.py)."""
    s = nodes.spec
    ssh_config = s.build / "ssh_config"
    ssh_config.write_text("# sfcluster bench: no Host sections (keeps ~/.ssh/config out of the measurement)\n")
    out = [f"cluster: {cluster_name}", f"head: {s.names[0]}", f"known_hosts: {s.known_hosts}",
           f"ssh_config: {ssh_config}", f"python: {NODE_PYTHON}", f"cpus: {CPUS}", "firewall: open",
           f"tls: {tls.value}", f"ray_user: {BENCH_RAY_USER}",
           "ssh:", "  user: root", "  port: 22", f"  identity_file: {s.key}", "nodes:"]
    for name, ip in zip(s.names, s.ips):
        out += [f"  {name}:", f"    host: {ip}"]
    path.write_text("\n".join(out) + "\n")
    return path


class Sfcluster(Contender):
    """`down_flags`: extra flags of every `sfcluster down` it runs (the TLS section: --purge)."""
    key, label = "sfcluster", "sfcluster up/down"

    def __init__(self, nodes: BenchNodes, masters: SshMasters, cluster: Cluster, logs: Path, inventory: Path,
                 down_flags: Tuple[str, ...] = ()) -> None:
        super().__init__(nodes, masters, cluster, logs)
        self.inventory = inventory
        self.down_flags = down_flags
        local = Path(sys.executable).parent / "sfcluster"  # the CLI of the venv running the bench
        self.exe = str(local) if local.exists() else (shutil.which("sfcluster") or "sfcluster")
        self.env = {"SFCLUSTER_STATE_DIR": str(nodes.spec.build / "state")}

    def argv(self, *args: str) -> List[str]:
        return [self.exe, *args, "-i", str(self.inventory)]

    def launch_up(self, log_path: Path) -> Launched:
        return ProcLaunch(self.argv("up"), log_path, self.env)

    def launch_down(self, log_path: Path) -> Launched:
        return ProcLaunch(self.argv("down", *self.down_flags), log_path, self.env)

    def cleanup(self) -> None:
        subprocess.run(self.argv("down", "--force", *self.down_flags), env=dict(os.environ, **self.env),
                       capture_output=True, timeout=180)
        super().cleanup()

    def tls_dir(self) -> str:
        """Where `up` puts each node's certificates with tls: on (in sfcluster's state dir on the
        node; the same path on every bench node, all root)."""
        return f"{NODE_HOME}/.sfcluster/{self.cluster.name}/{TLS_DIR}"

    def readiness_env(self) -> Dict[str, str]:
        # under mutual TLS the poller is a GCS client like any Ray process: it uses the head's certificate
        return ray_tls_env(self.tls_dir()) if self.cluster.tls is TlsMode.ON else {}


class Bare(Contender):
    """The lower bound. In-process (no interpreter start), masters already open, no checks.

    Seen on ray 2.9.3: a worker's `ray start --address` returns about 1 s BEFORE its raylet is
    alive in the GCS node table (it even warns "we cannot find a local Raylet with the same
    address"): the command returning is not readiness, hence the poller for every contender.
    """
    key, label = "bare", "bare OpenSSH + ray start"

    def head_argv(self) -> List[str]:
        return [a for a in _strip_timeout(head_start_argv(self.cluster)) if not a.startswith("--temp-dir=")]

    def worker_argv(self, name: str) -> List[str]:
        return _strip_timeout(worker_start_argv(self.cluster, self.cluster.node(name)))

    def _fan_out(self, cmds: Dict[str, List[str]], out) -> int:  # noqa: ANN001
        procs = [subprocess.Popen(self.masters.argv(self.cluster.node(n).host, argv), stdin=subprocess.DEVNULL,
                                  stdout=out, stderr=subprocess.STDOUT) for n, argv in cmds.items()]
        return max((p.wait() for p in procs), default=0)

    def launch_up(self, log_path: Path) -> Launched:
        def up() -> int:
            with open(log_path, "ab") as out:
                head = self.cluster.head
                code = subprocess.run(self.masters.argv(head.host, self.head_argv()), stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=subprocess.STDOUT).returncode
                if code != 0:
                    return code
                return self._fan_out({w.name: self.worker_argv(w.name) for w in self.cluster.workers}, out)
        return ThreadLaunch(up)

    def launch_down(self, log_path: Path) -> Launched:
        def down() -> int:
            with open(log_path, "ab") as out:
                return self._fan_out({n.name: [NODE_RAY, "stop", "--force"] for n in self.cluster.nodes}, out)
        return ThreadLaunch(down)


class RayUp(Contender):
    """Ray's own launcher. NOTE: `ray up` turns host-key checking off (StrictHostKeyChecking=no,
    UserKnownHostsFile=/dev/null) and copies the private key to the head (~/ray_bootstrap_key.pem):
    that is Ray's behaviour, and the reason it only ever runs against the bench containers.

    Seen on ray 2.9.3 (local provider):
    - `ray up` returns once the head runs (~4 s at N=2); the workers are started afterwards by the
      head's autoscaler monitor over SSH, on its next update round (AUTOSCALER_UPDATE_INTERVAL_S =
      5) after an `uptime` probe per worker: they join ~10 s after `ray up` returned.
    - `ray down` runs `ray stop` on the head only, through a login shell and a bare `ray` (not the
      start commands' path: "ray: command not found" is ignored and still exits 0), marks the
      workers terminated in its state file, then waits 5 s ("Requested 1 nodes to shut down
      [interval=1s]"). Ray keeps running on every worker: raylet and its agents.
    - `ray up` writes its config cache (/tmp/ray-config-<hash>) even with --no-config-cache, and
      `ray down` then reads it back.
    """
    key, label = "rayup", "ray up/down (local provider)"

    def __init__(self, nodes: BenchNodes, masters: SshMasters, cluster: Cluster, logs: Path) -> None:
        super().__init__(nodes, masters, cluster, logs)
        self.name = f"sfbench-{nodes.spec.n}"
        self.config = nodes.spec.build / f"rayup-{nodes.spec.n}.yaml"
        self.config.write_text(yaml.safe_dump(self.cluster_config(), sort_keys=False, width=1000))
        self.exe = str(BENCH_VENV / "bin" / "ray")
        # no usage-stats report from the controller's `ray up` (the nodes get --disable-usage-stats)
        self.env = {"RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BENCH_VENV / 'bin'}:{os.environ.get('PATH', '')}"}

    def _flags(self, argv: List[str]) -> str:
        # drop what a uniform worker command cannot say per node; Ray detects the node IP itself
        # (one NIC per container), and the party resource is named after the hostname (p0, p1...)
        keep = [a for a in _strip_timeout(argv) if not a.startswith(("--temp-dir=", "--node-ip-address=", "--resources="))]
        return shlex.join(keep) + ' "--resources={\\"$(hostname)\\": ' + str(PARTY_RESOURCE) + '}"'

    def cluster_config(self) -> dict:
        s = self.nodes.spec
        head = self._flags(head_start_argv(self.cluster)) + " --autoscaling-config=~/ray_bootstrap_config.yaml"
        worker = self._flags(worker_start_argv(self.cluster, self.cluster.workers[0]))
        # Generous to Ray: Ray's example config runs `ray stop` before each start; the bench nodes
        # are clean, so the start commands here are the bare minimum (no stop, no setup commands).
        return {
            "cluster_name": self.name,
            "provider": {"type": "local", "head_ip": s.head_ip, "worker_ips": s.ips[1:]},
            "auth": {"ssh_user": "root", "ssh_private_key": str(s.key)},
            "upscaling_speed": 1.0, "idle_timeout_minutes": 5,
            "file_mounts": {}, "cluster_synced_files": [], "initialization_commands": [],
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [head], "worker_start_ray_commands": [worker],
        }

    def launch_up(self, log_path: Path) -> Launched:
        return ProcLaunch([self.exe, "up", "-y", "--no-config-cache", str(self.config)], log_path, self.env)

    def launch_down(self, log_path: Path) -> Launched:
        return ProcLaunch([self.exe, "down", "-y", str(self.config)], log_path, self.env)

    def cleanup(self) -> None:
        try:
            subprocess.run([self.exe, "down", "-y", str(self.config)], env=dict(os.environ, **self.env),
                           capture_output=True, timeout=90)
        except subprocess.TimeoutExpired:
            log("ray down hung during cleanup; killing Ray on the nodes directly")
        super().cleanup()

    def forget(self) -> None:
        """Ray's controller-side files for this cluster: /tmp/ray/cluster-<name>.state and .lock, and
        the config cache /tmp/ray-config-<hash> that `ray up` writes even with --no-config-cache."""
        for suffix in ("state", "lock"):
            Path(f"/tmp/ray/cluster-{self.name}.{suffix}").unlink(missing_ok=True)
        for p in Path("/tmp").glob("ray-config-*"):
            try:
                if f'"cluster_name": "{self.name}"' in p.read_text(errors="replace")[:300]:
                    p.unlink()
            except OSError:
                pass
        # and its SSH control-socket dirs, once empty (rmdir never removes anything else)
        for d in [*Path("/tmp").glob("ray_ssh_*/*"), *Path("/tmp").glob("ray_ssh_*"), Path("/tmp/ray")]:
            try:
                d.rmdir()
            except OSError:
                pass


def cluster_name(n: int) -> str:
    """The sfcluster cluster on N bench nodes (every section uses the same one, one after another)."""
    return f"bench{n}"


def make(keys: List[str], nodes: BenchNodes, masters: SshMasters, logs: Path) -> Dict[str, Contender]:
    s = nodes.spec
    inv = bench_inventory(nodes, cluster_name(s.n), s.build / f"inventory-{s.n}.yaml")
    cluster = load_inventory(str(inv))
    out: Dict[str, Contender] = {}
    for k in keys:
        if k == "sfcluster":
            out[k] = Sfcluster(nodes, masters, cluster, logs, inv)
        elif k == "bare":
            out[k] = Bare(nodes, masters, cluster, logs)
        elif k == "rayup":
            out[k] = RayUp(nodes, masters, cluster, logs)
        else:
            raise ValueError(f"unknown contender {k}")
    return out


def describe_flags(c: Dict[str, Contender]) -> Dict[str, object]:
    """The exact start commands, for the report."""
    out: Dict[str, object] = {}
    for k, v in c.items():
        if isinstance(v, Bare):
            out[k] = {"head": shlex.join(v.head_argv()), "worker": shlex.join(v.worker_argv(v.cluster.workers[0].name))}
        elif isinstance(v, RayUp):
            cfg = v.cluster_config()
            out[k] = {"head": cfg["head_start_ray_commands"][0], "worker": cfg["worker_start_ray_commands"][0]}
        elif isinstance(v, Sfcluster):
            out[k] = {"head": shlex.join(head_start_argv(v.cluster)),
                      "worker": shlex.join(worker_start_argv(v.cluster, v.cluster.workers[0]))}
    return json.loads(json.dumps(out))
