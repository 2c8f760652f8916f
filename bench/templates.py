"""Each model of the packaged template, its training time and AUC at N = 2 and 3 (issue 20).

On the test harness (alice, bob, carol: real sshd, Ray, SecretFlow 1.10.0b1), simulation mode,
`cpus: 4` per party (what SecureBoost needs), TLS on as a user has it. For each N: `up`, then each
model once through `sfcluster run train_lr -- --model M` on the parties' breast-cancer CSVs (PSI
first), the template's own RESULT line parsed (AUC, accuracy, seconds of the whole driver) and the
fit seconds it writes to metrics.json; then `down`. Writes build/bench/templates.json and the
Markdown table (build/bench/templates.md, or --report).

    .venv/bin/python -m bench.templates                # N = 2, 3; every model
    .venv/bin/python -m bench.templates --sizes 3 --models lr,glm

Takes ~2 min per model and N on 2 cores; nothing else heavy meanwhile (the harness shares them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "bench"
SFC = [sys.executable, "-m", "sfcluster.cli.main"]
MODELS = {"lr": [], "xgb": ["--trees", "3", "--depth", "3"], "glm": ["--epochs", "3"],
          "sgb": ["--trees", "3", "--depth", "3"]}
NAMES = {"lr": "SS-LR", "xgb": "SS-XGB", "glm": "SS-GLM", "sgb": "SecureBoost"}


def sfc(*args: str, env: Dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*SFC, *args], capture_output=True, text=True, timeout=timeout, env=env)


def one(inv: Path, model: str, env: Dict[str, str], state: Path) -> dict:
    t0 = time.monotonic()
    p = sfc("run", "-i", str(inv), "train_lr", "--", "--model", model, *MODELS[model], env=env)
    wall = time.monotonic() - t0
    out = {"model": NAMES[model], "exit_code": p.returncode, "run_seconds": round(wall, 1)}
    if p.returncode != 0 or "RESULT auc=" not in p.stdout:
        out["error"] = (p.stderr.strip().splitlines() or ["?"])[-1][:300]
        return out
    fields = dict(kv.split("=", 1) for kv in p.stdout.split("RESULT ", 1)[1].split()[:3])
    metrics = max(state.glob("*/runs/*/output/metrics.json"), key=lambda f: f.stat().st_mtime)
    m = json.loads(metrics.read_text())
    out.update(auc=float(fields["auc"]), accuracy=float(fields["accuracy"]), driver_seconds=float(fields["seconds"]),
               fit_seconds=m.get("fit_seconds"), rows_in_common=m.get("rows_in_common"))
    return out


def run(sizes: List[int], models: List[str]) -> dict:
    sys.path.insert(0, str(ROOT))
    from tests.harness import harness
    harness.up()
    state = BUILD / "templates-state"
    env = dict(os.environ, SFCLUSTER_STATE_DIR=str(state))
    results: dict = {"sizes": {}, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    names = [n.name for n in harness.PARTIES]
    for n in sizes:
        inv = harness.write_inventory(BUILD / f"templates-{n}.yaml", cluster="benchtpl", data=True, cpus=4,
                                      nodes=names[:n])
        harness.push_data(inv, names[:n])
        p = sfc("up", "-i", str(inv), env=env)
        if p.returncode != 0:
            raise RuntimeError(f"up at N = {n} failed: {p.stderr[-2000:]}")
        try:
            results["sizes"][str(n)] = [one(inv, m, env, state) for m in models]
        finally:
            sfc("down", "-i", str(inv), "--force", env=env)
        print(json.dumps(results["sizes"][str(n)], indent=1), flush=True)
    return results


def report(results: dict) -> str:
    lines = [f"## Templates: training time and AUC (harness, simulation mode, cpus 4, TLS on; {results['when']})", "",
             "| N | model | AUC | accuracy | fit s | driver s | `run` s |", "|---|---|---|---|---|---|---|"]
    for n, rows in results["sizes"].items():
        for r in rows:
            if "error" in r:
                lines.append(f"| {n} | {r['model']} | failed (exit {r['exit_code']}): {r['error']} | | | | {r['run_seconds']} |")
            else:
                lines.append(f"| {n} | {r['model']} | {r['auc']:.4f} | {r['accuracy']:.4f} | {r['fit_seconds']} | "
                             f"{r['driver_seconds']} | {r['run_seconds']} |")
    lines += ["", "fit s: the model's fit alone (metrics.json); driver s: the template from sf.init to its "
              "RESULT line (PSI, split, fit, predict); `run` s: the whole command on the controller."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="2,3")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", default=str(BUILD / "templates.json"))
    ap.add_argument("--report", default=str(BUILD / "templates.md"))
    a = ap.parse_args()
    BUILD.mkdir(parents=True, exist_ok=True)
    results = run([int(s) for s in a.sizes.split(",")], [m for m in a.models.split(",") if m])
    Path(a.out).write_text(json.dumps(results, indent=2))
    Path(a.report).write_text(report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
