"""Adding and removing a cluster's rules on a node: one process per node
(nodescripts/firewall_apply.py), run as the SSH user, which records on the node what it added
(~/.sfcluster/<cluster>/firewall.json) and removes exactly that. The node's record is the one that
counts; the controller's copy (sfcluster.state, `cache_entry`) is the fallback for a node without
one (rules added by an older sfcluster, or a record removed by hand)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from sfcluster.errors import PrivilegeError, RemoteError
from sfcluster.firewall.addresses import UnresolvedHost
from sfcluster.firewall.names import rule_names
from sfcluster.firewall.plan import FirewallPlan, plan_add, plan_remove
from sfcluster.inventory.model import Cluster, Node
from sfcluster import nodescripts
from sfcluster.remote.base import Result, Runner

NO_FALLBACK = FirewallPlan("none", ())  # remove what the record names, or nothing
SECONDS_PER_COMMAND = 2  # ufw and firewall-cmd take ~0.3 s a call; the node bounds each at 30 s


@dataclass(frozen=True)
class Outcome:
    """What the node did: removals from its record, from the fallback, or none; how many of them
    removed a rule (`removed`) or found it gone (`gone`); how many rules it added, and how many of
    the plan's rules the site already had (`kept`: ufw, firewalld; left alone, never recorded)."""

    source: str
    removed: int
    gone: int
    added: int
    kept: int = 0


def apply_plan(runner: Runner, cluster: Cluster, node: Node, backend: str, fallback: FirewallPlan,
               sudo: bool) -> Outcome:
    """Replace what the node's record says `up` added (or, without a record, `fallback`) with the
    plan for `backend`; the new record is written before the first rule goes in."""
    plan, undo = plan_add(cluster, node.name, backend), plan_remove(cluster, node.name, backend)
    req = dict(_request(cluster, "apply", fallback, sudo), backend=backend, add=plan.commands,
               add_stdin=plan.stdin, remove=undo.commands, plan=plan.digest)
    return _run(runner, cluster, node, req, len(plan.commands) + len(undo.commands) + len(fallback.commands))


def remove_recorded(runner: Runner, cluster: Cluster, node: Node, fallback: FirewallPlan, sudo: bool) -> Outcome:
    """Remove what the node's record says `up` added (without a record: `fallback`); drop the record."""
    # the record may hold more than the controller knows of: bounded as if it held 30 commands or more
    return _run(runner, cluster, node, _request(cluster, "remove", fallback, sudo), max(len(fallback.commands), 30))


def cache_entry(cluster: Cluster, node_name: str, backend: str) -> Dict[str, Any]:
    """The controller's copy of what a node's record holds once `up` applied the plan for `backend`."""
    return {"backend": backend, "remove": [list(c) for c in plan_remove(cluster, node_name, backend).commands],
            "plan": plan_add(cluster, node_name, backend).digest}


def cached_removal(cluster: Cluster, node_name: str, cached: Any, backend: str) -> FirewallPlan:
    """The removal to fall back on where a node has no record: the controller's cached copy,
    else the removal planned from the current inventory for `backend` (or the backend an older
    sfcluster cached, which kept the backend's name alone)."""
    if isinstance(cached, dict) and isinstance(cached.get("backend"), str) and isinstance(cached.get("remove"), list):
        return FirewallPlan(cached["backend"], tuple(tuple(str(a) for a in c) for c in cached["remove"]))
    backend = cached if isinstance(cached, str) else backend
    try:
        return plan_remove(cluster, node_name, backend)
    except UnresolvedHost:
        # ufw's and firewalld's removal names the addresses: without them, only the node's record
        # (the usual case) says what to remove; a DNS failure must not keep `down` from using it
        return FirewallPlan(backend, ())


def _request(cluster: Cluster, action: str, fallback: FirewallPlan, sudo: bool) -> Dict[str, Any]:
    return {"action": action, "cluster": cluster.name, "sudo": sudo, "names": rule_names(cluster),
            "fallback": {"backend": fallback.backend, "remove": fallback.commands}}


def _run(runner: Runner, cluster: Cluster, node: Node, req: Dict[str, Any], commands: int) -> Outcome:
    # as the sudo-capable SSH user: the root-owned interpreter, isolated, never the Ray user's venv
    res = nodescripts.run(runner, node, "firewall_apply", as_="self", stdin=json.dumps(req),
                          timeout=60 + SECONDS_PER_COMMAND * commands)
    answer = _answer(res)
    if answer is None:
        res.check()  # no answer at all (no Python there, a crash): the exit code and stderr say why
        raise RemoteError(node.name, res.command, "the firewall step gave no answer", "run `sfcluster check`")
    if answer.get("ok"):
        return Outcome(str(answer.get("from")), int(answer["removed"]), int(answer["gone"]), int(answer["added"]),
                       int(answer.get("kept") or 0))
    kind, error, what = answer.get("kind"), str(answer.get("error")), "adding" if req["action"] == "apply" else "removing"
    record = f"~/.sfcluster/{cluster.name}/firewall.json"
    if kind == "no_privilege":
        raise PrivilegeError(f"[{node.name}] {what} firewall rules needs root: {error}",
                             f"allow passwordless sudo for the SSH user on {node.name}, or set firewall: check")
    if kind == "refused":
        raise RemoteError(node.name, res.command, f"{what} firewall rules: {error}",
                          f"{record} on {node.name} lists what `up` added there; check it, remove the rules "
                          "it names by hand, then remove the file")
    if kind == "state":
        raise RemoteError(node.name, res.command, f"the cluster's state dir is not safe to use: {error}",
                          f"sfcluster records the rules it added in {record} (0700 dirs, ours): look at what "
                          "is there and fix or remove it")
    hint = ("the rules added so far are removed by the rollback, or by `sfcluster down`" if req["action"] == "apply"
            else None)
    raise RemoteError(node.name, res.command, f"{what} firewall rules failed ({answer.get('removed')} removed, "
                                              f"{answer.get('added')} added): {error}", hint)


def _answer(res: Result) -> Optional[Dict[str, Any]]:
    lines: List[str] = res.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
