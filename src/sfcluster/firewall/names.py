"""The names sfcluster's rules go by on a node, one per backend: `up` adds them under these names,
the probe looks for them, and the node script that removes them refuses anything else."""
from __future__ import annotations

import hashlib
from typing import Dict

from sfcluster.inventory.model import Cluster


def iptables_chain(cluster: Cluster) -> str:
    """SFC-<cluster>; iptables caps chain names at 28 characters, so a longer one keeps a prefix
    and a hash of the whole name (two clusters sharing a long prefix never share a chain)."""
    name = f"SFC-{cluster.name}"
    if len(name) <= 28:
        return name
    return f"SFC-{cluster.name[:15]}-{hashlib.sha256(cluster.name.encode()).hexdigest()[:8]}"


def nft_table(cluster: Cluster) -> str:
    return f"sfc_{cluster.name}"


def ufw_comment(cluster: Cluster) -> str:
    return f"sfcluster:{cluster.name}"


def rule_names(cluster: Cluster) -> Dict[str, str]:
    """All three, as the node scripts receive them (probe.py, firewall_apply.py)."""
    return {"iptables_chain": iptables_chain(cluster), "nft_table": nft_table(cluster), "ufw_comment": ufw_comment(cluster)}
