"""Scripts that run ON the nodes (Python 3.10, stdlib only; psutil/ray when present).

They are shipped as source text (`python -c`), never imported on the controller, so that one
remote process start gathers everything a step needs.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sfcluster.remote.base import Result

HERE = Path(__file__).parent


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """Text of nodescripts/<name>.py."""
    return (HERE / f"{name}.py").read_text()


def answer(res: "Result", what: str) -> dict:
    """The JSON object a node script of the state dir prints as its last line; an error naming the
    node when there is none, or when the script refused the node's state dir."""
    from sfcluster.errors import SfclusterError
    from sfcluster.remote.transfer import unsafe_state
    try:
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        res.check()
        raise SfclusterError(f"[{res.host}] no answer about {what}: {res.stdout[-300:]}") from None
    if isinstance(data, dict) and "error" in data:
        raise unsafe_state(res.host, data["error"])
    return data


def with_state(name: str) -> str:
    """Text of nodescripts/<name>.py after contract.py (the controller <-> node contract) and
    nodestate.py (the private state dir helpers it uses)."""
    return source("contract") + "\n\n" + source("nodestate") + "\n\n" + source(name)
