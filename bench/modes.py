"""Production mode against simulation mode, side by side on the test harness (issue 18's benchmark):

    .venv/bin/python -m bench.modes --sizes 2,3 --reps 2      # the harness must be up: make harness

For each N (the first N harness parties) and repetition, the configurations in turn (the order
rotates each repetition): simulation with TLS, production with TLS, production without TLS. Each
time: `sfcluster up` (the command's wall time: in simulation mode it returns once every party has
joined Ray; in production mode once the preflight, the certificates and the firewall are done),
`sfcluster run templates/train_lr.py` on the parties' CSVs (the command's wall time, and the
training seconds the template prints, `RESULT ... seconds=S`, from sf.init to the result inside
the driver; in production mode the slowest party's), then `sfcluster down --purge` (every `up`
starts without certificates). Results: build/bench/modes.json; the section "Production against
simulation mode" of docs/BENCHMARKS.md is replaced (between its markers) with medians and ratios.
Ratios, never absolute targets: the numbers are only comparable within one run of this script.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.harness import harness  # noqa: E402

STATE = ROOT / "build" / "bench-modes-state"
OUT = ROOT / "build" / "bench" / "modes.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- modes:begin -->", "<!-- modes:end -->"
RESULT = re.compile(r"RESULT auc=([0-9.]+) accuracy=([0-9.]+) seconds=([0-9.]+)")
CONFIGS = (("simulation", "on"), ("production", "on"), ("production", "off"))


def sfc(*args: str, timeout: float = 900) -> "tuple[subprocess.CompletedProcess, float]":
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "sfcluster.cli.main", *args], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, SFCLUSTER_STATE_DIR=str(STATE)))
    return p, round(time.monotonic() - t0, 2)


def one(n: int, mode: str, tls: str, rep: int, work: Path) -> Dict[str, object]:
    names = [p.name for p in harness.PARTIES][:n]
    inv = work / f"n{n}-{mode}-tls{tls}.yaml"
    top = f"tls: {tls}" + ("\nmode: production" if mode == "production" else "")
    harness.write_inventory(inv, cluster=f"bm{mode[:3]}{tls}{n}", firewall="open", nodes=names, data=True,
                            extra_top=top)
    harness.push_data(inv, names)
    rec: Dict[str, object] = {"n": n, "mode": mode, "tls": tls, "rep": rep}
    up, rec["up_s"] = sfc("up", "-i", str(inv))
    if up.returncode != 0:
        rec["error"] = "up: " + (up.stderr or up.stdout)[-500:]
    else:
        run, rec["run_s"] = sfc("run", "-i", str(inv), str(ROOT / "templates" / "train_lr.py"))
        found = RESULT.findall(run.stdout)
        if run.returncode != 0 or not found:
            rec["error"] = f"run exited {run.returncode}: " + (run.stderr or run.stdout)[-500:]
        else:
            rec["train_s"] = max(float(s) for _, _, s in found)   # the slowest party's
            rec["auc"] = min(float(a) for a, _, _ in found)
    down, rec["down_s"] = sfc("down", "-i", str(inv), "--force", "--purge")
    print(f"N={n} {mode} tls {tls} #{rep}: " + ", ".join(f"{k} {v}" for k, v in rec.items()
                                                          if k.endswith("_s") or k in ("auc", "error")), flush=True)
    return rec


def median(xs: List[float]) -> float:
    return round(statistics.median(xs), 2) if xs else float("nan")


def render(samples: List[Dict[str, object]], sizes: List[int], reps: int) -> str:
    rows = ["| N | configuration | `up` (s) | `run` train_lr (s) | training inside the drivers (s) | AUC | failed |",
            "|---|---|---|---|---|---|---|"]
    med: Dict[tuple, Dict[str, float]] = {}
    for n in sizes:
        for mode, tls in CONFIGS:
            ok = [s for s in samples if s["n"] == n and s["mode"] == mode and s["tls"] == tls and "error" not in s]
            bad = [s for s in samples if s["n"] == n and s["mode"] == mode and s["tls"] == tls and "error" in s]
            m = {k: median([float(s[k]) for s in ok]) for k in ("up_s", "run_s", "train_s")}
            med[(n, mode, tls)] = m
            auc = f"{min(float(s['auc']) for s in ok):.4f}" if ok else "-"
            rows.append(f"| {n} | {mode}, tls {tls} | {m['up_s']} | {m['run_s']} | {m['train_s']} | {auc} | {len(bad)} |")
    ratios = ["", "| N | production / simulation (tls on): `up` | `run` | training | production tls on / off: `run` | training |",
              "|---|---|---|---|---|---|"]
    for n in sizes:
        s, p, q = med[(n, "simulation", "on")], med[(n, "production", "on")], med[(n, "production", "off")]

        def r(a: float, b: float) -> str:
            return f"{a / b:.2f}x" if a == a and b == b and b else "-"
        ratios.append(f"| {n} | {r(p['up_s'], s['up_s'])} | {r(p['run_s'], s['run_s'])} | {r(p['train_s'], s['train_s'])} "
                      f"| {r(p['run_s'], q['run_s'])} | {r(p['train_s'], q['train_s'])} |")
    return "\n".join([
        BEGIN, "## 5. Production against simulation mode (seconds, medians)", "",
        f"`python -m bench.modes --sizes {','.join(map(str, sizes))} --reps {reps}` on the test harness (the first N of "
        "alice, bob, carol; 2 cores for everything), secretflow-lite 1.10.0b1, `templates/train_lr.py` on the "
        "parties' CSVs (PSI, then SS-LR, 5 epochs). `up`: the command's wall time (simulation: until every party "
        "joined Ray; production: preflight, certificates and firewall only, no Ray). `run`: the command's wall "
        "time from the controller. Training: the template's own seconds, from sf.init to the result (production: "
        "the slowest party's driver). Every `up` starts without certificates (`down --purge`).", "",
        *rows, *ratios, "", END])


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench.modes", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2,3")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    work = ROOT / "build" / "bench-modes"
    work.mkdir(parents=True, exist_ok=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    samples: List[Dict[str, object]] = []
    for n in sizes:
        for rep in range(args.reps):
            order = CONFIGS[rep % len(CONFIGS):] + CONFIGS[:rep % len(CONFIGS)]
            for mode, tls in order:
                samples.append(one(n, mode, tls, rep, work))
                OUT.write_text(json.dumps(samples, indent=1))
    section = render(samples, sizes, args.reps)
    text = DOC.read_text()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.replace("\n## Reliability", "\n" + section + "\n\n## Reliability", 1)
    DOC.write_text(text)
    print(section)
    return 0 if all("error" not in s for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
