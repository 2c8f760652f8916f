"""Detection: what the probe (nodescripts/probe.py) needs to know to find this cluster's rules on a
node, and the typed reading of what it found (the backend in use, our rules present/complete,
the node's own record of what `up` added there)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from sfcluster.firewall.addresses import UnresolvedHost
from sfcluster.firewall.names import rule_names
from sfcluster.firewall.plan import FirewallPlan, allows_for, firewalld_rules, ufw_rules
from sfcluster.inventory.model import Cluster, Node

NO_BACKEND = ("none", "unknown")  # none found / not visible without root


def probe_fields(cluster: Cluster, node: Node) -> Dict[str, Any]:
    """The firewall part of the probe's request. A host that does not resolve here leaves the
    address-bound expectations out (never complete, nothing matched by rule text): `status` and
    `down` still work, and `up` and `check` name the host (firewall/addresses.py)."""
    fields = {"cluster": cluster.name, "firewall_backend": node.firewall_backend, **rule_names(cluster)}
    try:
        allows = allows_for(cluster, node.name)
    except UnresolvedHost:
        return dict(fields, ufw_expect=[-1, -1], firewalld_rules=[])
    ufw = ufw_rules(cluster, allows)
    return dict(fields, ufw_expect=[sum(1 for r in ufw if r[0] == "allow"), sum(1 for r in ufw if r[0] == "deny")],
                firewalld_rules=firewalld_rules(allows))


@dataclass(frozen=True)
class Recorded:
    """What the node's record (nodescripts/firewall_apply.py) says `up` added there."""

    backend: str
    plan: str  # FirewallPlan.digest of the plan added


@dataclass(frozen=True)
class FirewallFacts:
    backend: str                          # ufw, firewalld, nftables, iptables, or one of NO_BACKEND
    rules_present: bool = False           # any of ours: `down` must remove them
    rules_complete: bool = False          # all of ours: `up` has nothing to add
    missing: str = ""                     # what an incomplete set lacks, when the probe can tell
    error: str = ""                       # why the backend is unknown
    record: Optional[Recorded] = None
    record_error: str = ""                # a record is there but could not be read

    @property
    def managed(self) -> bool:
        """A backend sfcluster can add rules with."""
        return self.backend not in NO_BACKEND

    def needs(self, plan: FirewallPlan) -> bool:
        """Whether `up` must apply `plan` here: some of our rules are missing, or the node's record
        names another plan (a peer's address or the backend changed: the rules there let the old
        peers in, the count of them can still look complete)."""
        return not self.rules_complete or (self.record is not None and self.record.plan != plan.digest)

    def summary(self) -> str:
        """As `status` shows it: `iptables: present`, `ufw: INCOMPLETE`, `nftables: absent`."""
        return f"{self.backend}: " + ("present" if self.rules_complete else
                                      "INCOMPLETE" if self.rules_present else "absent")


def read_firewall(raw: Mapping[str, Any]) -> FirewallFacts:
    """The probe's `firewall` object, typed."""
    rec = raw.get("record") or {}
    record = Recorded(str(rec["backend"]), str(rec["plan"])) if "plan" in rec else None
    return FirewallFacts(backend=str(raw.get("backend", "none")), rules_present=bool(raw.get("rules_present")),
                         rules_complete=bool(raw.get("rules_complete")), missing=str(raw.get("missing") or ""),
                         error=str(raw.get("error") or ""), record=record, record_error=str(rec.get("error") or ""))
