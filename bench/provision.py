"""Cold and no-op `sfcluster provision` on the test harness (issue #10), as a markdown table.

    python -m bench.provision [--noop-reps 5] [--out build/bench/provision.md]

Takes the harness as it is (start it with `make harness`), moves every party's /opt/sf away (the
same image, no venv), times one cold provision (the wheelhouse pushed to each node, venvs built in
parallel), then `--noop-reps` no-op ones, and puts the image's venv back at the end, also on
Ctrl-C. The wheelhouse is tests/harness/build-wheelhouse.sh's (downloaded once per machine)."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import harness as H

ROOT = Path(__file__).resolve().parents[1]
PARTIES = ("alice", "bob", "carol")


def timed(inv: Path) -> tuple:
    start = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "sfcluster.cli.main", "provision", "-i", str(inv), "--json"],
                       capture_output=True, text=True, timeout=3600, env=dict(os.environ))
    took = time.monotonic() - start
    if p.returncode != 0:
        raise SystemExit(f"provision failed ({p.returncode}): {p.stdout[-2000:]}{p.stderr[-2000:]}")
    return took, json.loads(p.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--noop-reps", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "provision.md"))
    args = ap.parse_args()
    t0 = time.monotonic()
    wheelhouse = H.ensure_wheelhouse()
    fetch = time.monotonic() - t0
    size = sum(f.stat().st_size for f in wheelhouse.iterdir() if f.is_file())
    base = H.base_python("alice")
    inv = ROOT / "build" / "bench" / "provision-inv.yaml"
    inv.parent.mkdir(parents=True, exist_ok=True)
    H.write_inventory(inv, cluster="benchprov", firewall="check", extra_top=(
        f"provision:\n  package: secretflow-lite\n  version: 1.10.0b1\n  ray_version: 2.9.3\n"
        f"  base_python: {base}\n  wheelhouse: {wheelhouse}\n"))
    for n in PARTIES:
        H.docker_exec(n, "mv /opt/sf /opt/sf.image")
    try:
        cold, got = timed(inv)
        per_node = {n: o["seconds"] for n, o in got["nodes"].items()}
        noops = [timed(inv)[0] for _ in range(args.noop_reps)]
    finally:
        for n in PARTIES:
            H.docker_exec(n, "rm -rf /opt/sf /opt/sf.sfc-old && mv /opt/sf.image /opt/sf", check=False)
    rows = [
        "| what | seconds |", "|---|---|",
        f"| wheelhouse ({len(list(wheelhouse.glob('*.whl')))} wheels, {size / 2**20:.0f} MiB) ready on the controller "
        f"(cached: {fetch:.1f} s this time) | {fetch:.1f} |",
        f"| cold provision, {len(PARTIES)} nodes in parallel (wheels pushed + venv built + imports verified) | {cold:.1f} |",
        *(f"| - of which {n} | {s:.1f} |" for n, s in sorted(per_node.items())),
        f"| no-op provision, median of {len(noops)} (min-max) | {statistics.median(noops):.1f} "
        f"({min(noops):.1f}-{max(noops):.1f}) |",
    ]
    text = "\n".join(rows) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
