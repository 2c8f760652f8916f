"""`up --dry-run`: what `up` would do, from the same checks, facts and plan `up` acts on, with
nothing changed anywhere: no lock taken, no CA made, no certificate issued, no rule added, no Ray
started. Its refusals are `up`'s (a failing preflight 65, a foreign Ray, sudo asking for a
password), raised before the plan is shown, as `up` raises them before it acts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from sfcluster.connect import Nodes
from sfcluster.firewall import plan_add
from sfcluster.inventory.model import Cluster
from sfcluster.lifecycle.preflight import facts_for_up
from sfcluster.raycluster.argv import head_start_argv, worker_start_argv
from sfcluster.tls.install import enabled as tls_enabled, inspect as inspect_tls
from sfcluster.tls.pki import load_ca
from sfcluster.upplan import plan_up


@dataclass(frozen=True)
class FirewallChange:
    node: str
    backend: str
    action: str                          # add / repair / replace (upplan.FirewallAction)
    commands: Tuple[Tuple[str, ...], ...]
    ruleset: Optional[str] = None        # nftables: what `nft -f -` would read


@dataclass
class UpDryRun:
    """The plan of one `up`, as `up` would carry it out now."""

    cluster: str
    mode: str
    firewall: List[FirewallChange] = field(default_factory=list)
    start: Dict[str, List[str]] = field(default_factory=dict)   # node -> the `ray start` argv it would run
    running: List[str] = field(default_factory=list)            # nodes whose Ray of this cluster is left as it is
    new_ca: bool = False                                        # tls: on, and this controller has no CA yet
    certificates: Dict[str, str] = field(default_factory=dict)  # node -> "issue" / "keep (N days left)" / "update trust"
    warnings: List[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return bool(self.firewall or self.start or self.new_ca or any(
            not c.startswith("keep") for c in self.certificates.values()))

    def to_json(self) -> Dict[str, Any]:
        return {"cluster": self.cluster, "mode": self.mode, "changes": self.changes,
                "firewall": [{"node": f.node, "backend": f.backend, "action": f.action,
                              "commands": [list(c) for c in f.commands], "ruleset": f.ruleset} for f in self.firewall],
                "start": self.start, "running": self.running, "new_ca": self.new_ca,
                "certificates": self.certificates, "warnings": self.warnings}


def plan(cluster: Cluster, nodes: Nodes, *, skip_check: bool = False) -> UpDryRun:
    """The facts (with the preflight unless skip_check, as `up`), the plan from them, and the
    certificates as `up` would find them; raises what `up` would raise before acting."""
    facts = facts_for_up(cluster, nodes, skip_check=skip_check, rotate_certs=False)  # the same preflight as `up`
    up_plan = plan_up(cluster, facts)
    out = UpDryRun(cluster.name, cluster.mode.value)
    for step in up_plan.firewall:
        fp = plan_add(cluster, step.node, step.backend)
        out.firewall.append(FirewallChange(step.node, step.backend, step.action, fp.commands, fp.stdin))
    if cluster.mode.runs_ray:
        if up_plan.start_head:
            out.start[cluster.head_name] = head_start_argv(cluster)
        for w in up_plan.start_workers:
            out.start[w] = worker_start_argv(cluster, cluster.node(w))
        out.running = [n for n in cluster.party_names if n not in out.start]
    if tls_enabled(cluster):
        _certificates(cluster, nodes, out)
    return out


def _certificates(cluster: Cluster, nodes: Nodes, out: UpDryRun) -> None:
    """What ensure_certs would do on each node, read with the check it starts with (tls.install.inspect)."""
    ca = load_ca(cluster.name)
    out.new_ca = ca is None
    for n, t in inspect_tls(cluster, nodes, names=list(cluster.operated_names), ca=ca).items():
        if t.error:
            out.warnings.append(f"[{n}] its certificates could not be checked: {t.error} (`up` would stop there)")
        elif not t.installed or ca is None:
            out.certificates[n] = "issue"
        elif t.problems:
            out.warnings.append(f"[{n}] certificates that do not check out ({'; '.join(t.problems)}): `up` would refuse; "
                                "the fix is `sfcluster up --rotate-certs`")
        elif t.trust_stale:
            out.certificates[n] = "update trust (the peers' CAs changed)"
        else:
            days = "" if t.days_left is None else f" ({t.days_left:.0f} days left)"
            out.certificates[n] = "keep" + days
