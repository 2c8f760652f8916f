"""Load and validate an inventory YAML. Every problem names its YAML path and line; nothing
else (no SSH, no remote step) happens until the file is valid."""
from __future__ import annotations

import ipaddress
import os
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from sfcluster.errors import InventoryError, Problem
from sfcluster.inventory.yamldoc import MAX_INVENTORY_BYTES, YamlDoc, show, too_big
from sfcluster.inventory.model import (MIN_CPUS, SAFE_NAME, CROSS_SILO_BASE, Cluster, FirewallMode, Mode, Node, Provision, RayPorts,
                                       SpuSettings, SshSpec, TLS_DEFAULT, TlsMode)

USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
PROTOCOLS = ("SEMI2K", "ABY3", "CHEETAH", "REF2K")
PROTOCOL_PARTIES = {"ABY3": 3, "CHEETAH": 2}  # exactly this many; SEMI2K and REF2K take any number >= 2
FIELDS = ("FM32", "FM64", "FM128")
BACKENDS = ("auto", "none", "iptables", "nftables", "ufw", "firewalld")
DEFAULT_PYTHON = "python3"
TOP_KEYS = {"cluster", "head", "ssh", "python", "cpus", "ports", "spu", "firewall", "tls", "ray_user", "known_hosts",
            "ssh_config", "provision",
            "mode", "nodes"}
SSH_KEYS = {"user", "port", "identity_file", "alias", "proxy_jump"}
PORT_KEYS = {"ray_gcs", "ray_client_server", "dashboard", "node_manager", "object_manager", "metrics_export",
             "dashboard_agent_grpc", "dashboard_agent_http", "runtime_env_agent", "worker_ports", "spu_base",
             "cross_silo_base"}
WORKER_KEYS = {"start", "count"}
SPU_KEYS = {"protocol", "field"}
NODE_KEYS = {"host", "ssh", "python", "cpus", "spu_port", "advertise", "bind", "data", "firewall_backend", "ray_user",
             "base_python", "root_python", "cross_silo_port", "keep_outputs", "ca_cert"}
PROVISION_KEYS = {"package", "version", "ray_version", "base_python", "index_url", "index_credentials", "wheelhouse",
                  "lock"}
PACKAGES = ("secretflow-lite", "secretflow")
VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_-]{0,63}$")   # an exact PEP 440 version, no operators
PYTHON_PATH = re.compile(r"^[A-Za-z0-9_./+-]{1,255}$")
DEFAULT_BASE_PYTHON = "python3.10"


def _check_user(v: str) -> Optional[str]:
    if not USER_NAME.match(v):
        return f"'{v}' is not a user name (lowercase letter or _ first, then a-z, 0-9, _, -; at most 32 chars)"
    return None


def _check_name(v: str) -> Optional[str]:
    if not SAFE_NAME.match(v):
        return f"'{v}' is not a safe identifier (lowercase letter first, then a-z, 0-9, _; at most 31 chars)"
    return None


def _check_host(v: str) -> Optional[str]:
    if "%" in v:  # ipaddress accepts `fe80::1%<anything>`; the zone would reach ssh, Ray and SPU as is
        return (f"'{v}' has a '%': IPv6 scope ids (fe80::1%eth0) are not supported; use a global address "
                f"or a host name")
    try:
        ipaddress.ip_address(v)
        return None
    except ValueError:
        pass
    return None if HOSTNAME.match(v) else f"'{v}' is neither an IP address nor a valid host name"


