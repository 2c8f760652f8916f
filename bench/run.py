"""Run the benchmark: `python -m bench.run` (or `make bench`, which also does the set-up).

For each N: start N bench nodes, then per repetition bring the cluster up and down with each
contender in turn (the order rotates each repetition), then `sfcluster run` against plain ssh,
then (at one N) sfcluster's up/down reliability cycles, then (with --tls-reps) the TLS cost
section (bench/tlscost.py); nodes removed after each N, also on Ctrl-C or error. Results go to
build/bench/results.json after every sample; the report (docs/BENCHMARKS.md +
docs/bench-time-to-ready.png) is written at the end.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from bench import contenders as C
from bench.measure import as_dict, measure_down, measure_run, measure_up, reliability_cycles
from bench.nodes import BUILD, BenchNodes, BenchSpec, SshMasters, log, sh
from bench.readiness import install as install_poller
from bench.tlscost import tls_section
from sfcluster.inventory.model import TlsMode

ORDER = ["sfcluster", "bare", "rayup"]


def machine() -> Dict[str, str]:
    def out(argv: List[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")
    mem = next((ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")), "0")
    return {
        "cores": out(["nproc"]), "cpu": model, "memory_gib": f"{int(mem) / 2**20:.1f}",
        "kernel": out(["uname", "-srm"]), "docker": out(["docker", "version", "-f", "{{.Server.Version}}"]),
        "docker_compose": out(["docker-compose", "version", "--short"]), "controller_python": platform.python_version(),
        "controller_ray": out([str(C.BENCH_VENV / "bin" / "ray"), "--version"]),
        "free": subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.rstrip(),
    }


def node_versions(nodes: BenchNodes) -> Dict[str, str]:
    p = nodes.exec(nodes.spec.names[0], "/opt/sf/bin/python -c 'import ray, filelock, sys; "
                                        "print(ray.__version__, filelock.__version__, sys.version.split()[0])'")
    ray_v, fl, py = p.stdout.split()
    return {"ray": ray_v, "filelock": fl, "python": py, "image": nodes.spec.image}


class Results:
    def __init__(self, path: Path, config: dict) -> None:
        self.path = path
        self.data: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "config": config,
                           "machine": machine(), "sizes": {}}

    def size(self, n: int) -> dict:
        return self.data["sizes"].setdefault(str(n), {"up": {}, "down": {}, "run": {}, "cycles": None})

    def add(self, n: int, kind: str, key: str, sample: object) -> None:
        self.size(n)[kind].setdefault(key, []).append(as_dict(sample))
        self.save()

    def add_tls(self, n: int, mode: TlsMode, kind: str, record: dict) -> None:
        """The TLS section's samples: "tls" -> N -> "on"/"off" -> up/train/down/not_purged -> [records]
        (the key exists only when the section ran)."""
        self.data.setdefault("tls", {}).setdefault(str(n), {}).setdefault(mode.value, {}).setdefault(kind, []).append(record)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def bench_size(n: int, args: argparse.Namespace, results: Results, keys: List[str], logs: Path) -> None:
    reps = {"sfcluster": args.reps_sfcluster, "bare": args.reps_bare, "rayup": args.reps_rayup}
    spec = BenchSpec(n, project=args.project.format(n=n), subnet=args.subnet, image=args.image)
    nodes = BenchNodes(spec)
    masters = SshMasters(spec)
    cs: Dict[str, C.Contender] = {}
    try:
        nodes.up()
        masters.open()
        install_poller(nodes)
        cs = C.make(keys, nodes, masters, logs)
        entry = results.size(n)
        entry["nodes"] = node_versions(nodes)
        entry["commands"] = C.describe_flags(cs)
        for rep in range(max(reps[k] for k in keys)):
            order = keys[rep % len(keys):] + keys[:rep % len(keys)]
            for k in order:
                if rep >= reps[k]:
                    continue
                give_up = args.give_up_rayup if k == "rayup" else args.give_up
                up = measure_up(cs[k], masters, nodes, rep, give_up, logs)
                results.add(n, "up", k, up)
                if not up.ok:
                    cs[k].cleanup()  # half up or hung: its `down` would not time a real tear-down
                    continue
                results.add(n, "down", k, measure_down(cs[k], nodes, rep, logs))
        if "sfcluster" in cs and args.reps_run > 0:
            sfc = cs["sfcluster"]
            assert isinstance(sfc, C.Sfcluster)
            up = measure_up(sfc, masters, nodes, -1, args.give_up, logs, tag="run-setup")  # set-up for the runs
            if up.ok:
                for r in measure_run(sfc, masters, nodes, args.reps_run, logs):
                    results.add(n, "run", "samples", r)
            # after drivers ran: counts for "sfcluster down leaves nothing", not for down times
            entry["run_setup_down"] = as_dict(measure_down(sfc, nodes, -1, logs, tag="run-setup"))
            results.save()
        if "sfcluster" in cs and args.cycles > 0 and n == (args.cycles_at or max(args.sizes)):
            cyc = reliability_cycles(cs["sfcluster"], nodes, args.cycles, logs, args.give_up)
            entry["cycles"] = as_dict(cyc)
            results.save()
        if args.tls_reps > 0 and n in args.tls_sizes:
            tls_section(nodes, masters, args.tls_reps, args.give_up, logs,
                        lambda mode, kind, record: results.add_tls(n, mode, kind, record))
    finally:
        for c in cs.values():
            if isinstance(c, C.RayUp):
                c.forget()
        masters.close()
        nodes.down()


def parse(argv: List[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2,4,8", help="cluster sizes N (default 2,4,8)")
    ap.add_argument("--reps-sfcluster", type=int, default=5)
    ap.add_argument("--reps-bare", type=int, default=5)
    ap.add_argument("--reps-rayup", type=int, default=3)
    ap.add_argument("--reps-run", type=int, default=5, help="sfcluster run vs plain ssh pairs per N")
    ap.add_argument("--cycles", type=int, default=20, help="sfcluster up/down reliability cycles (0: none)")
    ap.add_argument("--cycles-at", type=int, default=0, help="N for the cycles (default: the largest size)")
    ap.add_argument("--skip-rayup", action="store_true", help="leave Ray's launcher out")
    ap.add_argument("--tls-reps", type=int, default=0,
                    help="TLS cost: sfcluster up + SS-LR training per tls mode (on/off) and N (default 0: none)")
    ap.add_argument("--tls-sizes", default="", help="the N for the TLS section, among --sizes (default: all of them)")
    ap.add_argument("--give-up", type=float, default=60, help="seconds to readiness before an attempt fails")
    ap.add_argument("--give-up-rayup", type=float, default=60)
    ap.add_argument("--out", type=Path, default=BUILD / "results.json")
    ap.add_argument("--report", default="docs/BENCHMARKS.md", help="where the report goes; '' for none")
    ap.add_argument("--project", default="sfcluster-bench-{n}", help=argparse.SUPPRESS)
    ap.add_argument("--subnet", default="172.30.78.0/24", help=argparse.SUPPRESS)
    ap.add_argument("--image", default=BenchSpec(2).image, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    args.tls_sizes = [int(x) for x in args.tls_sizes.split(",") if x] or list(args.sizes)
    if not set(args.tls_sizes) <= set(args.sizes):
        ap.error(f"--tls-sizes {args.tls_sizes}: each must be one of --sizes {args.sizes}")
    return args


def main(argv: List[str]) -> int:
    args = parse(argv)
    keys = [k for k in ORDER if not (k == "rayup" and args.skip_rayup)]
    if "rayup" in keys:
        if not (C.BENCH_VENV / "bin" / "ray").exists():
            log(f"{C.BENCH_VENV}/bin/ray is missing: run `bash bench/setup.sh` (or --skip-rayup)")
            return 2
        sh(["rsync", "--version"])  # ray up needs it on the controller
    logs = args.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["contenders"] = keys
    results = Results(args.out, config)
    log(f"sizes {args.sizes}, contenders {keys}; results -> {args.out}, logs -> {logs}")
    try:
        for n in args.sizes:
            bench_size(n, args, results, keys, logs)
    except KeyboardInterrupt:
        log(f"interrupted: bench nodes removed; partial results in {args.out} (`python -m bench.report {args.out}`)")
        return 130
    finally:
        results.save()  # also on Ctrl-C/error: `python -m bench.report` can still render it
    if args.report:
        from bench.report import write_report
        write_report(args.out, Path(args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
