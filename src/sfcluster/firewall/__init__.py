"""Firewall rules scoped to peers: pure planners per backend (facts in, commands out) and apply."""
from sfcluster.firewall.plan import Allow, FirewallPlan, allows_for, firewalld_rules, plan_add, plan_remove, ufw_comment, ufw_rules

__all__ = ["Allow", "FirewallPlan", "allows_for", "firewalld_rules", "plan_add", "plan_remove", "ufw_comment", "ufw_rules"]