def _check_proxy_jump(v: str) -> Optional[str]:
    """One jump host, `[user@]host[:port]`, split as the SSH transport splits it (at the first `@`
    and the last `:`), so an IPv6 literal cannot be written here."""
    form = "expected [user@]host[:port]"
    if "," in v:
        return f"'{v}' names several jump hosts; one is supported (chain more in ~/.ssh/config)"
    user, at, rest = v.partition("@")
    if not at:
        rest = v
    elif not user:
        return f"'{v}' has an empty user before '@' ({form})"
    if "%" in rest:
        return f"jump host {_check_host(rest)}"
    host, colon, port = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not host:
        return f"'{v}' has no host ({form})"
    if ":" in host or host.startswith("["):
        return f"'{v}': an IPv6 address cannot be a jump host here; use its host name ({form})"
    problem = _check_host(host)
    if problem:
        return f"jump host {problem}"
    if colon and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        return f"'{v}': port '{port}' is not an integer 1-65535 ({form})"
    return None


def _one_of(choices: Tuple[str, ...]) -> Callable[[str], Optional[str]]:
    def check(v: str) -> Optional[str]:
        return None if v in choices else f"'{v}' is not one of {', '.join(choices)}"
    return check


def load_inventory(path: str) -> Cluster:
    """Read `path` (UTF-8, at most MAX_INVENTORY_BYTES: checked before reading) and parse it."""
    try:
        with Path(path).open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_INVENTORY_BYTES:
                raise InventoryError(path, [too_big(size)])
            data = f.read(MAX_INVENTORY_BYTES + 1)  # a pipe or a device has no size to check first
    except OSError as e:
        err = InventoryError(path, [Problem("", None, f"cannot read: {e.strerror}")])
        if isinstance(e, FileNotFoundError):
            err.hint = ("pass the inventory with -i PATH (or set SFCLUSTER_INVENTORY), or write one: sfcluster init "
                        "alice=HOST bob=USER@HOST (`sfcluster init --example` documents every key)")
        raise err from e
    if len(data) > MAX_INVENTORY_BYTES:
        raise InventoryError(path, [too_big(len(data))])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InventoryError(path, [Problem("", line, f"not UTF-8: byte 0x{data[e.start]:02x} at byte offset "
                                                      f"{e.start}; save the file as UTF-8")]) from e
    return parse_inventory(text, source=path, controller_files=True)


def parse_inventory(text: str, source: str = "<inventory>", controller_files: bool = False) -> Cluster:
    """The inventory in `text`; every problem found, with its YAML path and line, in one
    InventoryError. controller_files: also check that the files it names on this controller
    (identity_file, known_hosts, ssh_config) can be read: a loaded inventory's are, a text's
    (`init`, the unit tests) need not exist here."""
    if len(text) > MAX_INVENTORY_BYTES:
        raise InventoryError(source, [too_big(len(text.encode("utf-8", "replace")))])
    doc = YamlDoc(text, source)
    doc.controller_files = controller_files
    top = doc.mapping(doc.data, (), TOP_KEYS)
    if not isinstance(doc.data, dict):
        raise InventoryError(source, doc.problems or [Problem("", 1, "the inventory must be a YAML mapping")])

    name = doc.string(top, "cluster", (), None, _check_name)
    if top.get("cluster") is None:
        doc.error(("cluster",), "missing (a name for this cluster, e.g. 'cluster: demo')")
    ray, spu_base, xs_base = _ports(doc, top)
    mode = Mode(doc.string(top, "mode", (), Mode.SIMULATION.value, _one_of(tuple(m.value for m in Mode)))
                or Mode.SIMULATION.value)
    sm = doc.mapping(top.get("spu"), ("spu",), SPU_KEYS)
    spu = SpuSettings(
        protocol=doc.string(sm, "protocol", ("spu",), "SEMI2K", _one_of(PROTOCOLS)) or "SEMI2K",
        field=doc.string(sm, "field", ("spu",), "FM128", _one_of(FIELDS)) or "FM128",
        base_port=spu_base,
    )
    fw = doc.string(top, "firewall", (), "open", _one_of(tuple(m.value for m in FirewallMode))) or "open"
    tls = doc.string(top, "tls", (), TLS_DEFAULT.value, _one_of(tuple(m.value for m in TlsMode))) or TLS_DEFAULT.value
    provision, base_python_default = _provision(doc, top.get("provision"), source, needs_ray=mode.runs_ray)
    defaults = _NodeDefaults(
        ssh=_ssh(doc, top.get("ssh"), ("ssh",), SshSpec()), python=doc.string(top, "python", (), DEFAULT_PYTHON),
        cpus=doc.integer(top, "cpus", (), MIN_CPUS, 1, 1024, "cpus"),
        ray_user=doc.string(top, "ray_user", (), None, _check_user), base_python=base_python_default,
        spu_base=spu_base, xs_base=xs_base, source=source, mode=mode)
    nodes = [_node(doc, party, raw, i, defaults) for i, (party, raw) in enumerate(_raw_nodes(doc, top, spu).items())]
    head = _head(doc, top, nodes)

    cluster = Cluster(
        name=name or "invalid", head_name=head or "", nodes=tuple(nodes), ray=ray, spu=spu,
        firewall=FirewallMode(fw), tls=TlsMode(tls), known_hosts=doc.string(top, "known_hosts", (), None),
        ssh_config=doc.string(top, "ssh_config", (), None), source=source, provision=provision,
        mode=mode,
    )
    if not doc.problems:
        _check_ports(doc, cluster)
    if doc.controller_files:
        _check_controller_files(doc, top)
    if doc.problems:
        raise InventoryError(source, doc.problems)
    return cluster


