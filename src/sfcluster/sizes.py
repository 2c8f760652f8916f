"""Byte counts for people: one format for every message that states a size."""
from __future__ import annotations

from typing import Any


def human_size(n: Any) -> str:
    """1234 -> '1.2 KiB'; bytes below 1 KiB as whole bytes; None counts as 0."""
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
