"""What `up` must do, decided from the nodes' facts alone (no I/O): which nodes get firewall rules
and why, whether the head and which workers must be started, or why `up` refuses to touch anything.
lifecycle/bringup.py applies the plan."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from sfcluster.errors import PlanError, PrivilegeError
from sfcluster.facts import NodeFacts
from sfcluster.firewall import FirewallFacts, plan_add
from sfcluster.firewall.steps import FirewallAction, FirewallStep
from sfcluster.inventory.model import Cluster, FirewallMode, TlsMode

@dataclass(frozen=True)
class UpPlan:
    """The actions of one `up`. A node absent from `firewall` and not started is left as it is;
    a plan without any action is the no-op of an `up` on a cluster that is up."""

    firewall: Tuple[FirewallStep, ...]  # in the facts' node order
    start_head: bool
    start_workers: Tuple[str, ...]      # in the inventory's order

    @property
    def firewall_backends(self) -> Dict[str, str]:
        """node -> backend of every node that gets rules."""
        return {s.node: s.backend for s in self.firewall}


def plan_up(cluster: Cluster, facts: Mapping[str, NodeFacts]) -> UpPlan:
    """Facts in (one NodeFacts per node of the cluster), actions out. Raises PlanError for a Ray
    that is not ours on a node, and PrivilegeError when firewall rules need root and sudo asks for
    a password: both before anything is changed anywhere."""
    _refuse_foreign_ray(cluster, facts)
    _refuse_tls_mismatch(cluster, facts)
    steps: List[FirewallStep] = []
    if cluster.firewall is FirewallMode.OPEN:
        for n, f in facts.items():
            _refuse_password_sudo(cluster, n, f)
            _refuse_unfiltered(cluster, n, f)
            step = _firewall_step(cluster, n, f.firewall)
            if step is not None:
                steps.append(step)
    if not cluster.mode.runs_ray:  # production mode: no Ray to start (and the head may be another operator's)
        return UpPlan(firewall=tuple(steps), start_head=False, start_workers=())
    return UpPlan(firewall=tuple(steps), start_head=not facts[cluster.head_name].our_raylet_pids,
                  start_workers=tuple(w.name for w in cluster.workers if not facts[w.name].our_raylet_pids))


def _refuse_foreign_ray(cluster: Cluster, facts: Mapping[str, NodeFacts]) -> None:
    """Refuse a Ray that neither this cluster nor another sfcluster cluster started: never touched."""
    for n, f in facts.items():
        if f.foreign_ray:
            p = f.foreign_ray[0]
            raise PlanError(f"[{n}] Ray is running there and is not cluster '{cluster.name}' ({p['kind']} pid {p['pid']})",
                            "stop it where it was started; sfcluster never kills a Ray it did not start")


def _refuse_tls_mismatch(cluster: Cluster, facts: Mapping[str, NodeFacts]) -> None:
    """A node whose Ray runs with the other TLS mode than the inventory's cannot talk to the rest:
    refused, never left half-switched (the whole cluster restarts together)."""
    want = cluster.tls is TlsMode.ON
    for n, f in facts.items():
        if f.our_raylet_pids and f.ray_tls is not None and f.ray_tls != want:
            have = "with" if f.ray_tls else "without"
            fix = ("restart it with TLS: sfcluster up --rotate-certs" if want else
                   "restart it without: sfcluster down, then sfcluster up")
            raise PlanError(f"[{n}] Ray of cluster '{cluster.name}' runs {have} TLS, the inventory says tls: "
                            f"{cluster.tls.value}", fix)


def unfiltered_reason(cluster: Cluster, f: NodeFacts) -> Optional[Tuple[str, str]]:
    """With `firewall: open`, why node f would end up UNFILTERED (no usable firewall tool, or no
    root to use one), with the fix; None when sfcluster can scope its ports. `firewall_backend:
    none` on the node is the explicit opt-out, and is not a reason."""
    if cluster.firewall is not FirewallMode.OPEN or cluster.node(f.node).firewall_backend == "none":
        return None
    if f.sudo in ("absent", "password"):
        why = "sudo is not installed" if f.sudo == "absent" else "`sudo -n` asks for a password"
        return (f"firewall: open, but user {f.user} is not root and {why}: sfcluster could not add the rules, and "
                "Ray and SPU would be open to everyone who reaches the node",
                f"allow passwordless sudo for {f.user} on {f.node}, or set firewall: check and scope the ports yourself")
    if f.firewall.backend == "none":
        return ("firewall: open, but no firewall tool was found (iptables, nftables, ufw, firewalld): Ray and SPU "
                "would be open to everyone who reaches the node",
                f"install nftables or iptables on {f.node}; or opt out explicitly with nodes.{f.node}.firewall_backend: none")
    if f.firewall.backend == "unknown":
        return (f"firewall: open, but the firewall could not be read ({f.firewall.error or 'no root'}): sfcluster "
                "cannot scope the ports", f"allow passwordless sudo for {f.user} on {f.node}")
    return None


def _refuse_unfiltered(cluster: Cluster, n: str, f: NodeFacts) -> None:
    why = unfiltered_reason(cluster, f)
    if why is not None:
        raise PlanError(f"[{n}] {why[0]}; nothing was changed on any node", why[1])


def _refuse_password_sudo(cluster: Cluster, n: str, f: NodeFacts) -> None:
    """With `firewall: open`, a node whose sudo asks for a password is refused whatever its rules,
    naming the first command `up` would need root for (iptables's where the backend is none or unknown)."""
    if f.sudo != "password":
        return
    plan = plan_add(cluster, n, f.firewall.backend if f.firewall.managed else "iptables")
    cmd = " ".join(plan.commands[0]) if plan.commands else "firewall rules"
    raise PrivilegeError(f"[{n}] needs root for `{cmd}` but `sudo -n` asks for a password "
                         f"(user {f.user}); nothing was changed on any node",
                         f"allow passwordless sudo for {f.user} on {n}, or set firewall: check")


def _firewall_step(cluster: Cluster, n: str, fw: FirewallFacts) -> Optional[FirewallStep]:
    """The rules to add on node `n`, or None: a backend sfcluster cannot manage, or rules that are
    complete and (per the node's record) of the current plan."""
    if not fw.managed or not fw.needs(plan_add(cluster, n, fw.backend)):
        return None
    # needs() with complete rules: only a record naming another plan gets here
    action: FirewallAction = "replace" if fw.rules_complete else "repair" if fw.rules_present else "add"
    return FirewallStep(n, fw.backend, action)
