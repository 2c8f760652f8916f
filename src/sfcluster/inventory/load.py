"""Load and validate an inventory YAML. Every problem names its YAML path and line; nothing
else (no SSH, no remote step) happens until the file is valid."""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import yaml
from yaml.constructor import SafeConstructor

from sfcluster.errors import InventoryError, Problem
from sfcluster.inventory.model import Cluster, FirewallMode, Node, RayPorts, SpuSettings, SshSpec

SAFE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
PROTOCOLS = ("SEMI2K", "ABY3", "CHEETAH", "REF2K")
FIELDS = ("FM32", "FM64", "FM128")
BACKENDS = ("auto", "none", "iptables", "nftables", "ufw", "firewalld")
DEFAULT_PYTHON = "python3"
# YAML 1.1 reads these as booleans; no key of the inventory is a boolean, so they stay the words
# the user wrote (`firewall: off` must mean "off", not False).
_YAML11_BOOL_WORDS = {"yes", "no", "on", "off"}

TOP_KEYS = {"cluster", "head", "ssh", "python", "cpus", "ports", "spu", "firewall", "known_hosts", "ssh_config", "nodes"}
SSH_KEYS = {"user", "port", "identity_file", "alias", "proxy_jump"}
PORT_KEYS = {"ray_gcs", "ray_client_server", "dashboard", "node_manager", "object_manager", "metrics_export",
             "dashboard_agent_grpc", "dashboard_agent_http", "runtime_env_agent", "worker_ports", "spu_base"}
WORKER_KEYS = {"start", "count"}
SPU_KEYS = {"protocol", "field"}
NODE_KEYS = {"host", "ssh", "python", "cpus", "spu_port", "advertise", "bind", "data", "firewall_backend"}