def _ports(doc: YamlDoc, top: Dict[str, Any]) -> Tuple[RayPorts, int, int]:
    """`ports:`: Ray's ports, and the bases of the SPU and cross-silo ports of the parties."""
    pp = ("ports",)
    pm = doc.mapping(top.get("ports"), pp, PORT_KEYS)
    wm = doc.mapping(pm.get("worker_ports"), pp + ("worker_ports",), WORKER_KEYS)
    d = RayPorts()
    ray = RayPorts(
        gcs=doc.port(pm, "ray_gcs", pp, d.gcs) or d.gcs,
        client_server=doc.port(pm, "ray_client_server", pp, d.client_server) or d.client_server,
        dashboard=doc.port(pm, "dashboard", pp, None),
        node_manager=doc.port(pm, "node_manager", pp, d.node_manager) or d.node_manager,
        object_manager=doc.port(pm, "object_manager", pp, d.object_manager) or d.object_manager,
        metrics_export=doc.port(pm, "metrics_export", pp, d.metrics_export) or d.metrics_export,
        dashboard_agent_grpc=doc.port(pm, "dashboard_agent_grpc", pp, d.dashboard_agent_grpc) or d.dashboard_agent_grpc,
        dashboard_agent_http=doc.port(pm, "dashboard_agent_http", pp, d.dashboard_agent_http) or d.dashboard_agent_http,
        runtime_env_agent=doc.port(pm, "runtime_env_agent", pp, d.runtime_env_agent) or d.runtime_env_agent,
        worker_min=doc.port(wm, "start", pp + ("worker_ports",), d.worker_min) or d.worker_min,
        worker_count=doc.integer(wm, "count", pp + ("worker_ports",), d.worker_count, 10, 10000, "count") or d.worker_count,
    )
    if ray.worker_max > 65535:
        doc.error(pp + ("worker_ports",), f"range {ray.worker_min}-{ray.worker_max} goes past 65535")
    spu_base = doc.port(pm, "spu_base", pp, SpuSettings().base_port) or SpuSettings().base_port
    xs_base = doc.port(pm, "cross_silo_base", pp, CROSS_SILO_BASE) or CROSS_SILO_BASE
    return ray, spu_base, xs_base


