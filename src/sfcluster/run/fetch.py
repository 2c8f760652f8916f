"""Bringing a run's results home: its outputs ($SFCLUSTER_OUTPUT on the head), log and exit code,
into the run's history dir on the controller (run/history.py); then cleaning the head (old run
dirs, Ray's old session dirs) under the cluster lock. The route is the one of remote/transfer.py
in reverse: a tar over the SSH channel, as the Ray user, read from the cluster's private state
dir by nodescripts/run_files.py, which never follows a link there."""
from __future__ import annotations

import json
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from sfcluster.connect import Nodes
from sfcluster.errors import ConnectError, HostKeyError, SfclusterError, UnavailableError
from sfcluster.exitcodes import Exit
from sfcluster.inventory.model import Cluster
from sfcluster import nodescripts
from sfcluster.nodescripts import contract as C
from sfcluster.remote.transfer import unsafe_state
from sfcluster.run import history
from sfcluster.run.history import RunRecord, UnsafeArchive
from sfcluster.sizes import human_size

MAX_OUTPUT_MB = 1024      # outputs above this are refused whole (never cut): --max-output-mb
MAX_FILES = history.MAX_ENTRIES - 2  # ... and more files than this (the log and result.json come too)
LOG_BYTES = 64 << 20      # the log's last 64 MiB come back (the head keeps it whole)
FETCH_TIMEOUT = 900       # one fetch, whatever its size
RETRY_PAUSE = 3
KEEP_RUNS = 5             # run dirs the head keeps (the newest); older ones go once fetched
MAX_AGE = 7 * 86400       # ... or once this old, fetched or not (a detached run nobody fetched)
KEEP_SESSIONS = 2         # Ray session dirs kept besides the live one (the last Ray's logs)


@dataclass
class Fetched:
    """What a fetch did: the record (updated) and the head's account of the outputs."""

    record: RunRecord
    home: Path
    summary: Dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return self.home / C.OUTPUT_DIR


def _transfer(cluster: Cluster, nodes: Nodes, run_id: str, max_bytes: int, tar_path: Path,
              node: Optional[str] = None) -> Dict[str, Any]:
    """One attempt: the head's (production mode: `node`'s) tar into tar_path; its summary."""
    head = cluster.node(node) if node else cluster.head
    req = {"cluster": cluster.name, "action": "fetch", "run_id": run_id, "max_bytes": max_bytes, "log_bytes": LOG_BYTES,
           "max_files": MAX_FILES}
    limit = max_bytes + LOG_BYTES + (4 << 20)  # headers and result.json
    stop, err, got = threading.Event(), bytearray(), [0]
    with open(tar_path, "wb") as f:
        def on_out(data: bytes) -> None:
            got[0] += len(data)
            if got[0] > limit:
                stop.set()
                return
            f.write(data)

        def on_err(data: bytes) -> None:
            err.extend(data)
            del err[:-65536]
        code = nodes.ray(head.name).stream(nodescripts.argv(head, "run_files", req),
                                           on_stdout=on_out, on_stderr=on_err, stop=stop, timeout=FETCH_TIMEOUT)
    if stop.is_set():
        raise UnsafeArchive(f"[{head.name}] sent more than {limit} bytes for run {run_id}; stopped it, nothing kept")
    prefix = C.CONTROL_PREFIX + C.FETCHED + " "
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.startswith(prefix)]
    if not lines:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-6:])
        raise SfclusterError(f"[{head.name}] fetching run {run_id} gave no answer (exit {code})" + (f":\n{tail}" if tail else ""))
    summary = json.loads(lines[-1][len(prefix):])
    if "error" in summary:
        raise unsafe_state(head.name, summary["error"])
    return summary


