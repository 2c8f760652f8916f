"""What each party's Ray node offers: CPUs (the real budget) and the party resource (a label).

Facts (ray 2.9.3, secretflow-lite 1.10.0b1, measured on the harness):
- SecretFlow pins every PYU task and the party's SPU runtime actor to the party by asking for one
  unit of the party's custom resource ({"bob": 1}). It is a LABEL, not a CPU budget: with
  `--resources={"bob": 1}` the SPU actor holds the only unit for its whole life, and every later
  PYU task of bob waits forever (Ray's autoscaler prints "The following resource request cannot be
  scheduled right now: {'CPU': 1.0, 'bob': 1.0}" every 35 s; no error, no timeout). SecretFlow's
  own deployment docs give each party 16 or more. We give PARTY_RESOURCE units, whatever `cpus` is.
- CPUs are the budget: see inventory/model.py's MIN_CPUS.
"""
from __future__ import annotations

PARTY_RESOURCE = 1000
