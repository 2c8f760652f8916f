"""Bounded-parallel fan-out: one result or one exception per host, never one hiding another."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, Generic, Iterable, TypeVar

from sfcluster.errors import SfclusterError

T = TypeVar("T")


@dataclass
class GroupResult(Generic[T]):
    """Per-key outcome of a fan-out (like Fabric's GroupResult)."""

    results: Dict[str, T] = field(default_factory=dict)
    errors: Dict[str, BaseException] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_failed(self, what: str) -> None:
        if self.errors:
            lines = "\n".join(f"  {k}: {e}" for k, e in self.errors.items())
            raise SfclusterError(f"{what} failed on {len(self.errors)} node(s):\n{lines}")


def fan_out(fn: Callable[[str], T], keys: Iterable[str], max_workers: int = 16) -> GroupResult[T]:
    """Call fn(key) for every key, at most max_workers at once; collect each result or error."""
    keys = list(keys)
    out: GroupResult[T] = GroupResult()
    if not keys:
        return out
    with ThreadPoolExecutor(max_workers=min(max_workers, len(keys))) as pool:
        futures = {k: pool.submit(fn, k) for k in keys}
        for k in keys:
            try:
                out.results[k] = futures[k].result()
            except BaseException as e:  # noqa: BLE001 - reported per host, by design
                out.errors[k] = e
    return out