def fetch(cluster: Cluster, nodes: Nodes, run_id: str, max_output_mb: float = MAX_OUTPUT_MB,
          exit_code_of: Optional[Callable[[int, str], int]] = None,
          note: Callable[[str], None] = lambda m: None) -> Fetched:
    """Fetch run_id's outputs, log and exit code into its history dir (its outputs replaced
    whole: a fetch is idempotent); one retry when the connection fails or the archive is cut."""
    history.check_run_id(run_id)
    max_bytes = int(max_output_mb * (1 << 20))
    known = history.run_home(cluster.name, run_id).is_dir()
    home = history.make_home(cluster.name, run_id)
    try:
        return _fetch(cluster, nodes, run_id, max_bytes, home, exit_code_of, note)
    except BaseException:
        if not known:  # nothing came of it: no empty entry in `runs`
            shutil.rmtree(home, ignore_errors=True)
        raise


def _fetch(cluster: Cluster, nodes: Nodes, run_id: str, max_bytes: int, home: Path,
           exit_code_of: Optional[Callable[[int, str], int]], note: Callable[[str], None]) -> Fetched:
    incoming = home / ".incoming"
    tar_path = home / ".incoming.tar"
    summary: Dict[str, Any] = {}
    for attempt in (1, 2):
        shutil.rmtree(incoming, ignore_errors=True)
        try:
            summary = _transfer(cluster, nodes, run_id, max_bytes, tar_path)
            if summary.get("missing") or summary.get("active"):
                break
            incoming.mkdir(mode=0o700)
            history.extract(tar_path, incoming, max_bytes + LOG_BYTES + 65536, run_id=run_id)
            break
        except (UnsafeArchive, KeyboardInterrupt, ConnectError, HostKeyError):
            # a head that cannot be reached (or whose host key is wrong) is not retried: its own
            # error, with its node and exit 69, is the answer (a cut transfer is what the retry is for)
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        except (SfclusterError, OSError, tarfile.TarError, EOFError) as e:
            if attempt == 2:
                err = UnavailableError if getattr(e, "exit_code", None) == Exit.UNAVAILABLE else SfclusterError
                raise err(f"fetching run {run_id} failed twice: {getattr(e, 'message', e)}",
                          f"retry later: sfcluster fetch {run_id}") from None
            note(f"fetching run {run_id} failed ({getattr(e, 'message', e)}); retrying once in {RETRY_PAUSE} s")
            time.sleep(RETRY_PAUSE)
        finally:
            tar_path.unlink(missing_ok=True)
    rec = history.load(cluster.name, run_id) or RunRecord(run_id=run_id, cluster=cluster.name, script="?")
    if summary.get("active"):
        shutil.rmtree(incoming, ignore_errors=True)
        raise SfclusterError(f"run {run_id} is still running on {cluster.head_name}",
                             "follow it with `sfcluster logs -f`; fetch it once it has ended")
    if summary.get("missing"):
        shutil.rmtree(incoming, ignore_errors=True)
        if rec.fetched:
            note(f"run {run_id} is no longer on {cluster.head_name} (cleaned up); its outputs were fetched before")
            return Fetched(rec, home, rec.outputs)
        raise SfclusterError(f"run {run_id} is not on {cluster.head_name} (never run on this cluster, or cleaned up "
                             "since)", "`sfcluster runs` lists this controller's runs")
    _install(home, incoming)
    result_file = home / C.RESULT_NAME
    if result_file.is_file():
        try:
            result = json.loads(result_file.read_text())
        except ValueError:
            result = {}
        if isinstance(result, dict) and exit_code_of is not None:
            history.merge_result(rec, result, exit_code_of)
    rec.outputs = {k: summary.get(k) for k in ("files", "bytes", "skipped", "refused", "log_truncated")}
    rec.outputs["dir"] = str(home / C.OUTPUT_DIR)
    rec.fetched = time.time()
    history.save(rec)
    return Fetched(rec, home, summary)


