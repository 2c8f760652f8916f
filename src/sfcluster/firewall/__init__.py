"""Firewall rules scoped to peers: their names, how the probe detects them, pure planners per
backend (facts in, commands out), and applying/removing them with a record kept on each node."""
from sfcluster.firewall.apply import (NO_FALLBACK, Outcome, apply_plan, cache_entry, cached_removal,
                                      remove_recorded)
from sfcluster.firewall.addresses import PeerAddresses, UnresolvedHost, forget_resolved, peer_addresses
from sfcluster.firewall.detect import FirewallFacts, Recorded, probe_fields, read_firewall
from sfcluster.firewall.names import iptables_chain, nft_table, rule_names, ufw_comment
from sfcluster.firewall.plan import Allow, FirewallPlan, allows_for, firewalld_rules, plan_add, plan_remove, ufw_rules

__all__ = ["NO_FALLBACK", "Allow", "FirewallFacts", "FirewallPlan", "Outcome", "PeerAddresses", "Recorded",
           "UnresolvedHost", "allows_for", "apply_plan", "cache_entry", "cached_removal", "firewalld_rules",
           "forget_resolved", "iptables_chain", "nft_table", "peer_addresses", "plan_add", "plan_remove",
           "probe_fields", "read_firewall", "remove_recorded", "rule_names", "ufw_comment", "ufw_rules"]
