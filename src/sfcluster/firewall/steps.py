"""The firewall's part of `up` and `down`, on the firewall facts alone: the rules added where the
plan says (in parallel), the controller's cached copy of each node's record, and what `down` and a
rollback remove (exactly what the node's record says `up` added there)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Sequence

from sfcluster.firewall.apply import NO_FALLBACK, Outcome, apply_plan, cache_entry, cached_removal, remove_recorded
from sfcluster.firewall.detect import FirewallFacts
from sfcluster.inventory.model import Cluster
from sfcluster.remote.base import Runner
from sfcluster.remote.group import fan_out

Progress = Callable[[str, str], None]  # (node, message)
# add: none of our rules there; repair: some of ours are missing; replace: all there, but the node's
# record names another plan (a peer's address or the backend changed since the rules went in).
FirewallAction = Literal["add", "repair", "replace"]


@dataclass(frozen=True)
class FirewallStep:
    """Add this cluster's rules on `node` with `backend`."""

    node: str
    backend: str
    action: FirewallAction


def add_rules(cluster: Cluster, runners: Mapping[str, Runner], fw: Mapping[str, FirewallFacts],
              sudo: Mapping[str, bool], steps: Sequence[FirewallStep], cached: Mapping[str, Any], added: List[str],
              progress: Progress) -> Dict[str, str]:
    """Firewall rules scoped to peers, in parallel; the backend of each node done. The node removes
    what its record says `up` added there before (without a record: the rules of ours found there,
    e.g. what is left after the INPUT jump to our iptables chain was lost), records the new plan,
    adds it. `added` gets each node before it records: a rollback removes a partly added plan too."""
    todo = {s.node: s for s in steps}
    done: Dict[str, str] = {}

    def add(n: str) -> None:
        f, step = fw[n], todo[n]
        if step.action == "replace":  # the node's record names another plan
            progress(n, "firewall: rules of an older plan (an address or the backend changed): replacing them")
        elif step.action == "repair":
            progress(n, f"firewall: incomplete ({f.missing or 'some rules missing'}): repairing")
        fallback = (cached_removal(cluster, n, cached.get(n), f.backend) if f.rules_present or n in cached
                    else NO_FALLBACK)
        added.append(n)
        apply_plan(runners[n], cluster, cluster.node(n), step.backend, fallback, sudo=sudo[n])
        done[n] = step.backend
        progress(n, f"firewall: rules added ({step.backend})")
    fan_out(add, todo).raise_if_failed("adding firewall rules")
    return done


def controller_copy(cluster: Cluster, fw: Mapping[str, FirewallFacts], applied: Mapping[str, str],
                    cached: Mapping[str, Any]) -> Dict[str, Any]:
    """The controller's copy of each node's firewall record (the fallback of a node that has
    none): what this `up` applied; else the copy kept before; else the removal planned from the
    inventory for the rules (or the record) found there."""
    out: Dict[str, Any] = {}
    for n, f in fw.items():
        if n in applied:
            out[n] = cache_entry(cluster, n, applied[n])
        elif isinstance(cached.get(n), dict):
            out[n] = cached[n]
        elif f.rules_present or f.record is not None:
            out[n] = cache_entry(cluster, n, f.record.backend if f.record is not None else f.backend)
    return out


def roll_back(runner: Runner, cluster: Cluster, n: str, sudo: bool) -> None:
    """A failed `up`'s rollback on node n: what the node's record says this `up` added, no more."""
    remove_recorded(runner, cluster, cluster.node(n), NO_FALLBACK, sudo=sudo)


def remove_at_down(runner: Runner, cluster: Cluster, n: str, f: FirewallFacts, cached: Mapping[str, Any],
                   sudo: bool) -> Optional[Outcome]:
    """`down` on node n: the rules its record names removed; the controller's copy (else the
    inventory's plan) only where the node has none. None when there was nothing of ours to look at."""
    if not (f.rules_present or f.record is not None or f.record_error or n in cached):
        return None
    return remove_recorded(runner, cluster, cluster.node(n), cached_removal(cluster, n, cached.get(n), f.backend),
                           sudo=sudo)
