"""Ray's start choreography for one `up`: the head, the wait for every party to join, the workers.

The order was tuned on the benchmark (docs/BENCHMARKS.md) and is what `test_lifecycle`,
`test_starvation` and the N = 8 bench hold it to:
1. the head's `ray start` runs in a thread; `up` waits for its GCS port only;
2. the join wait starts on the head at once (the waiter imports Ray, ~1 s, while the workers
   start, and a worker's `ray start` returns ~1 s before its raylet shows in the GCS anyway);
3. the workers start, in parallel, once the head's OWN raylet has joined (started together on
   2 cores, seven worker starts pushed the head's raylet to the end: ready 17.3 s at N = 8
   against 11.8 s for the bare head-then-workers);
4. `up` returns when every party has joined, not when each `ray start` CLI exits (at N = 8 on
   2 cores the CLI goes on 2.5-3 s after its raylet registered; its output goes to a private
   file on the node, so closing the channel early costs it nothing).
A failing start ends it at once; `abort` waits (bounded) for any `ray start` still running, so
that a rollback never stops Ray under one.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set

from sfcluster.connect import Nodes
from sfcluster.errors import CommandTimeout, SfclusterError, UnavailableError
from sfcluster.inventory.model import Cluster
from sfcluster.nodescripts.answers import GcsAnswer
from sfcluster.raycluster.argv import START_TIMEOUT, gcs_port_wait_argv, head_start_argv, worker_start_argv
from sfcluster.raycluster.control import gcs_query, start_quietly
from sfcluster.tls.install import with_env

Progress = Callable[[str, str], None]  # (node, message)
POLL = 0.05


@dataclass
class Joined:
    """What the start did: every party's state in the GCS (each alive, with its resource)."""

    parties: Dict[str, dict]   # party -> {ip, alive, resource}
    head_started: bool
    workers_started: List[str] = field(default_factory=list)


