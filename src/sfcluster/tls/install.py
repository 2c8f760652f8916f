"""The cluster's certificates on the nodes: checked, issued from the controller's CA and shipped
(remote/transfer.py) by `up`; the TLS environment of every Ray process and of the driver; the SPU
links' `tls_opts`. With `tls: on`, all of Ray's gRPC (GCS, raylets, object transfers, the driver)
and every SPU link run under mutual TLS with certificates of ONE CA per cluster: a process without
such a certificate can neither join nor drive the cluster."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from sfcluster import state
from sfcluster.connect import Nodes
from sfcluster.errors import SfclusterError
from sfcluster.inventory.model import Cluster, Node, TlsMode
from sfcluster.nodescripts import contract as C
from sfcluster import nodescripts
from sfcluster.remote.group import fan_out
from sfcluster.remote.transfer import bundle, checked_dir, push
from sfcluster.tls.pki import (CA, ROTATE, days_left, ensure_ca, fingerprint, load_ca, new_ca, purge_ca, replace_ca,
                               trust_bundle, verify_node_cert)

Progress = Callable[[str, str], None]


def enabled(cluster: Cluster) -> bool:
    return cluster.tls is TlsMode.ON


# Ray's own processes also reach each other over loopback (the GCS server's client to itself, as
# server name 127.0.0.1): without loopback in the SAN that handshake fails ("No match found for
# server name: 127.0.0.1" in gcs_server.err) and, measured with ray 2.9.3, the GCS terminates
# itself 60 s after start ("Failed to connect to GCS within 60 seconds"), taking the cluster down
# under whatever runs. Only the node holds its key, so loopback names prove nothing to a peer.
LOOPBACK_NAMES = ("127.0.0.1", "localhost")


def cert_names(node: Node) -> List[str]:
    """What a node's certificate must name (its SAN): the address peers use for Ray, the SPU
    address it advertises and the one it binds, and loopback (LOOPBACK_NAMES)."""
    return list(dict.fromkeys(a for a in (node.host, node.spu_advertise, node.spu_bind, *LOOPBACK_NAMES) if a))


def ray_tls_env(tls_dir: str) -> Dict[str, str]:
    """Ray (2.9.3) puts all its gRPC under mutual TLS when every process has these."""
    return {"RAY_USE_TLS": "1", "RAY_TLS_SERVER_CERT": f"{tls_dir}/{C.TLS_CERT}",
            "RAY_TLS_SERVER_KEY": f"{tls_dir}/{C.TLS_KEY}", "RAY_TLS_CA_CERT": f"{tls_dir}/{C.TLS_CA}"}


def with_env(argv: Sequence[str], tls_dir: Optional[str]) -> List[str]:
    """argv run with the node's Ray TLS environment (paths only: no secret on the command line)."""
    if not tls_dir:
        return list(argv)
    return ["env", *(f"{k}={v}" for k, v in ray_tls_env(tls_dir).items()), *argv]


def tls_files(tls_dir: str) -> Dict[str, str]:
    """SecretFlow's `tls_config` (cert, key, ca_cert) for a node's certificate dir."""
    return {"cert": f"{tls_dir}/{C.TLS_CERT}", "key": f"{tls_dir}/{C.TLS_KEY}", "ca_cert": f"{tls_dir}/{C.TLS_CA}"}


def spu_tls_opts(tls_dir: str) -> Dict[str, Dict[str, object]]:
    """A cluster_def node's `tls_opts` (secretflow/device/device/spu.py): the same pair for the
    server and the client side, peers verified against the cluster's CA."""
    side = {"certificate_path": f"{tls_dir}/{C.TLS_CERT}", "private_key_path": f"{tls_dir}/{C.TLS_KEY}",
            "ca_file_path": f"{tls_dir}/{C.TLS_CA}", "verify_depth": 1}
    return {"server_ssl_opts": dict(side), "client_ssl_opts": dict(side)}


