"""Runners for a cluster's nodes, built from the inventory (one persistent SSH connection each)."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional

from sfcluster.inventory.model import Cluster, Node
from sfcluster.remote.base import AsUser, Runner
from sfcluster.remote.ssh import SshRunner, SshTarget


def target_for(cluster: Cluster, node: Node) -> SshTarget:
    return SshTarget(
        host=node.ssh.alias or node.host,
        name=node.name,
        user=node.ssh.user,
        port=node.ssh.port,
        identity_file=node.ssh.identity_file,
        proxy_jump=node.ssh.proxy_jump,
        known_hosts=cluster.known_hosts,
        config_file=cluster.ssh_config,
    )


class Nodes:
    """The cluster's runners by party name; closes them all at the end of a command. The core
    sees only the Runner protocol: SSH by default, any transport a test hands in (`runners`)."""

    def __init__(self, cluster: Cluster, names: Optional[Iterable[str]] = None,
                 runners: Optional[Mapping[str, Runner]] = None) -> None:
        self.cluster = cluster
        wanted = list(names) if names is not None else list(cluster.operated_names)
        self.runners: Dict[str, Runner] = dict(runners) if runners is not None else {
            n: SshRunner(target_for(cluster, cluster.node(n))) for n in wanted}

    def __getitem__(self, name: str) -> Runner:
        return self.runners[name]

    def ray(self, name: str) -> Runner:
        """The runner for what runs as the user Ray runs as on that node (Ray itself, the lock, the
        run and its wrapper, the node's private state and certificates): the SSH user, or the
        inventory's `ray_user` through `sudo -n -u`."""
        node = self.cluster.node(name)
        inner = self.runners[name]
        login = node.ssh.user or getattr(inner, "user", "")
        if not node.ray_user or node.ray_user == login:
            return inner
        return AsUser(inner, node.ray_user)

    def close(self) -> None:
        for r in self.runners.values():
            r.close()

    def __enter__(self) -> "Nodes":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
