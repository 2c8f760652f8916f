"""Inventory: the cluster description (model) and its validating loader."""
from sfcluster.inventory.load import load_inventory, parse_inventory
from sfcluster.inventory.model import Cluster, FirewallMode, Node, Provision, RayPorts, SpuSettings, SshSpec

__all__ = ["load_inventory", "parse_inventory", "Cluster", "FirewallMode", "Node", "Provision", "RayPorts", "SpuSettings", "SshSpec"]
