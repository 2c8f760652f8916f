"""The cluster lock: one operation at a time per cluster (`up`, `down`, `run`), taken on the head.

It is ONE lock: an flock on the cluster's private state dir on the head (~/.sfcluster/<cluster>,
nodescripts/nodestate.py). A run's wrapper holds it for the run's whole life; `up` and `down`
hold it through nodescripts/oplock.py, a process on the head that lives as long as the operation
(and dies with the controller's connection: EOF or 10 s without its heartbeat). A second
operation fails at once naming the holder (exit 75), or waits with `--wait`, bounded.
"""
from __future__ import annotations

import getpass
import json
import queue
import socket
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from sfcluster.connect import Nodes
from sfcluster.errors import LockHeld, SfclusterError, UnavailableError
from sfcluster.inventory.model import Cluster
from sfcluster import nodescripts
from sfcluster.remote.base import by_line
from sfcluster.nodescripts.answers import LockHolder
from sfcluster.nodescripts.contract import OP_ERROR, OP_HELD, OP_LOCKED, OP_WAITING
from sfcluster.remote.transfer import unsafe_state

ACQUIRE_GRACE = 30      # past --wait, how long the head may take to answer at all
WAIT_TIMEOUT = 3600     # --wait's default bound: nothing waits forever


def held_error(cluster: Cluster, h: LockHolder, op: str) -> LockHeld:
    fix = f"wait for it: retry, or `sfcluster {op} --wait`"
    if h.op == "run":
        fix = (f"wait for it (`sfcluster {op} --wait`), follow it (`sfcluster logs -f`) or stop it (`sfcluster cancel`)"
               + ("; `sfcluster down --cancel-run` cancels it, then tears down" if op == "down" else ""))
    return LockHeld(f"cluster '{cluster.name}' is locked by {h.text()} (lock on {cluster.lock_party})", fix, h.to_json())


@contextmanager
def cluster_lock(cluster: Cluster, nodes: Nodes, op: str, wait: float = 0,
                 note: Callable[[str], None] = lambda m: None) -> Iterator[None]:
    """Hold the cluster lock on the head for the body of the `with`. Raises LockHeld (75) when
    another operation holds it after `wait` seconds; connection errors as they are (69)."""
    head = cluster.node(cluster.lock_party)
    req = {"cluster": cluster.name, "op": op, "user": getpass.getuser(), "controller": socket.gethostname(),
           "wait": wait}
    answers: "queue.Queue[tuple]" = queue.Queue()
    release, stop = threading.Event(), threading.Event()
    err = bytearray()

    def on_line(line: bytes) -> None:
        kind, _, payload = line.decode(errors="replace").partition(" ")
        if kind == OP_WAITING:
            note(f"waiting for the cluster lock (up to {wait:g} s), held by {LockHolder.parse(_json(payload)).text()}")
        else:
            answers.put((kind, payload))

    def hold() -> None:
        try:
            code = nodes.ray(head.name).stream(nodescripts.argv(head, "oplock", req),
                                           on_stdout=by_line(on_line), on_stderr=err.extend, keep_stdin_open=True,
                                           close_stdin=release, stop=stop)
            answers.put(("END", str(code)))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            answers.put(("EXC", e))

    t = threading.Thread(target=hold, name="sfcluster-cluster-lock", daemon=True)
    t.start()
    try:
        kind, payload = answers.get(timeout=wait + ACQUIRE_GRACE)
    except queue.Empty:
        stop.set()
        raise UnavailableError(f"[{head.name}] no answer about the cluster lock within {wait + ACQUIRE_GRACE:g} s",
                               f"is {head.name} frozen or overloaded? `sfcluster status` names what answers") from None
    if kind == "EXC":
        raise payload
    if kind == OP_HELD:
        raise held_error(cluster, LockHolder.parse(_json(payload)), op)
    if kind == OP_ERROR:
        raise unsafe_state(head.name, str(_json(payload)["why"]))
    if kind != OP_LOCKED:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-6:])
        raise SfclusterError(f"[{head.name}] taking the cluster lock failed ({kind} {payload})" + (f":\n{tail}" if tail else ""))
    try:
        yield
    finally:
        release.set()   # EOF on the holder's stdin: it removes its lock info and exits
        t.join(5)
        if t.is_alive():
            stop.set()  # a silent head: closing the channel ends the holder there (EOF, or no heartbeat)
            t.join(2)


def _json(payload: str) -> dict:
    try:
        v = json.loads(payload)
    except ValueError:
        return {"why": payload[:300]}
    return v if isinstance(v, dict) else {"why": str(v)[:300]}


def lock_holder(cluster: Cluster, nodes: Nodes, action: str = "info") -> LockHolder:
    """Who holds the cluster lock, as the head verifies it (nodescripts/run_ctl.py): not active,
    or the holder with `op` (run/up/down) and `verified`; for a verified run, also its pid, driver
    pid and log (and `cancelled` with action "cancel")."""
    head = cluster.node(cluster.lock_party)
    return LockHolder.parse(nodescripts.call(nodes.ray(head.name), head, "run_ctl", {"cluster": cluster.name, "action": action},
                            what="the cluster lock", timeout=40 if action == "cancel" else 15))