def _raw_nodes(doc: YamlDoc, top: Dict[str, Any], spu: SpuSettings) -> Dict[str, Any]:
    """`nodes:` as written (party -> its mapping), after the checks on the parties as a whole."""
    raw_nodes = top.get("nodes")
    if raw_nodes is None:
        doc.error(("nodes",), "missing (at least two parties are needed)")
        return {}
    if not isinstance(raw_nodes, dict):
        doc.error(("nodes",), f"expected a mapping of party name -> node, got {show(raw_nodes)}")
        return {}
    if len(raw_nodes) < 2:
        doc.error(("nodes",), "a SecretFlow cluster needs at least two parties")
    else:
        needed = PROTOCOL_PARTIES.get(spu.protocol)
        if needed and len(raw_nodes) != needed:
            doc.error(("spu", "protocol"), f"{spu.protocol} needs exactly {needed} parties, `nodes` has "
                                           f"{len(raw_nodes)} (SEMI2K takes any number)")
    return raw_nodes


@dataclass(frozen=True)
class _NodeDefaults:
    """What a node inherits from the top of the inventory."""

    ssh: SshSpec
    python: Optional[str]
    cpus: Optional[int]
    ray_user: Optional[str]
    base_python: str
    spu_base: int
    xs_base: int
    source: str
    mode: Mode


def _node(doc: YamlDoc, party: str, raw: Any, i: int, top: _NodeDefaults) -> Node:
    """`nodes.<party>` (the i-th party: its default SPU and cross-silo ports are the bases + i)."""
    np_ = ("nodes", party)
    if _check_name(party):
        doc.error(np_, f"party name {_check_name(party)}")
    nm = doc.mapping(raw, np_, NODE_KEYS)
    host = doc.string(nm, "host", np_, None, _check_host)
    if nm.get("host") is None:
        doc.error(np_ + ("host",), "missing (IP or DNS name that the other parties use)")
    advertise = doc.string(nm, "advertise", np_, None, _check_host)
    keep = nm.get("keep_outputs", False)
    if not isinstance(keep, bool):
        doc.error(np_ + ("keep_outputs",), f"expected true or false, got {show(keep)}")
        keep = True  # the safe reading of a value we could not read
    return Node(
        name=party,
        host=host or "",
        ssh=_ssh(doc, nm.get("ssh"), np_ + ("ssh",), top.ssh),
        python=doc.string(nm, "python", np_, top.python) or DEFAULT_PYTHON,
        cpus=doc.integer(nm, "cpus", np_, top.cpus, 1, 1024, "cpus") or MIN_CPUS,
        spu_port=_party_port(doc, nm, np_, "spu_port", top.spu_base, i, "SPU", "spu_base"),
        spu_advertise=advertise or host or "",
        spu_bind=doc.string(nm, "bind", np_, None, _check_host),
        data=_data(doc, nm, np_, party),
        firewall_backend=doc.string(nm, "firewall_backend", np_, "auto", _one_of(BACKENDS)) or "auto",
        ray_user=doc.string(nm, "ray_user", np_, top.ray_user, _check_user),
        base_python=doc.string(nm, "base_python", np_, top.base_python, _check_python) or DEFAULT_BASE_PYTHON,
        root_python=doc.string(nm, "root_python", np_, DEFAULT_ROOT_PYTHON, _check_absolute) or DEFAULT_ROOT_PYTHON,
        cross_silo_port=_party_port(doc, nm, np_, "cross_silo_port", top.xs_base, i, "cross-silo", "cross_silo_base"),
        keep_outputs=keep, ca_cert=_ca_cert(doc, nm, np_, top.source, top.mode),
    )


def _party_port(doc: YamlDoc, nm: Dict[str, Any], np_: Tuple[str, ...], key: str, base: int, i: int, what: str,
                base_key: str) -> int:
    """A party's own port: as written, else the base + the party's index."""
    port = doc.port(nm, key, np_, None)
    if port is None:
        port = base + i
        if port > 65535:
            doc.error(np_ + (key,), f"default {what} port {base}+{i} = {port} is past 65535 (lower ports.{base_key})")
    return port