def fetch_party(cluster: Cluster, nodes: Nodes, run_id: str, party: str, home: Path, max_bytes: int,
                outputs: bool = True) -> Dict[str, Any]:
    """Production mode: one party's outputs into home/output/<party>/ (none when `outputs` is
    false: that party keeps them) and its whole log into home/logs/<party>.log, by the route of
    fetch() from that party's node. Returns the party's summary."""
    incoming = home / f".incoming-{party}"
    tar_path = home / f".incoming-{party}.tar"
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        summary = _transfer(cluster, nodes, run_id, max_bytes if outputs else 0, tar_path, node=party)
        if summary.get("missing") or summary.get("active"):
            raise SfclusterError(f"[{party}] run {run_id} is " + ("still running" if summary.get("active") else "not there"))
        incoming.mkdir(mode=0o700)
        history.extract(tar_path, incoming, max_bytes + LOG_BYTES + 65536, run_id=run_id)
        logs = home / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        if (incoming / C.LOG_NAME).is_file():
            (incoming / C.LOG_NAME).replace(logs / f"{party}.log")
        out_root = home / C.OUTPUT_DIR
        out_root.mkdir(mode=0o700, exist_ok=True)
        mine = out_root / party
        shutil.rmtree(mine, ignore_errors=True)
        got = incoming / C.OUTPUT_DIR
        if outputs and got.is_dir():
            got.rename(mine)
        else:
            mine.mkdir(mode=0o700)
        return {k: summary.get(k) for k in ("files", "bytes", "skipped", "refused", "log_truncated")}
    finally:
        tar_path.unlink(missing_ok=True)
        shutil.rmtree(incoming, ignore_errors=True)


def _install(home: Path, incoming: Path) -> None:
    """Swap the fetched output dir, log and result into home (whole, or the old ones stay)."""
    out_new = incoming / C.OUTPUT_DIR
    out_new.mkdir(mode=0o700, exist_ok=True)
    old = home / C.OUTPUT_DIR
    if old.exists() or old.is_symlink():
        trash = home / ".old-output"
        shutil.rmtree(trash, ignore_errors=True)
        old.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    out_new.rename(old)
    for name in (C.LOG_NAME, C.RESULT_NAME):
        if (incoming / name).is_file():
            (incoming / name).replace(home / name)
    shutil.rmtree(incoming, ignore_errors=True)


def clean_head(cluster: Cluster, nodes: Nodes, fetched: Optional[str] = None, node: Optional[str] = None) -> Dict[str, Any]:
    """Mark `fetched` as stored on the head (production mode: on `node`), then remove its old run
    dirs and Ray's old session dirs of this cluster (nodescripts/run_files.py; skipped, saying so,
    while the lock is held)."""
    head = cluster.node(node) if node else cluster.head
    req = {"cluster": cluster.name, "action": "clean", "fetched": fetched, "keep_runs": KEEP_RUNS,
           "max_age": MAX_AGE, "temp_dir": cluster.temp_dir, "keep_sessions": KEEP_SESSIONS}
    return nodescripts.call(nodes.ray(head.name), head, "run_files", req, what="cleaning the run dirs", timeout=120)


def describe(f: Fetched) -> str:
    """One line: where the outputs are and what came."""
    s = f.summary
    what = f"{s.get('files', 0)} file(s), {human_size(s.get('bytes', 0))}"
    line = f"outputs of run {f.record.run_id}: {f.output_dir} ({what}); log: {f.home / C.LOG_NAME}"
    if s.get("refused"):
        line += (f"; outputs NOT fetched: {s['refused']} (they stay on the head; for more bytes: sfcluster fetch "
                 f"{f.record.run_id} --max-output-mb N; files: at most {MAX_FILES})")
    for path, why in (s.get("skipped") or [])[:5]:
        line += f"; skipped output/{path}: {why}"
    if s.get("log_truncated"):
        line += f"; the log is cut to its last {human_size(LOG_BYTES)} (whole on the head)"
    return line


