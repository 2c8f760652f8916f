"""Scripts that run ON the nodes (Python 3.10, stdlib only; psutil/ray when present).

They are shipped as source text (`python -c`), never imported on the controller, so that one
remote process start gathers everything a step needs.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent


@lru_cache(maxsize=None)
def source(name: str) -> str:
    """Text of nodescripts/<name>.py."""
    return (HERE / f"{name}.py").read_text()


def with_state(name: str) -> str:
    """Text of nodescripts/<name>.py after contract.py (the controller <-> node contract) and
    nodestate.py (the private state dir helpers it uses)."""
    return source("contract") + "\n\n" + source("nodestate") + "\n\n" + source(name)
