"""Per-backend command plans. For every planned port of a node: accept from this node itself and
from exactly the peers that must reach it, drop everyone else. All of sfcluster's rules live in
one place per backend, so `down` removes exactly them and nothing else:
  iptables  chain SFC-<cluster>, jumped to from the top of INPUT
  nftables  table inet sfc_<cluster> (its own base chain, priority -10)
  ufw       rules with comment 'sfcluster:<cluster>' (deleted one by one)
  firewalld runtime rich rules in the default zone (removed one by one)
A plan runs on its node in ONE remote process (firewall/apply.py, nodescripts/firewall_apply.py),
which records there what it added so that exactly that is removed: ufw and firewall-cmd cost
~0.3 s a call, an SSH exec per rule would cost more than the rules themselves.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import List, Optional, Tuple

from sfcluster.firewall.addresses import peer_addresses
from sfcluster.firewall.names import iptables_chain, nft_table, ufw_comment
from sfcluster.inventory.model import Cluster
from sfcluster.inventory.ports import plan_ports


@dataclass(frozen=True)
class Allow:
    port: int
    port_end: int
    sources: Tuple[str, ...]   # IPv4 addresses allowed (never a name: firewall/addresses.py); everyone else is dropped
    purpose: str


@dataclass(frozen=True)
class FirewallPlan:
    backend: str
    commands: Tuple[Tuple[str, ...], ...]
    stdin: Optional[str] = None   # nftables: a ruleset fed to `nft -f -`

    @property
    def digest(self) -> str:
        """Names the plan (backend, commands, ruleset): a node whose record names another plan
        (a peer's IP changed, another backend) gets its rules replaced by `up`."""
        return hashlib.sha256(json.dumps([self.backend, self.commands, self.stdin]).encode()).hexdigest()


def allows_for(cluster: Cluster, node_name: str) -> List[Allow]:
    """For each planned port of the node: the addresses of the node itself and of the peers that
    must reach it, from the one resolution of the cluster's hosts (raises UnresolvedHost)."""
    addrs = peer_addresses(cluster)
    out = []
    for e in plan_ports(cluster).for_node(node_name):
        srcs = [a for n in (node_name, *e.reachers) for a in addrs.of(n)]
        out.append(Allow(e.port, e.port_end, tuple(dict.fromkeys(srcs)), e.purpose))
    return out


def _dport(a: Allow, sep: str) -> str:
    return str(a.port) if a.port == a.port_end else f"{a.port}{sep}{a.port_end}"


def nft_ruleset(cluster: Cluster, allows: List[Allow]) -> str:
    t = nft_table(cluster)
    lines = [f"table inet {t} {{", "  chain input {", "    type filter hook input priority -10; policy accept;",
             "    iif lo accept"]
    for a in allows:
        lines.append(f"    ip saddr {{ {', '.join(a.sources)} }} tcp dport {_dport(a, '-')} accept")
        lines.append(f"    tcp dport {_dport(a, '-')} drop")
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def ufw_rules(cluster: Cluster, allows: List[Allow]) -> List[Tuple[str, ...]]:
    """ufw rule specs (without the leading verb position): allows first, then the denies."""
    c = ufw_comment(cluster)
    rules = []
    for a in allows:
        for s in a.sources:
            rules.append(("allow", "proto", "tcp", "from", s, "to", "any", "port", _dport(a, ":"), "comment", c))
    for a in allows:
        rules.append(("deny", "proto", "tcp", "to", "any", "port", _dport(a, ":"), "comment", c))
    return rules


def firewalld_rules(allows: List[Allow]) -> List[str]:
    rules = []
    for a in allows:
        for s in a.sources:
            rules.append(f'rule family="ipv4" source address="{s}" port port="{_dport(a, "-")}" protocol="tcp" accept')
        rules.append(f'rule priority="32000" family="ipv4" port port="{_dport(a, "-")}" protocol="tcp" drop')
    return rules


def plan_add(cluster: Cluster, node_name: str, backend: str) -> FirewallPlan:
    allows = allows_for(cluster, node_name)
    if backend == "iptables":
        ch = iptables_chain(cluster)
        cmds: List[Tuple[str, ...]] = [("iptables", "-w", "-N", ch)]
        for a in allows:
            # loopback to this port only: INPUT jumps here first, so a bare `-i lo -j ACCEPT` would
            # accept every loopback packet ahead of the site's own INPUT rules
            cmds.append(("iptables", "-w", "-A", ch, "-i", "lo", "-p", "tcp", "--dport", _dport(a, ":"), "-j", "ACCEPT"))
            for s in a.sources:
                cmds.append(("iptables", "-w", "-A", ch, "-s", f"{s}/32", "-p", "tcp", "--dport", _dport(a, ":"), "-j", "ACCEPT"))
            cmds.append(("iptables", "-w", "-A", ch, "-p", "tcp", "--dport", _dport(a, ":"), "-j", "DROP"))
        cmds.append(("iptables", "-w", "-I", "INPUT", "1", "-j", ch))
        return FirewallPlan(backend, tuple(cmds))
    if backend == "nftables":
        return FirewallPlan(backend, (("nft", "-f", "-"),), stdin=nft_ruleset(cluster, allows))
    if backend == "ufw":
        # `ufw prepend` puts a rule at the top of the list, ahead of the site's own rules (`ufw insert 1`
        # fails with "Invalid position" on an empty list). Prepending in reverse leaves our allows
        # first, then our denies, above everything else.
        rules = ufw_rules(cluster, allows)
        return FirewallPlan(backend, tuple(("ufw", "prepend", *r) for r in reversed(rules)))
    if backend == "firewalld":
        return FirewallPlan(backend, tuple(("firewall-cmd", f"--add-rich-rule={r}") for r in firewalld_rules(allows)))
    return FirewallPlan(backend, ())


def plan_remove(cluster: Cluster, node_name: str, backend: str) -> FirewallPlan:
    """What removes plan_add's rules; iptables and nftables by their own chain/table name alone
    (no address needed), ufw and firewalld rule by rule."""
    if backend == "iptables":
        ch = iptables_chain(cluster)
        return FirewallPlan(backend, (("iptables", "-w", "-D", "INPUT", "-j", ch), ("iptables", "-w", "-F", ch),
                                      ("iptables", "-w", "-X", ch)))
    if backend == "nftables":
        return FirewallPlan(backend, (("nft", "delete", "table", "inet", nft_table(cluster)),))
    if backend == "ufw":
        return FirewallPlan(backend, tuple(("ufw", "delete", *r) for r in ufw_rules(cluster, allows_for(cluster, node_name))))
    if backend == "firewalld":
        return FirewallPlan(backend, tuple(("firewall-cmd", f"--remove-rich-rule={r}")
                                           for r in firewalld_rules(allows_for(cluster, node_name))))
    return FirewallPlan(backend, ())
