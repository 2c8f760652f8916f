"""The inventory as frozen dataclasses: one Cluster, its Nodes (head first), ports, SPU settings."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Tuple


class FirewallMode(str, Enum):
    OPEN = "open"    # sfcluster adds rules scoped to the peers that need each port
    CHECK = "check"  # only verify that peers get through
    OFF = "off"      # do nothing, check nothing


class Mode(str, Enum):
    """How SecretFlow runs on the cluster (docs/RUNBOOK.md, "the two modes").
    SIMULATION: one Ray cluster over every party and ONE driver, on the head. Through the shared Ray
    cluster every party's root can run code on every node: one organisation, or a test bed.
    PRODUCTION: no shared Ray. Every party runs its own driver of the same script (sf.init with
    `cluster_config`, `ray_mode=False`); the parties talk only over each one's cross-silo port and
    SPU port. The only mode secretflow-lite has from 1.11 on."""
    SIMULATION = "simulation"
    PRODUCTION = "production"

    @property
    def runs_ray(self) -> bool:
        return self is Mode.SIMULATION


class TlsMode(str, Enum):
    ON = "on"    # mutual TLS for all of Ray's gRPC and for the SPU links, certificates from sfcluster's CA
    OFF = "off"  # everything between the parties in clear (an explicit opt-out; `check` warns)


# On by default since 10 SS-LR trainings in a row passed under TLS on the harness (2026-12-01: 10/10,
# no SPU link timeout, AUC as without). The one failure of three hand-made TLS runs before had a
# cause: certificates without loopback in the SAN make ray 2.9.3's GCS terminate itself 60 s after
# start (tls/install.py LOOPBACK_NAMES).
TLS_DEFAULT = TlsMode.ON

# A cluster's and a party's name: a path component on every node, a firewall chain's and an nft
# table's name, a certificate's subject (tls/pki.py).
SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")

# The fewest `cpus` a party's node can train with: the SPU runtime actor holds one CPU for its
# whole life and every PYU task needs another (measured on the harness with SS-LR, see
# tests/integration/test_starvation.py and raycluster/resources.py). `check` fails below it; `run`
# stops a starved run.
MIN_CPUS = 2


@dataclass(frozen=True)
class SshSpec:
    user: Optional[str] = None
    port: Optional[int] = None
    identity_file: Optional[str] = None
    alias: Optional[str] = None          # a Host of ~/.ssh/config to use instead of `host`
    proxy_jump: Optional[str] = None


@dataclass(frozen=True)
class Node:
    name: str                 # the party name (alice, bob, ...)
    host: str                 # address peers use to reach this node (Ray node IP)
    ssh: SshSpec
    python: str               # remote interpreter of the venv with secretflow + ray
    cpus: int
    spu_port: int
    spu_advertise: str        # address other SPU parties dial
    spu_bind: Optional[str]   # set when spu_advertise is not bound here (NAT): SPU's listen_address
    data: Tuple[Tuple[str, str], ...] = ()
    firewall_backend: str = "auto"
    ray_user: Optional[str] = None   # the user Ray, the wrapper and the driver run as (sudo -u); None: the SSH user
    base_python: str = "python3.10"  # the CPython `sfcluster provision` makes the venv at `python` with
    # The interpreter of the node scripts that run as root or as a sudo-capable user (the probe,
    # ray_stop, the firewall step): the system's, owned by root, in isolated mode. Never `python`:
    # that venv belongs to the user Ray runs as, and any code of a run could plant a .pth there.
    root_python: str = "/usr/bin/python3"
    cross_silo_port: int = 0  # production mode: the port SecretFlow's cross-silo link listens on here
    # production mode: this party's $SFCLUSTER_OUTPUT stays on its node (`run` brings no copy home);
    # in a real federation a party's results are its own
    keep_outputs: bool = False
    # production mode, a federation: this party's CA certificate (a controller path, PEM), from its
    # own operator (`sfcluster ca`). A node this controller operates trusts its own CA and these.
    ca_cert: Optional[str] = None

    @property
    def data_paths(self) -> dict:
        return dict(self.data)

    @property
    def link_bind(self) -> str:
        """The address this node's SPU and cross-silo links (and their TLS-only gates) bind:
        `bind` where the advertised address is not local (NAT), else the advertised one."""
        return self.spu_bind or self.spu_advertise


@dataclass(frozen=True)
class RayPorts:
    gcs: int = 6379
    client_server: int = 10001
    dashboard: Optional[int] = None         # None: dashboard off
    node_manager: int = 6380
    object_manager: int = 6381
    metrics_export: int = 6382
    dashboard_agent_grpc: int = 6383
    dashboard_agent_http: int = 6384
    runtime_env_agent: int = 6385
    worker_min: int = 6400
    worker_count: int = 100

    @property
    def worker_max(self) -> int:
        return self.worker_min + self.worker_count - 1


@dataclass(frozen=True)
class SpuSettings:
    protocol: str = "SEMI2K"
    field: str = "FM128"
    base_port: int = 20100


CROSS_SILO_BASE = 20200  # production mode's cross-silo ports: base + the party's index, like SPU's


@dataclass(frozen=True)
class Provision:
    """What `sfcluster provision` installs in every node's venv (the inventory's `provision:`):
    exactly these pins, the same on every node, from the nodes' package index or from a
    wheelhouse directory on the controller that sfcluster pushes to each node."""

    package: str                        # secretflow or secretflow-lite
    version: str                        # its exact version
    ray_version: Optional[str]          # Ray's exact version (SecretFlow's own pin); None: no Ray (production mode)
    index_url: Optional[str] = None     # the nodes' index (https); None: PyPI (pip.conf never applies)
    index_credentials: Optional[str] = None  # controller file (0600), one line USER:PASSWORD
    wheelhouse: Optional[str] = None    # controller directory of wheels: nodes install with --no-index
    lock: Optional[str] = None          # controller file: name==version --hash=sha256:... for every wheel

    @property
    def requirements(self) -> Tuple[str, ...]:
        return (f"{self.package}=={self.version}",) + ((f"ray=={self.ray_version}",) if self.ray_version else ())


@dataclass(frozen=True)
class Cluster:
    name: str
    head_name: str
    nodes: Tuple[Node, ...]            # head first
    ray: RayPorts = field(default_factory=RayPorts)
    spu: SpuSettings = field(default_factory=SpuSettings)
    firewall: FirewallMode = FirewallMode.OPEN
    tls: TlsMode = TLS_DEFAULT
    known_hosts: Optional[str] = None
    ssh_config: Optional[str] = None
    source: str = "<inventory>"
    provision: Optional[Provision] = None
    mode: Mode = Mode.SIMULATION
    # The parties this controller operates (`--party`, production mode: in a federation each
    # organisation's operator reaches only its own nodes); None: every party.
    operated: Optional[Tuple[str, ...]] = None

    @property
    def operated_names(self) -> Tuple[str, ...]:
        """The parties whose nodes this command touches (SSH, certificates, firewall, drivers)."""
        return self.party_names if self.operated is None else tuple(n for n in self.party_names if n in self.operated)

    @property
    def federated(self) -> bool:
        """Some party's node is another operator's: this controller neither reaches nor checks it."""
        return self.operated is not None and set(self.operated) != set(self.party_names)

    @property
    def lock_party(self) -> str:
        """Where the cluster lock of `up`/`down` is taken: the head, or in a federation whose head is
        another operator's, this operator's first party (production mode: each party's node has
        its own lock, the one its run's driver holds)."""
        names = self.operated_names
        return self.head_name if self.head_name in names or not names else names[0]

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> Tuple[Node, ...]:
        return self.nodes[1:]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def party_names(self) -> Tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @property
    def ray_address(self) -> str:
        return f"{self.head.host}:{self.ray.gcs}"

    @property
    def temp_root(self) -> str:
        """The directory Ray's temp dir lives in, on every node: made 0700 by the user Ray runs as
        and checked (lstat: ours, a directory, no link) before every `ray start`. Ray makes its temp
        dir and everything in it (session_*, sockets/, logs/) mode 0777 without the sticky bit; this
        parent keeps every other local user out of all of it. A fixed path under /tmp, not the home:
        workers take the head's temp dir path from the GCS (ray 2.9.3), so it must be the same on
        every node whatever the homes are; /tmp's sticky bit keeps it ours once it is."""
        return f"/tmp/sfc-{self.name}"

    @property
    def temp_dir(self) -> str:
        """Ray's temp dir (`--temp-dir`). Short: Ray's socket paths must stay < 108 chars, and with a
        31-character cluster name `<temp_dir>/session_<date>_<pid>/sockets/plasma_store` is 104."""
        return f"{self.temp_root}/r"