def peer_cas(cluster: Cluster) -> Dict[str, bytes]:
    """Production mode, a federation (`--party`): the CA certificate of every party this controller
    does not operate, from the inventory's `ca_cert` (each organisation keeps its own CA; the
    operators exchange the certificates, `sfcluster ca`). A peer without one is an error: its
    certificate could not be verified, so TLS could not be on."""
    if not cluster.federated or not enabled(cluster):
        return {}
    out: Dict[str, bytes] = {}
    missing = []
    for n in cluster.nodes:
        if n.name in cluster.operated_names:
            continue
        if not n.ca_cert:
            missing.append(n.name)
            continue
        try:
            out[n.name] = open(n.ca_cert, "rb").read()
        except OSError as e:
            raise SfclusterError(f"nodes.{n.name}.ca_cert: cannot read {n.ca_cert}: {e.strerror or e}") from e
    if missing:
        raise SfclusterError(
            f"tls: on and this controller operates only {', '.join(cluster.operated_names)} (--party), but the inventory "
            f"names no CA certificate for {', '.join(missing)} ({', '.join(f'nodes.{m}.ca_cert' for m in missing)}): "
            "their certificates cannot be verified",
            f"ask each of those parties' operators for their CA certificate (`sfcluster ca -i INVENTORY --party "
            f"THEIRS` prints it), save it and set nodes.<party>.ca_cert to its path; send them yours "
            f"(`sfcluster ca -i INVENTORY --party {cluster.operated_names[0]}`)")
    return out


def expected_ca_pem(cluster: Cluster, ca: CA) -> bytes:
    """What a node this controller operates keeps as `ca.pem`: the cluster's CA (this controller's)
    and, in a federation, every peer organisation's CA after it."""
    peers = peer_cas(cluster)
    return trust_bundle(ca.cert_pem, list(peers.values())) if peers else ca.cert_pem


def recorded_dirs(cluster: Cluster) -> Dict[str, str]:
    """Each node's certificate dir as `up` recorded it on this controller."""
    dirs = state.load(cluster.name).tls_dirs
    return {n: d for n, d in dirs.items() if isinstance(d, str)}


def dirs_for_run(cluster: Cluster, nodes: Nodes) -> Dict[str, str]:
    """The certificate dirs a run needs: as `up` recorded them on this controller, else as the nodes
    answer (a second controller, or one whose `up` was not the last: a run needs only where each
    node keeps its own files, never the CA's key). A dir a node answers is used only when it is the
    plain `~/.sfcluster/<cluster>/tls` of the user Ray runs as there (transfer.checked_dir)."""
    if not enabled(cluster):
        return {}
    dirs = recorded_dirs(cluster)
    missing = [n for n in cluster.operated_names if n not in dirs]
    if missing:
        dirs.update(_answered_dirs(cluster, nodes, missing))
    return dirs


def _answered_dirs(cluster: Cluster, nodes: Nodes, names: Sequence[str]) -> Dict[str, str]:
    """Each node's certificate dir, as its tls_check answers (in parallel; over the connections the
    caller holds, others opened here). A node that cannot be reached raises its own error (69)."""
    more = Nodes(cluster, [n for n in names if n not in nodes.runners])
    borrowed = {n: nodes.runners[n] for n in names if n in nodes.runners}
    more.runners.update(borrowed)

    def one(n: str) -> str:
        return nodescripts.call(more.ray(n), cluster.node(n), "tls_check", {"cluster": cluster.name},
                                what="its certificates", timeout=20).get("dir") or ""
    try:
        g = fan_out(one, names)
    finally:
        for n in borrowed:
            more.runners.pop(n)
        more.close()
    for e in g.errors.values():
        raise e
    absent = [n for n in names if not g.results[n]]
    if absent:
        raise SfclusterError(f"{', '.join(absent)} hold(s) no certificate of cluster '{cluster.name}' (tls: on)",
                             "bring the cluster up first: `sfcluster up` issues them")
    return {n: checked_dir(n, cluster.name, "tls", g.results[n]) for n in names}