def _data(doc: YamlDoc, nm: Dict[str, Any], np_: Tuple[str, ...], party: str) -> Tuple[Tuple[str, str], ...]:
    """`nodes.<party>.data`: name -> absolute path on that node."""
    dm = nm.get("data") or {}
    if not isinstance(dm, dict) or not all(isinstance(v, str) for v in dm.values()):
        doc.error(np_ + ("data",), "expected a mapping of name -> path")
        return ()
    for k, v in list(dm.items()):
        if not v.startswith("/"):  # a path on the node: relative to what? (the node refused it, after SSH)
            doc.error(np_ + ("data", str(k)), f"expected an absolute path on {party}'s node, got {show(v)}")
            dm.pop(k)
    return tuple(sorted((str(k), str(v)) for k, v in dm.items()))


def _head(doc: YamlDoc, top: Dict[str, Any], nodes: List[Node]) -> Optional[str]:
    """`head:` (default: the first party); `nodes` sorted head first, the others in file order."""
    head = doc.string(top, "head", (), nodes[0].name if nodes else None)
    if head is not None and nodes and head not in {n.name for n in nodes}:
        doc.error(("head",), f"'{head}' is not among nodes ({', '.join(n.name for n in nodes)})")
    elif head is not None:
        nodes.sort(key=lambda n: n.name != head)
    return head


def _readable_file(path: str) -> Optional[str]:
    """Why `path` (as SSH reads it: ~ expanded, relative to the working directory) cannot be
    read as a file, or None."""
    full = os.path.expanduser(path)
    try:
        with open(full, "rb"):
            pass
    except OSError as e:
        shown = full if full == path else f"{path} ({full})"
        return f"cannot read {shown}: {e.strerror or e}"
    return None if os.path.isfile(full) else f"{path} is not a file"


def _check_controller_files(doc: YamlDoc, top: Dict[str, Any]) -> None:
    """The files on this controller the inventory names: found now, with their YAML path, not as
    an SSH failure per node later (a missing identity_file reads as 'authentication failed', a
    missing known_hosts as every host key unknown)."""
    for key in ("known_hosts", "ssh_config"):
        raw = top.get(key)
        if isinstance(raw, str):
            for p in (shlex.split(raw) if key == "known_hosts" and " " in raw else [raw]):
                why = _readable_file(p)
                if why:
                    doc.error((key,), why + (" (fill it as the runbook says: ssh-keyscan, fingerprints compared "
                                             "out of band)" if key == "known_hosts" else ""))
                    break
    nodes = top.get("nodes") if isinstance(top.get("nodes"), dict) else {}
    places = [(("ssh",), top.get("ssh"))] + [(("nodes", str(p), "ssh"), m.get("ssh"))
                                            for p, m in nodes.items() if isinstance(m, dict)]
    for path, m in places:
        raw = m.get("identity_file") if isinstance(m, dict) else None
        if isinstance(raw, str):
            why = _readable_file(raw)
            if why:
                doc.error(path + ("identity_file",), why + " (the private key SSH logs in with)")


def _ca_cert(doc: YamlDoc, nm: Dict[str, Any], np_: Tuple[str, ...], source: str, mode: Mode) -> Optional[str]:
    """A party's own CA certificate (production mode, each organisation its own CA): a readable
    PEM file on the controller holding one CA certificate; the path is relative to the inventory."""
    raw = doc.string(nm, "ca_cert", np_, None)
    if raw is None:
        return None
    where = np_ + ("ca_cert",)
    if mode is not Mode.PRODUCTION:
        doc.error(where, "a party's own CA is for production mode (each organisation its own CA); in simulation "
                         "mode every node holds certificates of the cluster's one CA")
        return None
    here = Path(source).parent if source and not source.startswith("<") else Path(".")
    path = str((here / os.path.expanduser(raw)).resolve())
    try:
        data = Path(path).read_bytes()[:1 << 20]
    except OSError as e:
        doc.error(where, f"cannot read {path}: {e.strerror or e}")
        return None
    from sfcluster.tls.pki import ca_cert_problem  # the cryptography import only where it is needed
    why = ca_cert_problem(data)
    if why:
        doc.error(where, f"{path}: {why}")
        return None
    return path


