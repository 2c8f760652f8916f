"""What a driver script says it needs of every party, read on the controller without running it.

A script (every packaged template does) may state its needs as a literal at module level:

    SFCLUSTER_NEEDS = {"cpus": 2, "by_arg": {"--model": {"xgb": {"cpus": 3}, "sgb": {"cpus": 3}}}}

`cpus`: the Ray CPUs each party must have (simulation mode: its SPU actor and the script's other
actors share them); `by_arg`: more for some values of one of the script's own options. `run`
refuses before anything is shipped or locked when the inventory gives less (78, naming each
party short and what it has), and `check --for SCRIPT [-- ARGS]` fails its `script needs` row the
same way. Production mode runs no Ray: each driver's processes take what their node has.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sfcluster.errors import SfclusterError
from sfcluster.exitcodes import Exit
from sfcluster.inventory.model import Cluster

NAME = "SFCLUSTER_NEEDS"


class NeedsMore(SfclusterError):
    """The inventory gives a party less than the script says it needs (78, as an inventory error)."""

    exit_code = Exit.CONFIG


@dataclass(frozen=True)
class Needs:
    cpus: int = 0
    why: str = ""         # which option asked for more (e.g. "--model xgb"), or ""


def declared(script: str) -> Optional[Dict[str, Any]]:
    """The script's SFCLUSTER_NEEDS literal, or None (a script that says nothing, or not Python)."""
    try:
        tree = ast.parse(Path(script).read_text(errors="replace"))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == NAME for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _option(args: Sequence[str], name: str) -> Optional[str]:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1:]
    return None


def needs_for(script: str, args: Sequence[str]) -> Needs:
    """What the script, run with `args`, needs of every party."""
    d = declared(script) or {}
    cpus = d.get("cpus") if isinstance(d.get("cpus"), int) else 0
    why = ""
    by_arg = d.get("by_arg") if isinstance(d.get("by_arg"), dict) else {}
    for option, values in by_arg.items():
        more = values.get(_option(args, option)) if isinstance(values, dict) else None
        if isinstance(more, dict) and isinstance(more.get("cpus"), int) and more["cpus"] > cpus:
            cpus, why = more["cpus"], f"{option} {_option(args, option)}"
    return Needs(cpus, why)


def short(cluster: Cluster, needs: Needs) -> List[str]:
    """The operated parties with fewer CPUs than needed (simulation mode only)."""
    if not cluster.mode.runs_ray or needs.cpus <= 0:
        return []
    return [n for n in cluster.operated_names if cluster.node(n).cpus < needs.cpus]


def refusal(cluster: Cluster, script: str, args: Sequence[str]) -> Optional[NeedsMore]:
    """The error `run` raises before it ships anything, when the inventory gives less."""
    needs = needs_for(script, args)
    lacking = short(cluster, needs)
    if not lacking:
        return None
    what = Path(script).name + (f" ({needs.why})" if needs.why else "")
    have = ", ".join(f"{n} has {cluster.node(n).cpus}" for n in lacking)
    return NeedsMore(f"{what} needs cpus: {needs.cpus} at every party; {have} ({cluster.source})", _fix(needs, lacking))


def _fix(needs: Needs, lacking: List[str]) -> str:
    return (f"set cpus: {needs.cpus} (or more) for {', '.join(lacking)} in the inventory, then `sfcluster down` and "
            "`up` (Ray takes a node's CPUs when it starts)")


def check_row(report: Any, cluster: Cluster, script: str, args: Sequence[str]) -> None:
    """`check --for SCRIPT`: its `script needs` row (FAIL naming each party short, else OK)."""
    from sfcluster.doctor import Status
    needs = needs_for(script, args)
    what = Path(script).name + (f" ({needs.why})" if needs.why else "")
    if declared(script) is None:
        report.add("*", "script needs", Status.OK, f"{what} states no needs ({NAME})")
        return
    for n in short(cluster, needs):
        report.add(n, "script needs", Status.FAIL, f"{what} needs cpus: {needs.cpus}; {n} has {cluster.node(n).cpus}",
                   _fix(needs, [n]))
    if not short(cluster, needs):
        report.add("*", "script needs", Status.OK, f"{what}: every party has the cpus: {needs.cpus} it needs"
                   if cluster.mode.runs_ray else f"{what}: production mode (no Ray: each driver takes its node)")