class RayStart:
    """One bring-up of Ray: `start()` returns Joined or raises the first failure (the head's
    before the workers' it explains); `started` names the nodes whose `ray start` began (a
    rollback stops those), `silent` those that stopped answering (a rollback would only wait)."""

    def __init__(self, cluster: Cluster, nodes: Nodes, *, start_head: bool, workers: Sequence[str],
                 tls_dirs: Mapping[str, str], progress: Progress, join_timeout: float) -> None:
        self.cluster, self.nodes, self.tls_dirs, self.progress = cluster, nodes, tls_dirs, progress
        self.start_head, self.workers, self.join_timeout = start_head, list(workers), join_timeout
        self.started: List[str] = []
        self.silent: Set[str] = set()
        self._head_error: Dict[str, BaseException] = {}
        self._head_thread: Optional[threading.Thread] = None   # None: nothing of the head to wait for
        self._stop_head, self._stop_starts, self._stop_wait = threading.Event(), threading.Event(), threading.Event()
        self._head_joined = threading.Event()
        self._joined: Optional[GcsAnswer] = None
        self._failed: Dict[str, BaseException] = {}
        self._starters: List[threading.Thread] = []
        self._waiter: Optional[threading.Thread] = None

    # -- the whole choreography ----------------------------------------------------------------
    def start(self) -> Joined:
        head_fresh = self._start_head()
        self._waiter = threading.Thread(target=self._wait_joined, name="sfcluster-wait-joined", daemon=True)
        self._waiter.start()
        if head_fresh:
            while not self._head_joined.wait(POLL):
                if not self._waiter.is_alive() or self._head_error:
                    break  # the head failed or went silent: no worker is started; reported below
        if not head_fresh or self._head_joined.is_set():
            self._start_workers()
        self._watch()
        return self._conclude(head_fresh)

    def abort(self) -> None:
        """Before a rollback: the head's `ray start`, if it may still run, waited for (bounded)."""
        if self._head_thread is not None:
            self._head_thread.join(START_TIMEOUT + 15)

    # -- the steps -------------------------------------------------------------------------------
    def _start_head(self) -> bool:
        """The head's `ray start` in a thread, and the wait for its GCS port; True when started."""
        if not self.start_head:
            return False
        cluster, head = self.cluster, self.cluster.head
        self.progress(head.name, "starting Ray head")
        self.started.append(head.name)
        argv = with_env(head_start_argv(cluster), self.tls_dirs.get(head.name))

        def run() -> None:
            try:
                e = start_quietly(cluster, self.nodes, head.name, argv, self._stop_head, head=True)
            except Exception as x:  # noqa: BLE001 - re-raised in the caller's thread
                e = x
            if e is not None:
                self._head_error["error"] = e
        self._head_thread = threading.Thread(target=run, name="sfcluster-head-start", daemon=True)
        self._head_thread.start()
        gcs_up = self.nodes[head.name].run(gcs_port_wait_argv(cluster), timeout=START_TIMEOUT + 10)
        if not gcs_up.ok:
            self._finish_head()
            raise SfclusterError(f"[{head.name}] Ray's GCS never opened {cluster.ray_address}",
                                 "see the Ray log under " + cluster.temp_dir + "/session_latest/logs on the head")
        return True

    def _wait_joined(self) -> None:
        """The join wait on the head (a thread): every party's resource visible, or the timeout."""
        head = self.cluster.head_name

        def on_joined(party: str) -> None:
            self.progress(party, "joined")
            if party == head:
                self._head_joined.set()
        try:
            self._joined = gcs_query(self.cluster, self.nodes, wait=self.join_timeout, on_line=on_joined,
                                     stop=self._stop_wait, tls_dir=self.tls_dirs.get(head))
        except CommandTimeout as e:  # the head went silent: reported, never rolled back into
            self._joined = GcsAnswer(error=e.message, timeout=True)
        except Exception as e:  # noqa: BLE001 - reported in the caller's thread
            self._joined = GcsAnswer(error=str(e))

    def _start_workers(self) -> None:
        def run(n: str) -> None:
            argv = with_env(worker_start_argv(self.cluster, self.cluster.node(n)), self.tls_dirs.get(n))
            try:
                e = start_quietly(self.cluster, self.nodes, n, argv, self._stop_starts)
            except BaseException as x:  # noqa: BLE001 - reported in the caller's thread
                e = x
            if e is not None:
                self._failed[n] = e
        for n in self.workers:
            self.progress(n, "starting Ray worker")
            self.started.append(n)  # before the start: a rollback stops a half-started worker too
            t = threading.Thread(target=run, args=(n,), name=f"sfcluster-start-{n}", daemon=True)
            t.start()
            self._starters.append(t)

    def _watch(self) -> None:
        """Until the join wait ends, or a start fails: the first failure raised (the head's first),
        after the wait is stopped and every worker start is over."""
        assert self._waiter is not None
        try:
            while self._waiter.is_alive() and not self._failed and not self._head_error:
                self._waiter.join(POLL)
                if self._head_thread is not None and not self._head_thread.is_alive():
                    self._finish_head()  # raises when the head's `ray start` failed
            if self._head_thread is not None and (self._head_error or self._failed):
                self._finish_head()  # a failed head explains failed workers: its error goes first
            self._raise_failed()
        except BaseException:
            self._stop_wait.set()
            self._waiter.join(10)
            self._join_starters()  # never roll back under a `ray start` still running
            raise
        if self._head_thread is not None and not self._head_thread.is_alive():
            self._finish_head()

    def _conclude(self, head_fresh: bool) -> Joined:
        head = self.cluster.head_name
        data = self._joined or GcsAnswer(error="the wait on the head ended without an answer")
        if data.timeout:
            # the head went silent: nothing of it (nor of the workers joining it) will end in time
            self.silent.add(head)
            self._let_go()
            raise UnavailableError(f"[{head}] went silent during the join wait: {data.error}",
                                   f"is {head} frozen or cut off? once it is back: sfcluster down, then up")
        if not head_fresh:
            # A repair (the head was already up): the GCS may still list a dead raylet of a party
            # being restarted as alive for ~15 s, so "joined" proves nothing until its `ray start`
            # is done. A head started by this `up` has a fresh GCS: no stale entries.
            self._join_starters()
            self._raise_failed()
        if data.error is None and not data.missing:
            self._let_go()  # every party joined: the `ray start` CLIs still talking only finish their output
        else:
            self._join_starters()
        if data.error is not None:
            raise SfclusterError(f"[{head}] cannot query Ray's GCS at {self.cluster.ray_address}: {data.error}")
        missing = data.missing
        if missing:
            raise SfclusterError(f"party resource not visible after {self.join_timeout:g} s: {', '.join(missing)}",
                                 "run `sfcluster check` and look at the Ray logs on those nodes")
        return Joined(data.parties_json(), head_fresh, list(self.workers))

    # -- helpers ---------------------------------------------------------------------------------
    def _finish_head(self) -> None:
        """The head's `ray start` is over: its error, if any, raised; nothing left to wait for."""
        if self._head_thread is not None:
            self._head_thread.join()
            self._head_thread = None
        if "error" in self._head_error:
            raise self._head_error["error"]

    def _raise_failed(self) -> None:
        failed = self._failed
        if len(failed) == 1:
            raise next(iter(failed.values()))
        if failed:
            raise SfclusterError("starting Ray workers failed on %d node(s):\n%s"
                                 % (len(failed), "\n".join(f"  {k}: {e}" for k, e in failed.items())))

    def _join_starters(self) -> None:  # bounded: every start runs under its own timeout
        for t in self._starters:
            t.join(START_TIMEOUT + 15)

    def _let_go(self) -> None:
        """Stop listening to the `ray start` CLIs still running (their output goes to a file)."""
        self._stop_starts.set()
        self._stop_head.set()
        self._head_thread = None