def _ssh(doc: YamlDoc, raw: Any, path: Tuple[str, ...], base: SshSpec) -> SshSpec:
    m = doc.mapping(raw, path, SSH_KEYS)
    return SshSpec(
        user=doc.string(m, "user", path, base.user),
        port=doc.integer(m, "port", path, base.port, 1, 65535, "port"),
        identity_file=doc.string(m, "identity_file", path, base.identity_file),
        alias=doc.string(m, "alias", path, base.alias),
        proxy_jump=doc.string(m, "proxy_jump", path, base.proxy_jump, _check_proxy_jump),
    )


def _provision(doc: YamlDoc, raw: Any, source: str, needs_ray: bool = True) -> Tuple[Optional[Provision], str]:
    """`provision:` (what `sfcluster provision` installs) and the default base_python of the nodes.
    Controller paths (wheelhouse, index_credentials, lock) are relative to the inventory's directory."""
    path = ("provision",)
    m = doc.mapping(raw, path, PROVISION_KEYS)
    base = doc.string(m, "base_python", path, DEFAULT_BASE_PYTHON, _check_python) or DEFAULT_BASE_PYTHON
    if raw is None:
        return None, base
    for key in ("package", "version") + (("ray_version",) if needs_ray else ()):
        if m.get(key) is None:
            doc.error(path + (key,), "missing (provision pins an exact SecretFlow and Ray, e.g. package: "
                                     "secretflow-lite, version: 1.10.0b1, ray_version: 2.9.3"
                      + ("; in production mode ray_version may be left out: no Ray runs)" if needs_ray else ")"))
    package = doc.string(m, "package", path, None, _one_of(PACKAGES))
    version = doc.string(m, "version", path, None, _check_version)
    ray_version = doc.string(m, "ray_version", path, None, _check_version)
    index_url = doc.string(m, "index_url", path, None, _check_index_url)
    credentials = doc.string(m, "index_credentials", path, None)
    wheelhouse = doc.string(m, "wheelhouse", path, None)
    lock = doc.string(m, "lock", path, None)
    if m.get("wheelhouse") and m.get("index_url"):
        doc.error(path + ("wheelhouse",), "set either wheelhouse (nodes install from it, without an index) or "
                                          "index_url, not both")
    if m.get("index_credentials") and not m.get("index_url"):
        doc.error(path + ("index_credentials",), "credentials without index_url: name the private index too")
    here = Path(source).parent if source and not source.startswith("<") else Path(".")

    def local(p: Optional[str]) -> Optional[str]:
        return str((here / os.path.expanduser(p)).resolve()) if p else None
    if not (package and version and (ray_version or not needs_ray)):
        return None, base
    return Provision(package=package, version=version, ray_version=ray_version, index_url=index_url,
                     index_credentials=local(credentials), wheelhouse=local(wheelhouse), lock=local(lock)), base


def _check_version(v: str) -> Optional[str]:
    if not VERSION.match(v):
        return f"'{v}' is not an exact version (like 1.10.0b1; no ==, >=, spaces or wildcards)"
    return None


DEFAULT_ROOT_PYTHON = "/usr/bin/python3"


def _check_absolute(v: str) -> Optional[str]:
    if not PYTHON_PATH.match(v) or not v.startswith("/") or "/../" in v + "/":
        return f"'{v}' is not an absolute path (the root-owned interpreter privileged node scripts run with)"
    return None


def _check_python(v: str) -> Optional[str]:
    if not PYTHON_PATH.match(v) or (not v.startswith("/") and "/" in v):
        return f"'{v}' is neither an absolute path nor a command name (like python3.10)"
    return None