class _Doc:
    """YAML data plus the line of every path, and the list of problems found so far."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.lines: Dict[Tuple[str, ...], int] = {}
        self.problems: List[Problem] = []
        try:
            node = yaml.compose(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise InventoryError(source, [Problem("", mark.line + 1 if mark else None,
                                                  f"not valid YAML: {getattr(e, 'problem', e)}")]) from e
        self.data = self._convert(node, ()) if node is not None else None

    def _convert(self, node: yaml.Node, path: Tuple[str, ...]) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: Dict[str, Any] = {}
            for k, v in node.value:
                key = str(k.value)
                if key in out:
                    first = self.lines.get(path + (key,))
                    self.lines[path + (key,)] = k.start_mark.line + 1
                    self.error(path + (key,), f"duplicate key (first at line {first})")
                self.lines[path + (key,)] = k.start_mark.line + 1
                out[key] = self._convert(v, path + (key,))
                self.lines[path + (key,)] = k.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(v, path + (str(i),)) for i, v in enumerate(node.value)]
        if node.tag == "tag:yaml.org,2002:str":
            return node.value
        if node.tag == "tag:yaml.org,2002:bool" and node.value.lower() in _YAML11_BOOL_WORDS:
            return node.value
        try:
            return SafeConstructor().construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as e:
            self.error(path, f"cannot read a value tagged {node.tag!r}: {getattr(e, 'problem', None) or e}")
            return None

    def line_of(self, path: Tuple[str, ...]) -> Optional[int]:
        """The line of `path`; a key absent from the file gets the line of its nearest present parent."""
        for i in range(len(path), -1, -1):
            line = self.lines.get(path[:i])
            if line:
                return line
        return None

    def error(self, path: Tuple[str, ...], message: str) -> None:
        """Reads as `a.b.c (line N): message`."""
        self.problems.append(Problem(".".join(path) or "<top>", self.line_of(path), message))

    # -- typed getters: report and return None on a bad value ---------------------------------
    def mapping(self, value: Any, path: Tuple[str, ...], allowed: set) -> Dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {_show(value)}")
            return {}
        for key in value:
            if key not in allowed:
                self.error(path + (key,), f"unknown key '{key}' (allowed: {', '.join(sorted(allowed))})")
        return value

    def integer(self, m: Dict[str, Any], key: str, path: Tuple[str, ...], default: Optional[int],
                lo: Optional[int] = None, hi: Optional[int] = None, what: str = "") -> Optional[int]:
        if key not in m or m[key] is None:
            return default
        v = m[key]
        p = path + (key,)
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(p, f"expected an integer, got {_show(v)}")
            return default
        if lo is not None and v < lo or hi is not None and v > hi:
            self.error(p, f"{what or 'value'} {v} out of range {lo}-{hi}")
            return default
        return v

    def port(self, m: Dict[str, Any], key: str, path: Tuple[str, ...], default: Optional[int]) -> Optional[int]:
        return self.integer(m, key, path, default, 1024, 65535, "port")

    def string(self, m: Dict[str, Any], key: str, path: Tuple[str, ...], default: Optional[str],
               check: Optional[Callable[[str], Optional[str]]] = None) -> Optional[str]:
        if key not in m or m[key] is None:
            return default
        v = m[key]
        if not isinstance(v, str) or not v:
            self.error(path + (key,), f"expected a non-empty string, got {_show(v)}")
            return default
        if check:
            msg = check(v)
            if msg:
                self.error(path + (key,), msg)
                return default
        return v


def _show(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    return f"{type(v).__name__} {v!r}"


def _check_name(v: str) -> Optional[str]:
    if not SAFE_NAME.match(v):
        return f"'{v}' is not a safe identifier (lowercase letter first, then a-z, 0-9, _; at most 31 chars)"
    return None


def _check_host(v: str) -> Optional[str]:
    try:
        ipaddress.ip_address(v)
        return None
    except ValueError:
        pass
    return None if HOSTNAME.match(v) else f"'{v}' is neither an IP address nor a valid host name"


def _one_of(choices: Tuple[str, ...]) -> Callable[[str], Optional[str]]:
    def check(v: str) -> Optional[str]:
        return None if v in choices else f"'{v}' is not one of {', '.join(choices)}"
    return check


def load_inventory(path: str) -> Cluster:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InventoryError(path, [Problem("", None, f"cannot read: {e.strerror}")]) from e
    return parse_inventory(text, source=path)


def parse_inventory(text: str, source: str = "<inventory>") -> Cluster:
    doc = _Doc(text, source)
    top = doc.mapping(doc.data, (), TOP_KEYS)
    if not isinstance(doc.data, dict):
        raise InventoryError(source, doc.problems or [Problem("", 1, "the inventory must be a YAML mapping")])

    name = doc.string(top, "cluster", (), None, _check_name)
    if top.get("cluster") is None:
        doc.error(("cluster",), "missing (a name for this cluster, e.g. 'cluster: demo')")

    ssh_default = _ssh(doc, top.get("ssh"), ("ssh",), SshSpec())
    python_default = doc.string(top, "python", (), DEFAULT_PYTHON)
    cpus_default = doc.integer(top, "cpus", (), 1, 1, 1024, "cpus")

    pm = doc.mapping(top.get("ports"), ("ports",), PORT_KEYS)
    pp = ("ports",)
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

    sm = doc.mapping(top.get("spu"), ("spu",), SPU_KEYS)
    spu = SpuSettings(
        protocol=doc.string(sm, "protocol", ("spu",), "SEMI2K", _one_of(PROTOCOLS)) or "SEMI2K",
        field=doc.string(sm, "field", ("spu",), "FM128", _one_of(FIELDS)) or "FM128",
        base_port=spu_base,
    )
    fw = doc.string(top, "firewall", (), "open", _one_of(tuple(m.value for m in FirewallMode))) or "open"

    nodes: List[Node] = []
    raw_nodes = top.get("nodes")
    if raw_nodes is None:
        doc.error(("nodes",), "missing (at least two parties are needed)")
        raw_nodes = {}
    elif not isinstance(raw_nodes, dict):
        doc.error(("nodes",), f"expected a mapping of party name -> node, got {_show(raw_nodes)}")
        raw_nodes = {}
    for i, (party, raw) in enumerate(raw_nodes.items()):
        np_ = ("nodes", party)
        if _check_name(party):
            doc.error(np_, f"party name {_check_name(party)}")
        nm = doc.mapping(raw, np_, NODE_KEYS)
        host = doc.string(nm, "host", np_, None, _check_host)
        if nm.get("host") is None:
            doc.error(np_ + ("host",), "missing (IP or DNS name that the other parties use)")
        dm = nm.get("data") or {}
        if not isinstance(dm, dict) or not all(isinstance(v, str) for v in dm.values()):
            doc.error(np_ + ("data",), "expected a mapping of name -> path")
            dm = {}
        advertise = doc.string(nm, "advertise", np_, None, _check_host)
        bind = doc.string(nm, "bind", np_, None, _check_host)
        spu_port = doc.port(nm, "spu_port", np_, None)
        if spu_port is None:
            spu_port = spu_base + i
            if spu_port > 65535:
                doc.error(np_ + ("spu_port",), f"default SPU port {spu_base}+{i} = {spu_port} is past 65535 (lower ports.spu_base)")
        nodes.append(Node(
            name=party,
            host=host or "",
            ssh=_ssh(doc, nm.get("ssh"), np_ + ("ssh",), ssh_default),
            python=doc.string(nm, "python", np_, python_default) or DEFAULT_PYTHON,
            cpus=doc.integer(nm, "cpus", np_, cpus_default, 1, 1024, "cpus") or 1,
            spu_port=spu_port,
            spu_advertise=advertise or host or "",
            spu_bind=bind,
            data=tuple(sorted((str(k), str(v)) for k, v in dm.items())),
            firewall_backend=doc.string(nm, "firewall_backend", np_, "auto", _one_of(BACKENDS)) or "auto",
        ))
    if raw_nodes and len(raw_nodes) < 2:
        doc.error(("nodes",), "a SecretFlow cluster needs at least two parties")

    head = doc.string(top, "head", (), nodes[0].name if nodes else None)
    if head is not None and nodes and head not in {n.name for n in nodes}:
        doc.error(("head",), f"'{head}' is not among nodes ({', '.join(n.name for n in nodes)})")
    elif head is not None:
        nodes.sort(key=lambda n: n.name != head)  # head first, others in file order

    cluster = Cluster(
        name=name or "invalid", head_name=head or "", nodes=tuple(nodes), ray=ray, spu=spu,
        firewall=FirewallMode(fw), known_hosts=doc.string(top, "known_hosts", (), None),
        ssh_config=doc.string(top, "ssh_config", (), None), source=source,
    )
    if not doc.problems:
        _check_ports(doc, cluster)
    if doc.problems:
        raise InventoryError(source, doc.problems)
    return cluster


def _ssh(doc: _Doc, raw: Any, path: Tuple[str, ...], base: SshSpec) -> SshSpec:
    m = doc.mapping(raw, path, SSH_KEYS)
    return SshSpec(
        user=doc.string(m, "user", path, base.user),
        port=doc.integer(m, "port", path, base.port, 1, 65535, "port"),
        identity_file=doc.string(m, "identity_file", path, base.identity_file),
        alias=doc.string(m, "alias", path, base.alias),
        proxy_jump=doc.string(m, "proxy_jump", path, base.proxy_jump),
    )


def _check_ports(doc: _Doc, cluster: Cluster) -> None:
    """Overlapping ports on one host are errors (two parties may share a host in tests)."""
    from sfcluster.ports import plan_ports

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
    return [("ports", purpose)]  # every other purpose is named after its key under `ports:`
