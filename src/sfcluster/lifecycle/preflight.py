"""The facts every `up` starts from, and its preflight: the probe always runs (privileges and a
foreign Ray are never skipped); the checks unless --skip-check."""
from __future__ import annotations

from typing import Any, Dict

from sfcluster.connect import Nodes
from sfcluster.doctor import Report, run_checks
from sfcluster.errors import PlanError
from sfcluster.exitcodes import Exit
from sfcluster.facts import NodeFacts, gather_all
from sfcluster.inventory.model import Cluster


class PreflightFailed(PlanError):
    exit_code = Exit.PREFLIGHT

    def __init__(self, report: Report) -> None:
        self.report = report
        self.exit_code = report.exit_code  # 77 when sudo asking for a password is all that failed
        super().__init__(f"preflight found {len(report.failed)} problem(s); nothing was changed",
                         "fix them (see the table), or run `sfcluster check` for details")

    def details(self) -> Dict[str, Any]:
        return self.report.to_json()


def facts_for_up(cluster: Cluster, nodes: Nodes, *, skip_check: bool, rotate_certs: bool) -> Dict[str, NodeFacts]:
    """Every node's facts, after a preflight that passed (or the probe alone with skip_check)."""
    if skip_check:
        g = gather_all(cluster, nodes.runners)
        g.raise_if_failed("gathering facts")
        return g.results
    report = run_checks(cluster, nodes.runners, tls_reissue=rotate_certs)
    if not report.ok:
        raise PreflightFailed(report)
    return report.facts


def needs_sudo(facts: NodeFacts) -> bool:
    """Whether the firewall commands on that node go through sudo (the SSH user is not root)."""
    return facts.sudo != "root"