@dataclass
class NodeTls:
    """What `check` and `status` learn about one node's certificates."""
    node: str
    dir: Optional[str] = None
    installed: bool = False          # a tls dir exists there
    problems: List[str] = field(default_factory=list)   # each names the file
    warnings: List[str] = field(default_factory=list)
    days_left: Optional[float] = None
    error: str = ""
    # its certificate is of this controller's CA, but its ca.pem trusts other CAs than the
    # inventory's (a peer organisation's CA added, changed or removed): `up` installs the new set
    trust_stale: bool = False
    # installed, but this controller has no CA to check it against (a second controller): `check`
    # fails (this controller's `up` could not go on), `status` only says so
    no_ca: bool = False

    @property
    def ok(self) -> bool:
        return self.installed and not self.problems and not self.error

    def to_json(self) -> dict:
        return {"dir": self.dir, "installed": self.installed, "problems": self.problems, "warnings": self.warnings,
                "trust_stale": self.trust_stale,
                "days_left": None if self.days_left is None else round(self.days_left, 1), "error": self.error or None}


def inspect(cluster: Cluster, nodes: Nodes, names: Optional[Sequence[str]] = None, ca: Optional[CA] = None,
            timeout: float = 20) -> Dict[str, NodeTls]:
    """On each node (in parallel): the files there, owner and mode, the key matching the
    certificate (nodescripts/tls_check.py); here, on the controller: the chain to this cluster's CA,
    the SAN and the expiry of the certificate fetched from the node."""
    ca = ca or load_ca(cluster.name)
    expected = expected_ca_pem(cluster, ca) if ca is not None else None

    def one(n: str) -> NodeTls:
        node = cluster.node(n)
        data = nodescripts.call(nodes.ray(n), node, "tls_check", {"cluster": cluster.name}, what="its certificates",
                                timeout=timeout)
        out = NodeTls(n, dir=data.get("dir"), installed=bool(data.get("dir")))
        if not out.installed:
            return out
        where = data["dir"]
        out.problems += [f"{where}/{p['file']}: {p['message']}" for p in data.get("problems", [])]
        cert, node_ca = data.get("cert_pem"), data.get("ca_pem")
        if ca is None:
            out.no_ca = True
            out.problems.append(f"{where}: certificates are installed, but this controller has no CA for cluster "
                                f"'{cluster.name}' ({ca_dir_of(cluster)}) to check them against")
        elif cert:
            findings = verify_node_cert(ca.cert_pem, cert.encode(), cert_names(node))
            for level, msg in findings:
                (out.problems if level == "FAIL" else out.warnings).append(f"{where}/{C.TLS_CERT}: {msg}")
            out.days_left = days_left(cert.encode())
            ours = not any(level == "FAIL" for level, _ in findings)
            held = (node_ca or "").encode().strip()
            differs = bool(held) and held != (expected or b"").strip()
            if differs and ours and (cluster.federated or held.startswith(ca.cert_pem.strip())):
                out.trust_stale = True
            elif differs:
                out.problems.append(f"{where}/{C.TLS_CA}: not this cluster's CA certificate (that of this "
                                    f"controller, {ca_dir_of(cluster)}): a rotation that did not reach this node, "
                                    f"an earlier CA, or another controller's; give every node the same new CA: "
                                    f"{ROTATE.strip('`')}")
        return out
    wanted = list(names) if names is not None else list(cluster.operated_names)
    g = fan_out(one, wanted)
    result = dict(g.results)
    for n, e in g.errors.items():
        result[n] = NodeTls(n, error=str(e))
    return result


def ca_dir_of(cluster: Cluster) -> str:
    return str(state.state_dir() / cluster.name / "ca")