def _check_index_url(v: str) -> Optional[str]:
    if re.match(r"^http://", v, re.I):
        return (f"'{v}' is plain http: anyone on the path could read the index password and serve other "
                "packages; use the index's https:// URL")
    if not re.match(r"^https://[^\s/]+[^\s]*$", v, re.I):
        return f"'{v}' is not an https:// URL"
    if "@" in v.split("/", 3)[2]:
        return ("holds credentials: a command line and this file are no place for them; put USER:PASSWORD in a "
                "0600 file and name it in provision.index_credentials")
    return None


def _check_ports(doc: YamlDoc, cluster: Cluster) -> None:
    """Overlapping ports on one host are errors (two parties may share a host in tests)."""
    from sfcluster.inventory.ports import plan_ports

    by_host: Dict[str, Dict[int, str]] = {}
    for entry in plan_ports(cluster).entries:
        if not entry.binds_here:
            continue
        host = cluster.node(entry.node).host
        taken = by_host.setdefault(host, {})
        for port in range(entry.port, entry.port_end + 1):
            other = taken.get(port)
            if other and other != f"{entry.node}:{entry.purpose}":
                # point at a key the file actually has: the later entry's, else the earlier one's
                onode, opurpose = other.split(":", 1)
                paths = _port_paths(entry.node, entry.purpose) + _port_paths(onode, opurpose)
                if onode != entry.node:  # two parties on one host: most often the host is a typo
                    path = next((q for q in [("nodes", entry.node, "host"), *paths] if q in doc.lines), ("ports",))
                    doc.error(path, f"parties {onode} and {entry.node} are both on host {host}, and port {port} "
                                    f"({opurpose}) is planned for each: give each party its own host (a copy-paste "
                                    f"slip?), or, for two parties on one machine, ports that do not overlap")
                    return
                path = next((q for q in paths if q in doc.lines), ("ports",))
                doc.error(path, f"port {port} on {host} is planned twice: {other} and {entry.node}:{entry.purpose}")
                return
            taken[port] = f"{entry.node}:{entry.purpose}"
    seen: Dict[str, str] = {}
    for n in cluster.nodes:
        if n.host in seen and n.spu_port == cluster.node(seen[n.host]).spu_port:
            doc.error(("nodes", n.name, "spu_port"), f"same SPU port as {seen[n.host]} on host {n.host}")
        seen.setdefault(n.host, n.name)


def _port_paths(node: str, purpose: str) -> List[Tuple[str, ...]]:
    """The YAML keys that set a planned port, most specific first."""
    if purpose == "spu":
        return [("nodes", node, "spu_port"), ("ports", "spu_base")]
    if purpose == "cross_silo":
        return [("nodes", node, "cross_silo_port"), ("ports", "cross_silo_base")]
    return [("ports", purpose)]  # every other purpose is named after its key under `ports:`


def operated_by(cluster: Cluster, parties: Sequence[str]) -> Cluster:
    """The cluster as one operator of a federation sees it (`--party NAME`, repeatable): every
    party's entry still gives its addresses and ports (each driver must reach the others), but
    only the named parties' nodes are touched. Production mode only: in simulation mode one Ray
    cluster spans every party, so one operator runs it all."""
    where = "--party"
    unknown = [p for p in parties if p not in cluster.party_names]
    if unknown:
        raise InventoryError(cluster.source, [Problem(where, None, f"no party {', '.join(map(repr, unknown))} in the "
                                                                   f"inventory (parties: {', '.join(cluster.party_names)})")])
    if cluster.mode is not Mode.PRODUCTION:
        raise InventoryError(cluster.source, [Problem(where, None, "is for production mode, where each party runs its "
                                                                   "own driver and each organisation operates its own "
                                                                   "node; this inventory is in simulation mode (one Ray "
                                                                   "cluster over every party, one operator)")])
    return replace(cluster, operated=tuple(dict.fromkeys(parties)))
