"""The TLS cost section (`python -m bench.run --tls-reps K`): `sfcluster up` and an SS-LR training
with `tls: on` against `tls: off`, side by side on the same bench nodes.

Per N and repetition, each mode in turn (the order alternates each repetition):
  1. `sfcluster up`, time to ready: measure_up, the poller of every other section (under TLS it
     asks the GCS with the head's certificate);
  2. one trivial `sfcluster run` (bench/driver_trivial.py): the first run after an `up` waits for
     the cluster to settle (bench/FINDINGS.md), which is not training time; its time is kept too;
  3. `sfcluster run -i INV templates/train_lr.py -- --synthetic`: the command's wall time on the controller and
     the training seconds the template prints in its last line (`RESULT ... seconds=S`, from
     `sf.init` to the result, inside the driver);
  4. `sfcluster down --purge`, timed: certificates off the nodes and the CA off the controller,
     so every `up` starts clean and `tls: on` creates the CA and issues every certificate anew
     (checked afterwards; whatever is left is recorded and removed).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from bench.contenders import ProcLaunch, Sfcluster, bench_inventory, cluster_name
from bench.measure import DRIVER, as_dict, measure_down, measure_up
from bench.nodes import ROOT, BenchNodes, SshMasters, log
from sfcluster.inventory import load_inventory
from sfcluster.inventory.model import TlsMode

MODES = (TlsMode.OFF, TlsMode.ON)
TRAIN_SCRIPT = ROOT / "templates" / "train_lr.py"
TRAIN_TIMEOUT = 900      # ~30 s at N=3 on the 2-core machine; generous for N=4/8 under TLS
WARMUP_TIMEOUT = 180
# the template's last line, e.g. "RESULT auc=0.9512 accuracy=0.8870 seconds=31.4"; not anchored:
# the log holds `sfcluster run`'s stdout and stderr, and a stderr line may land before it
RESULT_LINE = re.compile(r"RESULT auc=([0-9.a-z]+) accuracy=([0-9.a-z]+) seconds=([0-9.]+)")

# (mode, kind, record): where the samples go (run.py: the results file's "tls" key)
Record = Callable[[TlsMode, str, dict], None]


@dataclass
class TrainSample:
    mode: str
    n: int
    rep: int
    ok: bool
    wall_s: Optional[float] = None      # `sfcluster run ... train_lr.py`: launch -> the command exited
    train_s: Optional[float] = None     # the template's own `seconds=` (inside the driver)
    auc: Optional[float] = None
    accuracy: Optional[float] = None
    warmup_s: Optional[float] = None    # the trivial `sfcluster run` just before (the first after `up`)
    exit_code: Optional[int] = None
    error: str = ""
    log: str = ""


def contenders(nodes: BenchNodes, masters: SshMasters, logs: Path) -> Dict[TlsMode, Sfcluster]:
    """sfcluster with `tls: on` and with `tls: off` (the same cluster name, one inventory each); every
    `down` of theirs purges the certificates and the CA."""
    s = nodes.spec
    out: Dict[TlsMode, Sfcluster] = {}
    for mode in MODES:
        inv = bench_inventory(nodes, cluster_name(s.n), s.build / f"inventory-{s.n}-tls-{mode.value}.yaml", tls=mode)
        out[mode] = Sfcluster(nodes, masters, load_inventory(str(inv)), logs, inv, down_flags=("--purge",))
    return out


def _run(c: Sfcluster, argv: List[str], log_path: Path, timeout: float) -> Tuple[Optional[int], Optional[float]]:
    """One `sfcluster run`: (exit code or None when killed at the timeout, wall seconds or None)."""
    t0 = time.monotonic()
    launched = ProcLaunch(c.argv("run") + argv, log_path, c.env)
    code = launched.wait(timeout)
    if code is None:
        launched.kill()
        return None, None
    assert launched.ended is not None
    return code, round(launched.ended - t0, 3)


def measure_train(c: Sfcluster, mode: TlsMode, rep: int, logs: Path) -> TrainSample:
    n = c.nodes.spec.n
    log_path = logs / f"n{n}-{c.key}-tls-{mode.value}-{rep}-train.log"
    warmup_log = logs / f"n{n}-{c.key}-tls-{mode.value}-{rep}-warmup.log"
    s = TrainSample(mode.value, n, rep, ok=False, log=str(log_path))
    code, s.warmup_s = _run(c, [str(DRIVER), "--", c.cluster.ray_address], warmup_log, WARMUP_TIMEOUT)
    if code != 0:
        s.error = f"the trivial run before the training {'hung' if code is None else f'exited {code}'}"
        s.exit_code = code
        log(f"N={n} tls {mode.value} train #{rep} FAILED: {s.error}; see {warmup_log}")
        return s
    s.exit_code, s.wall_s = _run(c, [str(TRAIN_SCRIPT), "--", "--synthetic"], log_path, TRAIN_TIMEOUT)
    found = RESULT_LINE.findall(log_path.read_text(errors="replace"))
    if found:
        auc, acc, secs = found[-1]
        try:
            s.auc, s.accuracy, s.train_s = float(auc), float(acc), float(secs)
        except ValueError:
            pass  # reported below as no RESULT line
    if s.exit_code is None:
        s.error = f"still running after {TRAIN_TIMEOUT} s (killed)"
    elif s.exit_code != 0:
        s.error = f"exited {s.exit_code}" + (f" (auc {s.auc})" if s.auc is not None else "")
    elif s.train_s is None:
        s.error = "no `RESULT ... seconds=` line in its output"
    s.ok = not s.error
    if s.ok:
        log(f"N={n} tls {mode.value} train #{rep}: training {s.train_s:.1f} s, run {s.wall_s:.2f} s "
            f"(first run after up {s.warmup_s:.2f} s), auc {s.auc}")
    else:
        log(f"N={n} tls {mode.value} train #{rep} FAILED: {s.error}; see {log_path}")
    return s


def certs_left(c: Sfcluster) -> List[str]:
    """Where certificates survived `down --purge` (the nodes' cert dir, the controller's CA): each
    is recorded and removed (untimed) so the next `up` starts clean either way."""
    left: List[str] = []
    d = shlex.quote(c.tls_dir())
    for name, p in c.nodes.each(f"if [ -e {d} ]; then echo present; rm -rf {d}; fi").items():
        if "present" in p.stdout:
            left.append(f"{name}:{c.tls_dir()}")
    ca = Path(c.env["SFCLUSTER_STATE_DIR"]) / c.cluster.name / "ca"  # sfcluster.tls.pki.ca_dir under the bench's state dir
    if ca.exists() or ca.is_symlink():
        left.append(f"controller:{ca}")
        if ca.is_symlink():
            ca.unlink()
        else:
            shutil.rmtree(ca)
    return left


def _cancel_and_clean(c: Sfcluster) -> None:
    """After a run that had to be killed: it may still hold the cluster lock on the head."""
    try:
        subprocess.run(c.argv("down", "--force", "--cancel-run", *c.down_flags), env=dict(os.environ, **c.env),
                       capture_output=True, timeout=180)
    except subprocess.TimeoutExpired:
        log("sfcluster down --cancel-run hung during cleanup; killing Ray on the nodes directly")
    c.cleanup()


def tls_section(nodes: BenchNodes, masters: SshMasters, reps: int, give_up: float, logs: Path, record: Record) -> None:
    """`reps` up + training + down per mode at this N, the modes interleaved."""
    n = nodes.spec.n
    cs = contenders(nodes, masters, logs)
    # a CA from an interrupted run (the controller's state dir outlives the nodes), or certificates
    # of the sections before (should the inventory default become tls: on): the first `up` starts clean too
    stale = certs_left(cs[TlsMode.ON])
    if stale:
        log(f"N={n} tls: certificates from before the section removed: {', '.join(stale)}")
    for rep in range(reps):
        for mode in (MODES if rep % 2 == 0 else MODES[::-1]):
            c = cs[mode]
            up = measure_up(c, masters, nodes, rep, give_up, logs, tag=f"tls-{mode.value}-{rep}")
            record(mode, "up", as_dict(up))
            if not up.ok:
                c.cleanup()  # down --force --purge, then no Ray at all
            else:
                train = measure_train(c, mode, rep, logs)
                record(mode, "train", as_dict(train))
                if train.exit_code is None:
                    _cancel_and_clean(c)
                else:
                    down = as_dict(measure_down(c, nodes, rep, logs, tag=f"tls-{mode.value}-{rep}"))
                    record(mode, "down", down)
            left = certs_left(c)
            if left:
                log(f"N={n} tls {mode.value} #{rep}: certificates left after down --purge (removed): {', '.join(left)}")
                record(mode, "not_purged", {"rep": rep, "where": left})
