"""Controller-side state of a cluster: what `up` did, so `status`/`down` know it after the
controller process is gone. Lives in $SFCLUSTER_STATE_DIR or ~/.local/state/sfcluster/<cluster>.json.
Nodes keep their own truth (Ray processes tagged by the cluster temp dir; the firewall rules `up`
added, recorded in ~/.sfcluster/<cluster>/firewall.json), so losing this file never strands
anything: its copy of each node's firewall record is the fallback for a node that has none."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict


def state_dir() -> Path:
    d = os.environ.get("SFCLUSTER_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME", os.path.expanduser("~/.local/state")), "sfcluster")
    return Path(d)


def path_for(cluster: str) -> Path:
    return state_dir() / f"{cluster}.json"


@dataclass(frozen=True)
class ControllerState:
    """What the last `up` from this controller left here: the inventory it used, each node's
    certificate dir (for `run`), and its copy of each node's firewall record (firewall/steps.py)."""

    inventory: str = ""
    tls_dirs: Dict[str, str] = field(default_factory=dict)
    firewall: Dict[str, Any] = field(default_factory=dict)
    updated: float = 0.0

    @classmethod
    def parse(cls, data: Any) -> "ControllerState":
        data = data if isinstance(data, dict) else {}
        dirs, fw = data.get("tls_dirs"), data.get("firewall")
        return cls(data.get("inventory") if isinstance(data.get("inventory"), str) else "",
                   {str(k): v for k, v in dirs.items() if isinstance(v, str)} if isinstance(dirs, dict) else {},
                   dict(fw) if isinstance(fw, dict) else {},
                   float(data["updated"]) if isinstance(data.get("updated"), (int, float)) else 0.0)


def load(cluster: str) -> ControllerState:
    try:
        return ControllerState.parse(json.loads(path_for(cluster).read_text()))
    except (OSError, ValueError):
        return ControllerState()


def save(cluster: str, data: ControllerState) -> None:
    p = path_for(cluster)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"inventory": data.inventory, "tls_dirs": data.tls_dirs, "firewall": data.firewall,
                               "updated": time.time()}, indent=2))
    tmp.replace(p)


def clear(cluster: str) -> None:
    try:
        path_for(cluster).unlink()
    except FileNotFoundError:
        pass
