"""Profile `sfcluster up`, `run` and `down` with py-spy (wall clock, idle threads included) on
fresh bench nodes, to find where a missed target's time goes.

    python -m bench.profile --n 2 [--steps up,run,down] [--reps 1]

Writes build/bench/profile/N-step-rep.raw (py-spy's collapsed stacks, for flamegraph.pl or
speedscope) and .txt: the functions with the most wall time on the main thread (inclusive),
limited to sfcluster, its SSH stack and imports.
"""
from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from bench import contenders as C
from bench.measure import DRIVER, ensure_clean
from bench.nodes import BUILD, BenchNodes, BenchSpec, SshMasters, log

PYSPY = C.BENCH_VENV / "bin" / "py-spy"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]+?)(?::(?P<line>\d+))?\)$")
INTERESTING = ("sfcluster/", "paramiko/", "fabric/", "invoke/", "<frozen importlib", "click/", "yaml/", "rich/")


def summarize(raw: Path, top: int = 40) -> str:
    """Inclusive wall time per function on the main thread, from py-spy's collapsed stacks
    ("thread (TID): MainThread;func (file:line);... COUNT")."""
    incl: Dict[str, int] = collections.Counter()
    where: Dict[str, int] = collections.Counter()   # innermost sfcluster frame, with its line
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or "MainThread" not in frames[0]:
            continue
        n = int(count)
        total += n
        seen = set()
        inner = "(outside sfcluster: interpreter start/exit)"
        for f in frames[1:]:
            m = FRAME.match(f.strip())
            # the call site in sfcluster's own logic, not the generic SSH/fan-out plumbing under it
            if m and "sfcluster/" in m.group("file") and "sfcluster/remote/" not in m.group("file"):
                inner = f"{m.group('func')} ({m.group('file')}:{m.group('line')})"
            if not m or not any(s in m.group("file") for s in INTERESTING):
                continue
            key = f"{m.group('func')} ({m.group('file')})"
            if key not in seen:
                seen.add(key)
                incl[key] += n
        where[inner] += n
    out = [f"{total / 100:.2f} s on the main thread (100 samples/s, idle included)", "",
           "Where the main thread was, by innermost line of sfcluster's logic (sfcluster/remote excluded):", ""]
    for key, n in where.most_common(top):
        out.append(f"{n / 100:7.2f} s  {100 * n / max(total, 1):5.1f}%  {key}")
    out += ["", "Inclusive time per function:", ""]
    for key, n in incl.most_common(top):
        out.append(f"{n / 100:7.2f} s  {100 * n / max(total, 1):5.1f}%  {key}")
    return "\n".join(out) + "\n"


def record(argv: List[str], out: Path, env: dict) -> int:
    base = [str(PYSPY), "record", "--idle", "--rate", "100", "--threads", "--nonblocking"]
    p = subprocess.run([*base, "--format", "raw", "-o", str(out.with_suffix(".raw")), "--", *argv],
                       env=env, capture_output=True, text=True)
    (out.with_suffix(".log")).write_text(p.stdout + p.stderr)
    out.with_suffix(".txt").write_text(summarize(out.with_suffix(".raw")))
    return p.returncode


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--steps", default="up,run,down")
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args(argv)
    if not PYSPY.exists():
        log(f"{PYSPY} missing: run `bash bench/setup.sh`")
        return 2
    outdir = BUILD / "profile"
    outdir.mkdir(parents=True, exist_ok=True)
    spec = BenchSpec(args.n)
    nodes, masters = BenchNodes(spec), SshMasters(spec)
    try:
        nodes.up()
        masters.open()
        sfc = C.make(["sfcluster"], nodes, masters, outdir)["sfcluster"]
        assert isinstance(sfc, C.Sfcluster)
        import os
        env = dict(os.environ, **sfc.env)
        steps = args.steps.split(",")
        for rep in range(args.reps):
            ensure_clean(nodes)
            up_needed = "run" in steps or "down" in steps
            if "up" in steps or up_needed:
                code = record(sfc.argv("up"), outdir / f"{args.n}-up-{rep}", env)
                log(f"up exited {code}; {outdir}/{args.n}-up-{rep}.txt")
            if "run" in steps:
                argv_run = sfc.argv("run") + [str(DRIVER), "--", sfc.cluster.ray_address]
                code = record(argv_run, outdir / f"{args.n}-run-{rep}", env)
                log(f"run exited {code}; {outdir}/{args.n}-run-{rep}.txt")
            if up_needed or "down" in steps:
                code = record(sfc.argv("down"), outdir / f"{args.n}-down-{rep}", env)
                log(f"down exited {code}; {outdir}/{args.n}-down-{rep}.txt")
    finally:
        masters.close()
        nodes.down()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
