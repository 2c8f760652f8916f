"""The addresses the firewall rules carry. iptables and nft resolve a host name on each node when a
rule goes in, so a name in a rule lets DNS (the node's resolver, at that moment) decide who is let
in, and two nodes may let in different peers. So a rule carries IP addresses only: each node's
`host` that is a name is resolved ONCE here, on the controller, for the whole cluster, and every
node's plan gets that same address set (its digest names the addresses, so a change of DNS shows
as a changed plan, which `up` replaces). The plans are IPv4 (iptables, nft `ip saddr`, firewalld
`family="ipv4"`), so a name resolves to its IPv4 addresses and an IPv6 `host` is refused."""
from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass
from typing import Dict, Tuple

from sfcluster.errors import PlanError
from sfcluster.inventory.model import Cluster

_LOCK = threading.Lock()
# one resolution per cluster (its nodes' names and hosts) and process: the probes of every node,
# the plans and `check`'s row all read the same answer, however many threads ask at once
_RESOLVED: Dict[Tuple[Tuple[str, str], ...], "PeerAddresses"] = {}


class UnresolvedHost(PlanError):
    """A node's `host` gives no address a firewall rule can carry."""


@dataclass(frozen=True)
class PeerAddresses:
    """node name -> the IPv4 addresses its rules use for it; `names`: the nodes whose host is a name."""

    by_node: Tuple[Tuple[str, Tuple[str, ...]], ...]
    names: Tuple[Tuple[str, str], ...]  # (node, host name) of every host that is a name

    def of(self, node: str) -> Tuple[str, ...]:
        return dict(self.by_node)[node]

    def shown(self) -> str:
        """As `check` shows it: `bob: bob.example -> 10.0.0.2, 10.0.0.3`; empty when every host is an IP."""
        return "; ".join(f"{n}: {host} -> {', '.join(self.of(n))}" for n, host in self.names)


def peer_addresses(cluster: Cluster) -> PeerAddresses:
    """The cluster's address set, resolved on the first call of this process and kept. Raises
    UnresolvedHost naming the party and the name."""
    key = tuple((n.name, n.host) for n in cluster.nodes)
    with _LOCK:
        if key not in _RESOLVED:
            _RESOLVED[key] = _resolve(cluster)
        return _RESOLVED[key]


def forget_resolved() -> None:
    """Drop what this process resolved (tests; a long-lived caller that wants DNS asked again)."""
    with _LOCK:
        _RESOLVED.clear()


def _resolve(cluster: Cluster) -> PeerAddresses:
    by_node, names = [], []
    for node in cluster.nodes:
        by_node.append((node.name, _addresses(node.name, node.host)))
        if not _is_ip(node.host):
            names.append((node.name, node.host))
    return PeerAddresses(tuple(by_node), tuple(names))


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _addresses(node: str, host: str) -> Tuple[str, ...]:
    where = f"nodes.{node}.host"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.version != 4:
            raise UnresolvedHost(f"[{node}] {where} is the IPv6 address {host}: sfcluster's firewall rules are IPv4 "
                                 "only; nothing was changed on any node",
                                 f"give {node} an IPv4 address (or a name with one) in {where}, or set firewall: check "
                                 "and scope the ports yourself")
        return (str(ip),)
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as e:
        raise UnresolvedHost(f"[{node}] {where} '{host}' does not resolve on this controller ({e}); with firewall: "
                             "open the rules carry addresses, resolved here once for every node; nothing was changed "
                             "on any node",
                             f"fix the name '{host}' in this machine's DNS or /etc/hosts, or put {node}'s IP address "
                             f"in {where}") from None
    found = sorted({str(ipaddress.ip_address(i[4][0])) for i in infos if i[0] == socket.AF_INET},
                   key=ipaddress.ip_address)
    if not found:
        raise UnresolvedHost(f"[{node}] {where} '{host}' has no IPv4 address on this controller: sfcluster's firewall "
                             "rules are IPv4 only; nothing was changed on any node",
                             f"give '{host}' an IPv4 address, or put {node}'s IPv4 address in {where}")
    return tuple(found)
