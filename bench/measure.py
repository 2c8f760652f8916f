"""One measurement each: time to a ready cluster, time of `down` (and what it left behind),
`sfcluster run` against plain ssh, and sfcluster's up/down reliability cycles.

Every step starts from nodes with no Ray process at all (checked, and cleaned if a previous
step left something: that is recorded, never hidden). Failures are samples too.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from bench.contenders import Contender, Launched, Sfcluster
from bench.nodes import NODE_PYTHON, BenchNodes, SshMasters, log
from bench.readiness import ReadinessPoller

COMMAND_GRACE = 60  # how long a command may run on after readiness (or give-up) before it is killed


@dataclass
class UpSample:
    contender: str
    n: int
    rep: int
    ok: bool
    ready_s: Optional[float] = None          # controller clock: launch -> poller reported N alive
    ready_remote_s: Optional[float] = None   # head's clock (same kernel clock) for the same instant
    command_s: Optional[float] = None        # launch -> the command itself returned
    exit_code: Optional[int] = None
    timeline: List[Tuple[float, int]] = field(default_factory=list)  # (s, alive nodes)
    error: str = ""
    dirty_before: List[str] = field(default_factory=list)
    log: str = ""


@dataclass
class DownSample:
    contender: str
    n: int
    rep: int
    ok: bool
    down_s: Optional[float] = None
    exit_code: Optional[int] = None
    leftovers: List[str] = field(default_factory=list)   # Ray/SPU processes still running after down
    leftover_nodes: int = 0
    firewall_left: Dict[str, str] = field(default_factory=dict)
    error: str = ""
    log: str = ""


def ensure_clean(nodes: BenchNodes) -> List[str]:
    return [str(x) for x in nodes.force_clean()]


def measure_up(c: Contender, masters: SshMasters, nodes: BenchNodes, rep: int, give_up: float, logs: Path,
               tag: str = "") -> UpSample:
    n = nodes.spec.n
    log_path = logs / f"n{n}-{c.key}-{tag or rep}-up.log"
    s = UpSample(c.key, n, rep, ok=False, log=str(log_path))
    s.dirty_before = ensure_clean(nodes)
    poller = ReadinessPoller(masters, want=n, give_up=give_up + 5, port=c.cluster.ray.gcs, env=c.readiness_env())
    launched: Optional[Launched] = None
    try:
        poller.start()
        t0 = time.monotonic()
        launched = c.launch_up(log_path)
        deadline = t0 + give_up
        while True:
            ready = poller.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            if ready is not None or poller.finished or time.monotonic() >= deadline:
                break
            if launched.code not in (None, 0):
                break  # the contender failed outright: no point waiting for readiness
        waited = time.monotonic() - t0
        if ready is not None:
            s.ready_s = round(ready - t0, 3)
            s.ready_remote_s = round(poller.ready_remote - t0, 3) if poller.ready_remote else None
        # the command's own end: before readiness for ray up, after it for sfcluster
        code = launched.wait(max(0.0, (ready or time.monotonic()) + COMMAND_GRACE - time.monotonic()))
        s.exit_code = code
        if launched.ended is not None:
            s.command_s = round(launched.ended - t0, 3)
        s.timeline = poller.timeline(t0)
        alive = poller.events[-1].count if poller.events else 0
        if ready is None and code not in (None, 0):
            s.error = f"command exited {code} (alive: {alive}/{n})"
        elif ready is None and poller.finished and waited < give_up:
            # the poller itself ended early: a bench failure, not the contender's
            s.error = "readiness poller ended early: " + " | ".join(poller.lines[-3:])
        elif ready is None:
            s.error = f"not ready within {give_up:.0f} s (alive: {alive}/{n})"
        elif code is None:
            s.error = f"command still running {COMMAND_GRACE} s after readiness"
        elif code != 0:
            s.error = f"command exited {code}"
        s.ok = not s.error
    except Exception as e:  # noqa: BLE001 - a failed sample, the bench goes on
        s.error = f"{type(e).__name__}: {e}"
    finally:
        poller.stop()
        if launched is not None and launched.code is None:
            launched.kill()
    if not s.ok:
        log(f"N={n} {c.key} up {tag or f'#{rep}'} FAILED: {s.error}; see {log_path}")
        if getattr(launched, "error", None):
            s.error += f" ({launched.error})"  # type: ignore[union-attr]
    else:
        cmd = f", command {s.command_s:.2f} s" if s.command_s is not None else ""
        log(f"N={n} {c.key} up {tag or f'#{rep}'}: ready {s.ready_s:.2f} s{cmd}")
    return s


def measure_down(c: Contender, nodes: BenchNodes, rep: int, logs: Path, timeout: float = 120, tag: str = "") -> DownSample:
    n = nodes.spec.n
    log_path = logs / f"n{n}-{c.key}-{tag or rep}-down.log"
    s = DownSample(c.key, n, rep, ok=False, log=str(log_path))
    launched: Optional[Launched] = None
    try:
        t0 = time.monotonic()
        launched = c.launch_down(log_path)
        code = launched.wait(timeout)
        s.exit_code = code
        if launched.ended is not None:
            s.down_s = round(launched.ended - t0, 3)
        left = nodes.leftovers()
        s.leftovers = [str(x) for x in left]
        s.leftover_nodes = len({x.node for x in left})
        s.firewall_left = nodes.firewall_rules()
        if code is None:
            s.error = f"still running after {timeout:.0f} s"
        elif code != 0:
            s.error = f"exited {code}"
        s.ok = not s.error
    except Exception as e:  # noqa: BLE001
        s.error = f"{type(e).__name__}: {e}"
    finally:
        if launched is not None and launched.code is None:
            launched.kill()
    what = f"{s.down_s:.2f} s" if s.down_s is not None else "-"
    log(f"N={n} {c.key} down {tag or f'#{rep}'}: {what}, {len(s.leftovers)} Ray process(es) left on {s.leftover_nodes} node(s)"
        + (f", FAILED: {s.error}" if s.error else "") + (f", firewall rules left on {sorted(s.firewall_left)}" if s.firewall_left else ""))
    if s.leftovers or s.error:
        c.cleanup()
    return s


@dataclass
class RunSample:
    how: str          # "sfcluster" (sfcluster run) or "ssh" (ssh root@head python script.py)
    rep: int
    ok: bool
    seconds: Optional[float] = None
    error: str = ""


DRIVER = Path(__file__).resolve().parent / "driver_trivial.py"
REMOTE_DRIVER = "/tmp/sfbench_driver.py"


def measure_run(c: Sfcluster, masters: SshMasters, nodes: BenchNodes, reps: int, logs: Path) -> List[RunSample]:
    """`sfcluster run driver.py` against `ssh root@head python driver.py`, alternating, on one
    sfcluster-started cluster. The plain-ssh copy of the script is made outside the timing;
    plain ssh opens a fresh connection each time, as `sfcluster run` does."""
    n = nodes.spec.n
    out: List[RunSample] = []
    nodes.write_file(nodes.spec.names[0], REMOTE_DRIVER, DRIVER.read_bytes())
    address = c.cluster.ray_address
    ssh = masters.base(nodes.spec.head_ip) + [f"{NODE_PYTHON} {REMOTE_DRIVER} {address}"]
    sfc = c.argv("run") + [str(DRIVER), "--", address]
    for rep in range(reps):
        order = [("sfcluster", sfc), ("ssh", ssh)] if rep % 2 == 0 else [("ssh", ssh), ("sfcluster", sfc)]
        for how, argv in order:
            t0 = time.monotonic()
            p = subprocess.run(argv, capture_output=True, text=True, timeout=180,
                               env=None if how == "ssh" else _env(c))
            dt = round(time.monotonic() - t0, 3)
            ok = p.returncode == 0 and "SFBENCH-DRIVER-OK" in p.stdout
            (logs / f"n{n}-run-{how}-{rep}.log").write_text(f"$ {argv}\nexit {p.returncode}\n{p.stdout}\n{p.stderr}")
            out.append(RunSample(how, rep, ok, dt, "" if ok else f"exit {p.returncode}: {p.stderr[-300:]}"))
            log(f"N={n} run #{rep} {how}: {dt:.2f} s" + ("" if ok else f" FAILED ({out[-1].error})"))
    return out


def _env(c: Sfcluster) -> dict:
    import os
    return dict(os.environ, **c.env)


@dataclass
class Cycles:
    n: int
    cycles: int = 0
    up_failures: int = 0
    down_failures: int = 0
    leftover_cycles: int = 0
    up_s: List[float] = field(default_factory=list)     # sfcluster up command time per cycle
    down_s: List[float] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)


def reliability_cycles(c: Contender, nodes: BenchNodes, cycles: int, logs: Path, give_up: float) -> Cycles:
    """`up` then `down`, `cycles` times in a row; a bring-up fails when the command fails or does
    not return within give_up + COMMAND_GRACE (sfcluster's own `up` waits for every party)."""
    res = Cycles(nodes.spec.n)
    for i in range(cycles):
        ensure_clean(nodes)
        res.cycles += 1
        t0 = time.monotonic()
        up = c.launch_up(logs / f"n{nodes.spec.n}-{c.key}-cycle{i}-up.log")
        code = up.wait(give_up + COMMAND_GRACE)
        if code != 0:
            up.kill()
            res.up_failures += 1
            res.errors.append(f"cycle {i}: up {'hung' if code is None else f'exited {code}'}")
            log(f"N={nodes.spec.n} {c.key} cycle {i}: up FAILED ({res.errors[-1]})")
            c.cleanup()
            continue
        res.up_s.append(round(time.monotonic() - t0, 3))
        d = measure_down(c, nodes, i, logs, tag=f"cycle{i}")
        if d.down_s is not None:
            res.down_s.append(d.down_s)
        if not d.ok:
            res.down_failures += 1
            res.errors.append(f"cycle {i}: down {d.error}")
        if d.leftovers or d.firewall_left:
            res.leftover_cycles += 1
        log(f"N={nodes.spec.n} {c.key} cycle {i}: up {res.up_s[-1]:.2f} s, down {d.down_s} s")
    return res


def as_dict(x: object) -> dict:
    return asdict(x)  # type: ignore[arg-type]