def purge(cluster: Cluster, nodes: Nodes, names: Sequence[str], progress: Progress = lambda n, m: None) -> Dict[str, str]:
    """`down --purge`: the certificates removed from the given nodes and, when every node's went,
    the CA from the controller. Returns the errors by node."""
    def one(n: str) -> None:
        node = cluster.node(n)
        if nodescripts.call(nodes.ray(n), node, "tls_purge", {"cluster": cluster.name}, what="its certificates",
                            timeout=20).get("removed"):
            progress(n, "certificates removed")
    g = fan_out(one, names)
    errors = {n: str(e) for n, e in g.errors.items()}
    if not errors and set(names) == set(cluster.operated_names):
        purge_ca(cluster.name)
        progress("controller", f"CA of cluster '{cluster.name}' removed")
    return errors


def ensure_certs(cluster: Cluster, nodes: Nodes, *, rotate: bool = False,
                 progress: Progress = lambda n, m: None) -> Dict[str, str]:
    """Every node holds a valid key + certificate of this cluster's CA (issued and installed where
    not); returns each node's certificate dir (also recorded in the controller's state for `run` and
    `config`). The CA key never leaves the controller.
    rotate (`up --rotate-certs`, Ray stopped everywhere): a NEW CA replaces the cluster's (the old one
    deleted, pki.replace_ca), and every node gets its `ca.pem` and a new pair from it, so every
    certificate issued before, a leaked one too, fails verification on every node. Nothing changes
    until every node has answered; nodes the new files did not reach are named, and `check` flags
    them until a rotation reaches every node."""
    ca = new_ca(cluster.name) if rotate else ensure_ca(cluster.name)
    trusted = expected_ca_pem(cluster, ca)
    seen = inspect(cluster, nodes, ca=ca)
    errors = {n: t.error for n, t in seen.items() if t.error}
    if errors:
        raise SfclusterError("cannot check the certificates on " + "; ".join(f"{n}: {e}" for n, e in errors.items()))
    bad = {n: t.problems for n, t in seen.items() if t.installed and t.problems}
    if bad and not rotate:
        raise SfclusterError("certificates that do not check out: " + "; ".join(
            f"[{n}] {'; '.join(p)}" for n, p in bad.items()),
            "make a new CA, reissue every node's certificate from it and restart Ray: sfcluster up --rotate-certs")
    if rotate:
        replace_ca(cluster.name, ca)
        progress("controller", f"new CA for cluster '{cluster.name}' (sha256 {fingerprint(ca.cert_pem)[:16]}); the old "
                               "CA is deleted: no certificate it issued verifies on a node that holds the new one")
    dirs: Dict[str, str] = {}

    def install(n: str) -> None:
        t = seen[n]
        if t.installed and not rotate and not t.trust_stale:
            dirs[n] = t.dir or ""
            return
        key, cert = ca.issue(n, cert_names(cluster.node(n)))
        payload = bundle([(C.TLS_KEY, key, 0o600), (C.TLS_CERT, cert, 0o644), (C.TLS_CA, trusted, 0o644)])
        dirs[n] = push(nodes.ray(n), cluster.name, C.TLS_DIR, payload, mode="replace")
        progress(n, "new CA certificate and a certificate from it installed (--rotate-certs)" if rotate
                 else "the CAs it trusts changed (the inventory's ca_cert): installed with a fresh certificate"
                 if t.trust_stale else "certificate issued from the cluster's CA")
    g = fan_out(install, list(cluster.operated_names))
    if rotate and g.errors:
        lines = "\n".join(f"  {n}: {e}" for n, e in g.errors.items())
        raise SfclusterError(
            f"the cluster's CA was replaced, but the new certificates did not reach {', '.join(g.errors)}: "
            f"{'it holds' if len(g.errors) == 1 else 'they hold'} the old CA's, which no other node accepts now, "
            f"so the cluster is split over two CAs and Ray stays stopped:\n{lines}",
            "once every node is reachable, run `sfcluster up --rotate-certs` again (another new CA, every node "
            "reissued); `sfcluster check` names the nodes still on the old CA")
    g.raise_if_failed("installing certificates")
    return dirs
