"""Controller-side state of a cluster: what `up` did, so `status`/`down` know it after the
controller process is gone. Lives in $SFCLUSTER_STATE_DIR or ~/.local/state/sfcluster/<cluster>.json.
Nodes keep their own truth (Ray processes tagged by the cluster temp dir; the firewall rules `up`
added, recorded in ~/.sfcluster/<cluster>/firewall.json), so losing this file never strands
anything: its copy of each node's firewall record is the fallback for a node that has none."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict


def state_dir() -> Path:
    d = os.environ.get("SFCLUSTER_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME", os.path.expanduser("~/.local/state")), "sfcluster")
    return Path(d)


def path_for(cluster: str) -> Path:
    return state_dir() / f"{cluster}.json"


def load(cluster: str) -> Dict[str, Any]:
    try:
        return json.loads(path_for(cluster).read_text())
    except (OSError, ValueError):
        return {}


def save(cluster: str, data: Dict[str, Any]) -> None:
    p = path_for(cluster)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(data, updated=time.time()), indent=2))
    tmp.replace(p)


def clear(cluster: str) -> None:
    try:
        path_for(cluster).unlink()
    except FileNotFoundError:
        pass
