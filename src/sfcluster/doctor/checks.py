"""The checks. Each yields Check(node, name, status, detail, fix). Facts come from one probe per
node (in parallel), reachability from short-lived listeners and one connector per peer."""
from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Dict, List, Optional, Tuple

from sfcluster.exitcodes import Exit
from sfcluster.connect import Nodes
from sfcluster.remote.group import fan_out
from sfcluster.upplan import unfiltered_reason
from sfcluster.tls.install import enabled as tls_enabled, inspect as inspect_tls, peer_cas
from sfcluster.errors import ConnectError, HostKeyError, SfclusterError
from sfcluster.firewall.addresses import UnresolvedHost, peer_addresses
from sfcluster import nodescripts
from sfcluster.facts import NodeFacts, gather_all
from sfcluster.inventory.model import Cluster, FirewallMode, Node
from sfcluster.inventory.model import MIN_CPUS
from sfcluster.inventory.ports import PortEntry, plan_ports, spu_clashes_with_ray_defaults
from sfcluster.remote.base import Runner

MIN_MEM = 2 * 1024**3
MIN_TMP = 2 * 1024**3


class Status(str, Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass
class Check:
    node: str
    name: str
    status: Status
    detail: str
    fix: str = ""
    port: Optional[int] = None


@dataclass
class Report:
    checks: List[Check] = field(default_factory=list)
    facts: Dict[str, NodeFacts] = field(default_factory=dict)

    def add(self, *a, **kw) -> None:
        self.checks.append(Check(*a, **kw))

    @property
    def failed(self) -> List[Check]:
        return [c for c in self.checks if c.status is Status.FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0; 77 when the only problems are sudo asking for a password (the code `up --skip-check`
        gives for the same outcome: one outcome, one code, whichever path finds it); else 65."""
        if self.ok:
            return int(Exit.OK)
        return int(Exit.NO_PRIVILEGE if all(c.name == "sudo" for c in self.failed) else Exit.PREFLIGHT)

    def problems(self) -> List[dict]:
        """The failed checks as `--json` problems: path = the node, with the check's fix."""
        return [{"path": c.node, "line": None, "message": f"{c.name}: {c.detail}", "fix": c.fix or None}
                for c in self.failed]

    def to_json(self) -> dict:
        return {"checks": [dict(asdict(c), status=c.status.value) for c in self.checks], "problems": self.problems()}


def run_checks(cluster: Cluster, runners: Dict[str, Runner], reach: bool = True, tls_reissue: bool = False) -> Report:
    """Every check; tls_reissue (`up --rotate-certs`): certificate problems are what that `up` fixes,
    so they warn instead of failing."""
    report = Report()
    gathered = gather_all(cluster, runners)
    for name, err in gathered.errors.items():
        _ssh_failure(report, name, err)
    report.facts = dict(gathered.results)
    for name, facts in report.facts.items():
        report.add(name, "ssh", Status.OK, f"{facts.user}@{facts.hostname}, host key verified")
    _versions(cluster, report)
    _dashboard(cluster, report)
    for name, facts in report.facts.items():
        _ports(cluster, report, facts)
        _addresses(cluster, report, facts)
        if cluster.mode.runs_ray:  # production mode starts no Ray: another Ray there is nobody's business of ours
            _ray_running(cluster, report, facts)
        _privileges_and_firewall(cluster, report, facts)
        _resources(report, facts)
    for name in cluster.operated_names:
        _cpus(report, cluster.node(name))
    for msg in spu_clashes_with_ray_defaults(cluster):
        report.add(msg.split(":")[0], "spu_port", Status.WARN, msg, "pick an SPU port above 20000")
    _ray_user(cluster, runners, report)
    _tls(cluster, runners, report, tls_reissue)
    _data(cluster, runners, report)
    if reach and cluster.federated:
        # the peers' nodes are their own operators': nothing listens there for this controller's
        # probe. What proves the links is a run's start: its deadline names a party not reached.
        report.add("*", "reachability", Status.WARN, "not checked: the other parties' nodes are their operators' "
                   f"(--party {','.join(cluster.operated_names)}); a run's start deadline names a party that cannot "
                   "be reached", "each operator runs `sfcluster check --party THEIRS`; open the ports between the "
                   "parties' networks")
    elif reach and len(report.facts) == len(cluster.nodes):
        _reachability(cluster, runners, report)
    elif reach:
        report.add("*", "reachability", Status.WARN, "skipped: not every node answered over SSH")
    return report


def _ray_user(cluster: Cluster, runners: Dict[str, Runner], report: Report) -> None:
    """Who Ray (and the driver) runs as on each node. It runs whatever code a driver sends, and in
    simulation mode whatever a peer's driver sends through Ray; in production mode the cross-silo
    link unpickles what peers send. So that user must not be root, nor able to become root
    without a password (sudo -n): FAIL, naming the fix (a `ray_user` without sudo rights). An
    inventory `ray_user` must exist there and be reachable with `sudo -n -u` from the SSH user."""
    nodes = Nodes(cluster, runners=runners)

    def fix(n: str, ssh_user: str, not_this: str = "") -> str:
        user = f"<a user without sudo rights, not {not_this}>" if not_this else "<a user without sudo rights>"
        return (f"set ray_user: {user} (nodes.{n}.ray_user or top level), and let {ssh_user} run "
                f"commands as it without a password (sudoers: {ssh_user} ALL=(<that user>) NOPASSWD: ALL); "
                "sfcluster does not create users (runbook section 7)")

    def one(n: str) -> None:
        f = report.facts[n]
        user = cluster.node(n).ray_user or f.user
        who = "Ray, the wrapper and the driver" if cluster.mode.runs_ray else "the wrapper and this party's driver"
        danger = "any code a driver runs, or a peer sends, would run as root on this node"
        if user == "root":
            report.add(n, "ray_user", Status.FAIL, f"{who} would run as root here: {danger}", fix(n, f.user))
            return
        if user == f.user:
            if f.sudo == "nopasswd":
                report.add(n, "ray_user", Status.FAIL, f"{who} would run as the SSH user {user}, who becomes root "
                           f"without a password (sudo -n): {danger}", fix(n, f.user))
            else:
                report.add(n, "ray_user", Status.OK, f"{who} run as the SSH user {user} (no passwordless sudo)")
            return
        res = nodes.ray(n).run(["sh", "-c", "id -un; sudo -n true </dev/null >/dev/null 2>&1 && echo SUDO-NOPASSWD; true"],
                               timeout=15)
        said = res.stdout.split()
        if res.ok and said[:1] == [user]:
            if "SUDO-NOPASSWD" in said:
                report.add(n, "ray_user", Status.FAIL, f"ray_user {user} becomes root without a password (sudo -n): "
                           f"{danger}", fix(n, f.user, not_this=user))
            else:
                report.add(n, "ray_user", Status.OK, f"{who} run as {user} (sudo -n -u from {f.user}; no passwordless sudo)")
        else:
            report.add(n, "ray_user", Status.FAIL, f"cannot run as ray_user {user} from {f.user}: "
                       f"{(res.stderr or res.stdout).strip()[-200:] or 'exit %d' % res.exit_code}",
                       f"create user {user} on {n} and let {f.user} run commands as it without a password "
                       f"(sudoers: {f.user} ALL=({user}) NOPASSWD: ALL)")
    fan_out(one, [n for n in cluster.party_names if n in report.facts])


def _data(cluster: Cluster, runners: Dict[str, Runner], report: Report) -> None:
    """Each party's `data:` files, on its own node, as the user Ray runs as: there, readable, their
    size and sha256 (cached on the node by inode, size, mtime and ctime). A missing one fails naming party,
    name and path."""
    from sfcluster import data
    from sfcluster.sizes import human_size
    reachable = [n for n in cluster.party_names if n in report.facts]
    for party, files in data.check(cluster, Nodes(cluster, runners=runners), reachable).items():
        for f in files:
            if f.unchecked:  # the cause has its own row (ssh, ray_user); nothing is known of the file
                report.add(party, "data", Status.WARN, f"{f.name}: {f.path}: not checked: {f.error}",
                           f"fix what {party}'s other rows name, then check again")
            elif f.error:
                report.add(party, "data", Status.FAIL, f"{f.name}: {f.path}: {f.error}",
                           f"put the file there from this controller: sfcluster data push {party} {f.name} "
                           f"LOCAL_FILE (it goes to {party}'s node only)" if f.error == "missing" else
                           f"make {f.path} a regular file the user Ray runs as on {party} can read")
            else:
                report.add(party, "data", Status.OK, f"{f.name}: {f.path}, {human_size(f.size)}, "
                           f"sha256 {(f.sha256 or '')[:16]}{' (cached)' if f.cached else ''}")


def _tls(cluster: Cluster, runners: Dict[str, Runner], report: Report, reissue: bool) -> None:
    """tls: on: each node's key, certificate and CA (files, owner, mode, key matching the
    certificate on the node; chain to this cluster's CA, SAN and expiry here). tls: off warns."""
    if not tls_enabled(cluster):
        report.add("*", "tls", Status.WARN, "tls: off: Ray's gRPC and the SPU links (the secret shares) cross the "
                   "network in clear, and any process that reaches the GCS can drive the cluster",
                   "set tls: on (the default); `sfcluster up` issues the certificates")
        return
    try:
        peer_cas(cluster)
    except SfclusterError as e:
        report.add("*", "tls", Status.FAIL, e.message, e.hint)
        return
    reachable = [n for n in cluster.party_names if n in report.facts]
    for n, t in inspect_tls(cluster, Nodes(cluster, runners=runners), names=reachable).items():
        if t.error:
            report.add(n, "tls", Status.FAIL, f"cannot check the certificates: {t.error}")
        elif not t.installed:
            report.add(n, "tls", Status.OK, "no certificate yet: `sfcluster up` issues one from the cluster's CA")
        elif t.problems:
            report.add(n, "tls", Status.WARN if reissue else Status.FAIL, "; ".join(t.problems),
                       "reissue every node's certificate" + (" and restart Ray" if cluster.mode.runs_ray else "")
                       + ": sfcluster up --rotate-certs")
        elif t.trust_stale:
            report.add(n, "tls", Status.WARN, f"its {t.dir}/ca.pem trusts other CAs than the inventory names "
                       "(a peer organisation's ca_cert added, changed or removed)", "`sfcluster up` installs the "
                       "inventory's CAs there, with a fresh certificate")
        elif t.warnings:
            report.add(n, "tls", Status.WARN, "; ".join(t.warnings), "sfcluster up --rotate-certs")
        else:
            report.add(n, "tls", Status.OK, f"certificate of the cluster's CA, {t.days_left:.0f} days left ({t.dir})")


def _cpus(report: Report, node: Node) -> None:
    """Below MIN_CPUS a party cannot train: its SPU runtime actor holds a CPU for its whole life
    and its PYU tasks wait for one forever (raycluster/resources.py)."""
    if node.cpus < MIN_CPUS:
        report.add(node.name, "cpus", Status.FAIL,
                   f"cpus: {node.cpus} is below the {MIN_CPUS} a party needs: the SPU runtime holds one CPU for "
                   f"the whole run and every task of {node.name} needs another, so training would wait forever",
                   f"set `cpus: {MIN_CPUS}` (or more) for {node.name} in the inventory (nodes.{node.name}.cpus or the "
                   f"top-level cpus)")
    else:
        report.add(node.name, "cpus", Status.OK, f"cpus: {node.cpus} (Ray --num-cpus; at least {MIN_CPUS})")


def _ssh_failure(report: Report, name: str, err: BaseException) -> None:
    if isinstance(err, (HostKeyError, ConnectError)):
        report.add(name, "ssh", Status.FAIL, err.message, err.hint or "")
    elif isinstance(err, SfclusterError):
        report.add(name, "python", Status.FAIL, err.message, err.hint or "")
    else:
        report.add(name, "ssh", Status.FAIL, f"{type(err).__name__}: {err}", "check SSH access to this node")


# The first secretflow(-lite) release without simulation mode in the lite package (measured on
# 1.13.0b0: `sf.init(parties=..., address=...)` raises NotSupportedError: DISTRIBUTION_MODE.SIMULATION
# mode is not supported in lite version); secretflow 1.14 uses no Ray at all.
NO_SIMULATION_FROM = (1, 11)


def release(version: str) -> Tuple[int, ...]:
    """(major, minor) of a version string such as 1.10.0b1; () when it has none."""
    parts = re.match(r"^(\d+)\.(\d+)", version or "")
    return (int(parts.group(1)), int(parts.group(2))) if parts else ()


def _mode_support(cluster: Cluster, report: Report) -> None:
    """A simulation cluster on a SecretFlow that cannot run it fails here, not inside sf.init."""
    if cluster.mode.runs_ray:
        for n, f in report.facts.items():
            r = release(f.secretflow or "")
            if r and r >= NO_SIMULATION_FROM:
                report.add(n, "mode", Status.FAIL, f"secretflow {f.secretflow} has no simulation mode (the lite "
                           "package dropped it in 1.11; secretflow 1.14 has no Ray at all)",
                           "set `mode: production` in the inventory (one driver per party), or provision "
                           "secretflow-lite 1.10.0b1 with ray 2.9.3")


def _versions(cluster: Cluster, report: Report) -> None:
    _mode_support(cluster, report)
    needs = (("ray", 1), ("secretflow", 2)) if cluster.mode.runs_ray else (("secretflow", 2),)
    rows = {n: (f.python, f.ray, f.secretflow) for n, f in report.facts.items()}
    for n, (py, ray, sf) in rows.items():
        missing = [what for what, i in needs if not (py, ray, sf)[i]]
        if missing:
            report.add(n, "versions", Status.FAIL, f"{' and '.join(missing)} not installed for {cluster.node(n).python}",
                       "sfcluster provision -i INVENTORY (with the inventory's provision: pins)" if cluster.provision
                       else f"pip install secretflow-lite in that venv, or set nodes.{n}.python")
    distinct = {v for v in rows.values()}
    if len(distinct) > 1:
        table = "; ".join(f"{n}: python {p}, ray {r}, secretflow {s}" for n, (p, r, s) in rows.items())
        head = rows.get(cluster.head_name)
        for n, v in rows.items():
            if v != head:
                report.add(n, "versions", Status.FAIL,
                           f"differs from the head ({cluster.head_name}): {table}",
                           f"install the head's versions on {n}: python {head[0] if head else '?'}, "
                           f"ray=={head[1] if head else '?'}, secretflow-lite=={head[2] if head else '?'} "
                           "(Ray needs the same Ray and Python version on every node)")
    elif rows:
        p, r, s = next(iter(distinct))
        prov = cluster.provision
        for n in rows:
            ray_differs = prov is not None and prov.ray_version is not None and r != prov.ray_version
            if prov and (ray_differs or s != prov.version):
                report.add(n, "versions", Status.FAIL, f"ray {r}, secretflow {s}: the inventory's provision: pins "
                           + (f"ray {prov.ray_version}, " if prov.ray_version else "") + f"{prov.package} {prov.version}",
                           "sfcluster provision -i INVENTORY (rebuilds the venvs that differ)")
            else:
                report.add(n, "versions", Status.OK, f"python {p}, ray {r}, secretflow {s}")


def _dashboard(cluster: Cluster, report: Report) -> None:
    """ports.dashboard: the head's venv needs Ray's dashboard packages (ray[default]); secretflow-lite
    installs plain `ray`, and `ray start --include-dashboard=true` then exits at once."""
    head = report.facts.get(cluster.head_name)
    missing = head.raw.get("dashboard_missing") if head is not None else None
    if missing:
        ray = head.ray or "RAY_VERSION"
        report.add(cluster.head_name, "dashboard", Status.FAIL,
                   f"ports.dashboard is {cluster.ray.dashboard}, but the head's venv lacks Ray's dashboard packages "
                   f"({', '.join(missing)}): Ray's head would not start",
                   f"install them in {cluster.head.python}'s venv: pip install 'ray[default]=={ray}'; "
                   "or remove ports.dashboard")


def _ports(cluster: Cluster, report: Report, facts: NodeFacts) -> None:
    bad = False
    ours = 0
    for b in facts.busy():
        if b.ours:
            ours += 1
            continue
        bad = True
        holder = b.holder or {}
        stale = any(k in holder.get("cmdline", "") for k in ("ray::", "SPURuntime", "secretflow"))
        fix = (f"stop the leftover process: kill {holder.get('pid')} (a stale SecretFlow/Ray worker of an earlier run)"
               if stale else f"stop pid {holder.get('pid')} or change the port in the inventory (ports:)")
        report.add(facts.node, "ports_free", Status.FAIL, b.describe(), fix, port=b.port)
    if not bad:
        extra = f" ({ours} held by this cluster's own Ray/SPU)" if ours else ""
        report.add(facts.node, "ports_free", Status.OK, f"every planned port is free{extra}")


def _addresses(cluster: Cluster, report: Report, facts: NodeFacts) -> None:
    node = cluster.node(facts.node)
    local = set(facts.addresses)
    if node.host not in local and cluster.mode.runs_ray:
        report.add(node.name, "ray_address", Status.FAIL,
                   f"{node.host} is not an address of this node (NAT?); Ray needs direct reachability",
                   "use an address bound on the node as nodes.%s.host; Ray through NAT is not supported" % node.name)
    spu_port = node.spu_port
    if node.spu_advertise in local:
        report.add(node.name, "spu_address", Status.OK, f"SPU listens on {node.spu_advertise}:{spu_port}", port=spu_port)
    elif node.spu_bind and node.spu_bind in local | {"0.0.0.0"}:
        report.add(node.name, "spu_address", Status.OK,
                   f"SPU advertised as {node.spu_advertise}:{spu_port}, listen_address {node.spu_bind}:{spu_port}",
                   port=spu_port)
    else:
        candidates = [a for a in facts.addresses if a != "127.0.0.1" and ":" not in a]
        report.add(node.name, "spu_address", Status.FAIL,
                   f"advertised SPU address {node.spu_advertise}:{spu_port} is not bound on this node "
                   "(would fail with 'Fail to listen')",
                   f"set nodes.{node.name}.bind: {candidates[0] if candidates else '<a local address>'} "
                   "(becomes SPU's listen_address; not listen_addr, which SPU ignores)", port=spu_port)


def _ray_running(cluster: Cluster, report: Report, facts: NodeFacts) -> None:
    foreign = facts.foreign_ray
    if foreign:
        p = foreign[0]
        report.add(facts.node, "ray_running", Status.FAIL,
                   f"Ray is already running here and is not cluster '{cluster.name}': {p['kind']} pid {p['pid']} "
                   f"(user {p['user']})", "stop it where it was started (`ray stop`), then retry; sfcluster never kills it")
    elif facts.our_raylet_pids:
        report.add(facts.node, "ray_running", Status.OK, f"running as cluster '{cluster.name}' (raylet pid "
                   f"{', '.join(map(str, facts.our_raylet_pids))})")
    else:
        report.add(facts.node, "ray_running", Status.OK, "no Ray running")
    for other in facts.other_clusters:
        report.add(facts.node, "ray_running", Status.WARN,
                   f"sfcluster cluster '{other}' runs Ray here too: it shares this node's CPUs and memory "
                   "(its ports are checked against ours above)", "fine if intended; `sfcluster down` it otherwise")


def _privileges_and_firewall(cluster: Cluster, report: Report, facts: NodeFacts) -> None:
    fw = facts.firewall
    if cluster.firewall is FirewallMode.OPEN and facts.sudo == "password":
        report.add(facts.node, "sudo", Status.FAIL,
                   f"user {facts.user} needs root for firewall rules but `sudo -n` asks for a password",
                   f"allow passwordless sudo for {facts.user} (firewall tools), or use firewall: check")
    unfiltered = unfiltered_reason(cluster, facts)
    if cluster.firewall is FirewallMode.OFF:
        report.add(facts.node, "firewall", Status.WARN, f"backend {fw.backend}; firewall: off: sfcluster neither "
                   "scopes nor checks who reaches Ray and SPU here", "set firewall: open (or check)")
    elif cluster.firewall is FirewallMode.OPEN and cluster.node(facts.node).firewall_backend == "none":
        report.add(facts.node, "firewall", Status.WARN, "firewall_backend: none: this node's Ray and SPU ports are "
                   "open to everyone who reaches it (an explicit opt-out)", "drop firewall_backend: none to let sfcluster scope them")
    elif unfiltered:
        report.add(facts.node, "firewall", Status.FAIL, unfiltered[0], unfiltered[1])
    elif fw.backend == "unknown":
        report.add(facts.node, "firewall", Status.WARN, f"backend not detected: {fw.error}",
                   "run check as root or with passwordless sudo to see firewall rules")
    else:
        present = "present" if fw.rules_present else "not present"
        try:
            resolved = _resolved_hosts(cluster)
        except UnresolvedHost as e:
            report.add(facts.node, "firewall", Status.FAIL, e.message, e.hint)
            return
        report.add(facts.node, "firewall", Status.OK, f"backend {fw.backend}; sfcluster rules {present}{resolved}")


def _resolved_hosts(cluster: Cluster) -> str:
    """With firewall: open, the addresses the rules carry for the hosts that are names (resolved
    once here, the same for every node), as a tail of the firewall row. Raises UnresolvedHost."""
    shown = peer_addresses(cluster).shown() if cluster.firewall is FirewallMode.OPEN else ""
    return f"; rules carry addresses resolved here: {shown}" if shown else ""


def _resources(report: Report, facts: NodeFacts) -> None:
    problems = []
    if facts.mem_available is not None and facts.mem_available < MIN_MEM:
        problems.append(f"only {facts.mem_available / 2**30:.1f} GiB memory available")
    if facts.tmp_free is not None and facts.tmp_free < MIN_TMP:
        problems.append(f"only {facts.tmp_free / 2**30:.1f} GiB free for Ray's temp dir")
    if facts.shm_free is not None and facts.shm_free < 512 * 1024**2:
        problems.append(f"/dev/shm has {facts.shm_free / 2**20:.0f} MiB: Ray's object store falls back to /tmp")
    if problems:
        report.add(facts.node, "resources", Status.WARN, "; ".join(problems), "free memory/disk or enlarge /dev/shm")
    else:
        report.add(facts.node, "resources", Status.OK,
                   f"{(facts.mem_available or 0) / 2**30:.1f} GiB memory, {(facts.tmp_free or 0) / 2**30:.0f} GiB tmp")


def _dial_address(cluster: Cluster, e: PortEntry) -> str:
    node = cluster.node(e.node)
    return node.spu_advertise if e.purpose == "spu" else node.host


def _listen_address(cluster: Cluster, e: PortEntry) -> str:
    node = cluster.node(e.node)
    return node.link_bind if e.purpose == "spu" else node.host


def _reachability(cluster: Cluster, runners: Dict[str, Runner], report: Report, timeout: float = 2.0) -> None:
    """Listen on every port a peer must reach (first/last of ranges), connect from each peer."""
    entries = list(plan_ports(cluster).reachable())
    listen: Dict[str, List[Tuple[str, int]]] = {}
    targets: Dict[str, List[Tuple[str, str, int]]] = {}
    for e in entries:
        for port in e.probe_ports():
            listen.setdefault(e.node, []).append((_listen_address(cluster, e), port))
            for r in e.reachers:
                targets.setdefault(r, []).append((f"{e.node}|{e.purpose}|{port}", _dial_address(cluster, e), port))
    stop = threading.Event()
    errors: Dict[str, str] = {}
    threads = _listeners(cluster, runners, listen, stop, errors)

    def connect(n: str) -> Dict[str, str]:
        res = runners[n].run(nodescripts.argv(cluster.node(n), "reach_connect", {"timeout": timeout, "targets": targets[n]}),
                             timeout=timeout * 3 + 10).check()
        return json.loads(res.stdout.strip().splitlines()[-1])

    outcome = fan_out(connect, targets)
    stop.set()
    for t in threads:
        t.join(5)
    for src, err in outcome.errors.items():
        report.add(src, "reachability", Status.FAIL, f"could not run the connect test: {err}")
    rules_present = {n: f.firewall.rules_present for n, f in report.facts.items()}
    blocked_any = False
    for src, results in outcome.results.items():
        for key, how in sorted(results.items()):
            if how != "ok":
                blocked_any = True
                _blocked(cluster, report, src, key, how, rules_present)
    for n, err in errors.items():
        report.add(n, "reachability", Status.FAIL, f"listener failed: {err}")
    if not blocked_any and not outcome.errors:
        report.add("*", "reachability", Status.OK,
                   f"every peer reaches every planned port ({sum(len(v) for v in targets.values())} connections)")


def _listeners(cluster: Cluster, runners: Dict[str, Runner], listen: Dict[str, List[Tuple[str, int]]],
               stop: threading.Event, errors: Dict[str, str]) -> List[threading.Thread]:
    """A listener on each node for its planned ports (reach_listen.py), each READY (or failed,
    into `errors`) before this returns; they go when `stop` is set (their channel closes)."""
    ready: Dict[str, threading.Event] = {n: threading.Event() for n in listen}

    def listener(n: str) -> None:
        buf = bytearray()

        def on_out(data: bytes) -> None:
            buf.extend(data)
            if b"READY" in buf:
                ready[n].set()
        try:
            # stdin stays open: the listener exits when this connection's channel closes
            runners[n].stream(nodescripts.argv(cluster.node(n), "reach_listen", listen[n]), on_stdout=on_out,
                              keep_stdin_open=True, stop=stop)
        except Exception as e:  # noqa: BLE001
            errors[n] = str(e)
        finally:
            ready[n].set()

    threads = [threading.Thread(target=listener, args=(n,), daemon=True) for n in listen]
    for t in threads:
        t.start()
    for n in listen:
        ready[n].wait(15)
    return threads


def _blocked(cluster: Cluster, report: Report, src: str, key: str, how: str, rules_present: Dict[str, bool]) -> None:
    """The row for one connection that did not get through, with the fix for how it failed."""
    dst, purpose, port_s = key.split("|")
    port = int(port_s)
    where = f"{src} -> {dst}:{port} ({purpose})"
    if how == "timeout" or "unreachable" in how.lower() or "no route" in how.lower():
        if cluster.firewall is FirewallMode.OPEN and not rules_present.get(dst):
            report.add(dst, "reachability", Status.WARN, f"{where} blocked now; will be opened by `sfcluster up`",
                       port=port)
        else:
            report.add(dst, "reachability", Status.FAIL, f"{where} blocked (firewall: {how})",
                       f"allow tcp/{port} from {cluster.node(src).host} on {dst} (or its network), "
                       f"or use firewall: open", port=port)
    elif how == "refused":
        report.add(dst, "reachability", Status.FAIL, f"{where} refused: nothing listens there",
                   f"check that nodes.{dst}.host/advertise is really this node's address (NAT?)", port=port)
    else:
        report.add(dst, "reachability", Status.FAIL, f"{where}: {how}", "check routing between the nodes", port=port)
