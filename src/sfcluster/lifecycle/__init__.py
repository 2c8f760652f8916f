"""up / down / status: read facts, compare with the wanted state, then act or say it is a no-op.

  preflight.py  the facts and the preflight every `up` starts from (PreflightFailed: 65, or 77)
  bringup.py    `up` under the cluster lock: certificates, firewall (firewall/steps.py), Ray
                (raycluster/start.py), the rollback of exactly what it did
  teardown.py   `down`: this cluster's Ray stopped, the rules the nodes' records name removed
  health.py     `status`, per mode

(The modules are not named like the commands: `lifecycle.up` is the function, as callers use it.)
"""
from sfcluster.lifecycle.bringup import JOIN_TIMEOUT, UpResult, up
from sfcluster.lifecycle.health import STATUS_PROBE_TIMEOUT, NodeStatus, status, status_production
from sfcluster.lifecycle.preflight import PreflightFailed
from sfcluster.lifecycle.teardown import DownResult, down

__all__ = ["JOIN_TIMEOUT", "STATUS_PROBE_TIMEOUT", "DownResult", "NodeStatus", "PreflightFailed", "UpResult", "down",
           "status", "status_production", "up"]
