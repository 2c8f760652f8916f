"""Write docs/BENCHMARKS.md (and the plot, docs/bench-time-to-ready.png) from build/bench/results.json.

    python -m bench.report [results.json] [docs/BENCHMARKS.md]

Medians and min-max over the successful attempts; failures are counted, never dropped. Runs with
the project's interpreter; the plot is drawn by bench/plot.py in the bench venv (matplotlib).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from bench.contenders import BENCH_VENV
from bench.nodes import BUILD, ROOT

REQUIRED_REPS = {"sfcluster": 5, "bare": 5, "rayup": 3}
REQUIRED_SIZES = [2, 4, 8]
REQUIRED_CYCLES = 20
NAMES = {"sfcluster": "a. sfcluster up", "rayup": "b. ray up", "bare": "c. bare lower bound"}
DOWN_NAMES = {"sfcluster": "sfcluster down", "rayup": "ray down", "bare": "parallel `ray stop --force`"}
PLOT = "bench-time-to-ready.png"
TLS_TRAIN_TARGET = 1.25  # the issue: SS-LR training time with tls: on <= 1.25x tls: off


def med(xs: List[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def spread(xs: List[float]) -> str:
    if not xs:
        return "–"
    return f"{fmt(med(xs))} ({fmt(min(xs))}–{fmt(max(xs))})"


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def verdict(ok: Optional[bool]) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


class Summary:
    """Numbers per N and contender, derived once from the raw samples."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.sizes = sorted(int(n) for n in data["sizes"])

    def ups(self, n: int, k: str) -> List[dict]:
        return self.data["sizes"][str(n)]["up"].get(k, [])

    def ready(self, n: int, k: str) -> List[float]:
        return [s["ready_s"] for s in self.ups(n, k) if s["ok"]]

    def command(self, n: int, k: str) -> List[float]:
        return [s["command_s"] for s in self.ups(n, k) if s["ok"] and s["command_s"] is not None]

    def lag(self, n: int, k: str) -> List[float]:
        """Per attempt: the command returned this long after the poller saw the last party join."""
        return [round(s["command_s"] - s["ready_s"], 3) for s in self.ups(n, k)
                if s["ok"] and s["command_s"] is not None and s["ready_s"] is not None]

    def failures(self, n: int, k: str) -> str:
        ups = self.ups(n, k)
        return f"{sum(1 for s in ups if not s['ok'])}/{len(ups)}" if ups else "–"

    def downs(self, n: int, k: str) -> List[dict]:
        return self.data["sizes"][str(n)]["down"].get(k, [])

    def down_times(self, n: int, k: str) -> List[float]:
        return [s["down_s"] for s in self.downs(n, k) if s["ok"] and s["down_s"] is not None]

    def runs(self, n: int, how: str) -> List[float]:
        return [s["seconds"] for s in self.data["sizes"][str(n)].get("run", {}).get("samples", [])
                if s["how"] == how and s["ok"]]

    def run_failures(self, n: int) -> int:
        return sum(1 for s in self.data["sizes"][str(n)].get("run", {}).get("samples", []) if not s["ok"])

    # -- the TLS section (results "tls" -> N -> "on"/"off" -> up/train/down/not_purged) --------
    def tls_sizes(self) -> List[int]:
        return sorted(int(n) for n in self.data.get("tls", {}))

    def tls(self, n: int, mode: str, kind: str) -> List[dict]:
        return self.data.get("tls", {}).get(str(n), {}).get(mode, {}).get(kind, [])

    def tls_values(self, n: int, mode: str, kind: str, key: str) -> List[float]:
        """`key` of the successful samples of one kind (up: ready_s/command_s, train: train_s/wall_s/...)."""
        return [x[key] for x in self.tls(n, mode, kind) if x["ok"] and x.get(key) is not None]

    def tls_failures(self, n: int, mode: str, kind: str) -> str:
        xs = self.tls(n, mode, kind)
        return f"{sum(1 for x in xs if not x['ok'])}/{len(xs)}"

    def tls_train_ratio(self, n: int) -> Optional[float]:
        return ratio(med(self.tls_values(n, "on", "train", "train_s")), med(self.tls_values(n, "off", "train", "train_s")))

    def contenders(self) -> List[str]:
        return [k for k in ("sfcluster", "rayup", "bare") if k in self.data["config"]["contenders"]]

    def is_partial(self) -> List[str]:
        why = []
        cfg = self.data["config"]
        if self.sizes != REQUIRED_SIZES:
            why.append(f"sizes {self.sizes} (the issue asks for {REQUIRED_SIZES})")
        for k, need in REQUIRED_REPS.items():
            have = cfg.get(f"reps_{k}", 0)
            if k in self.contenders() and have < need:
                why.append(f"{have} repetition(s) of {k} (>= {need} required)")
        if "rayup" not in self.contenders():
            why.append("ray up skipped")
        if cfg.get("cycles", 0) < REQUIRED_CYCLES:
            why.append(f"{cfg.get('cycles', 0)} reliability cycles ({REQUIRED_CYCLES} required)")
        return why


def machine_section(d: dict) -> List[str]:
    m = d["machine"]
    return ["## Machine", "",
            "Everything (controller, every node, every contender) shares one machine:", "",
            "| | |", "|---|---|",
            f"| CPU | {m['cores']} cores, {m['cpu']} |",
            f"| memory | {m['memory_gib']} GiB |",
            f"| kernel | {m['kernel']} |",
            f"| Docker | engine {m['docker']}, docker-compose {m['docker_compose']} |",
            f"| controller | Python {m['controller_python']}, {m['controller_ray']} (for `ray up`) |",
            "", "```", m.get("free", ""), "```", ""]


def method_section(s: Summary) -> List[str]:
    d = s.data
    first = d["sizes"][str(s.sizes[0])] if s.sizes else {}
    nv = first.get("nodes", {})
    out = ["## How it was measured", "",
           f"- **Nodes**: N containers from `{nv.get('image', '?')}` (bench/Dockerfile: the harness node image plus "
           f"rsync, and filelock pinned to {nv.get('filelock', '?')} in `/opt/sf`), one compose file per N "
           "(build/bench/compose-N.yml, fixed addresses 172.30.78.11..), all root with sshd on 22 (`ray up` takes one "
           "SSH user and port for all nodes), iptables on every node. "
           f"Ray {nv.get('ray', '?')} and Python {nv.get('python', '?')} on the nodes; parties p0..p{{N-1}}, head p0.",
           "- **Readiness**, identical for every contender: before the clock starts, one persistent SSH connection "
           "to the head runs a small Python that imports Ray's GCS client, says READY-TO-POLL, then reads the GCS "
           "node table every 0.2 s and reports each change of the number of alive nodes. The clock starts on the "
           "controller after READY-TO-POLL, right before the contender is launched, and stops when N nodes are alive. "
           "Alive nodes are counted for every contender alike (`sfcluster up` itself also waits for every party's "
           "resource: that is in its command time). The head prints its own monotonic time too; containers share "
           "the kernel's clock, and the two agree within a few ms.",
           "- **Start commands**: the same `ray start` flags for all (sfcluster's argv builder: pinned ports, "
           "dashboard off, usage stats off, `--num-cpus=1`, one resource named after the party):"]
    for k, v in first.get("commands", {}).items():
        out += [f"  - {k}, head: `{v['head']}`", f"    worker: `{v['worker']}`"]
    out += [
        "- **a. sfcluster**: `sfcluster up -i inventory` with its preflight checks on and `firewall: open` "
        "(rules scoped to the peers), the CLI started as a user starts it; `sfcluster down`.",
        "- **b. ray up**: `ray up -y --no-config-cache` (local provider, head_ip/worker_ips, ssh_user root) with "
        "the same Ray; `ray down -y`. The start commands are the bare minimum (Ray's example config also runs "
        "`ray stop` first; the nodes are clean, so that is left out in Ray's favour). `ray up` returns before any "
        "worker has joined: the head's autoscaler starts the workers over SSH afterwards, so its time-to-ready is "
        "the poller's, not the command's. **`ray up` disables host-key checking** (StrictHostKeyChecking=no, "
        "UserKnownHostsFile=/dev/null) and **copies the private key to the head** (~/ray_bootstrap_key.pem): "
        "Ray's behaviour; it only ever ran against the bench containers. filelock < 3.11 is pinned on the nodes and "
        "on the controller: with filelock >= 3.11 the head's monitor deadlocks and the cluster hangs with only the "
        "head (4 of 10 attempts in the issue's measurement; fixed in a later Ray, ray PR #49909).",
        "- **c. bare lower bound**: from the bench process itself (no interpreter start), over OpenSSH "
        "ControlMaster connections opened in advance (known_hosts from the containers' host keys, "
        "StrictHostKeyChecking yes): `ray start --head`, then every worker in parallel; no checks, no firewall. "
        "Down: `ray stop --force` on every node in parallel.",
        "- Every attempt starts from nodes with no Ray process (checked; anything a contender left is killed and "
        "recorded). The contender order rotates each repetition. A bring-up fails when N nodes are not alive "
        f"within {d['config'].get('give_up')} s ({d['config'].get('give_up_rayup')} s for ray up) or the command "
        "fails; failures are counted, and medians/min–max are over the successful attempts.",
        "- After each `down`, every node is checked for Ray/SPU processes (raylet, gcs_server, `ray::*`, Ray's "
        "Python agents) and for iptables rules other than the node's own.",
        "- `sfcluster run`: a trivial driver (`ray.init(address)`, print, exit; bench/driver_trivial.py) under "
        "`sfcluster run` against `ssh root@head /opt/sf/bin/python script.py` (script copied beforehand, fresh "
        "SSH connection each time, as `sfcluster run` makes), alternating, on one sfcluster-started cluster.",
        ""]
    return out


def ready_section(s: Summary) -> List[str]:
    ks = s.contenders()
    out = ["## 1. Time to a ready cluster (seconds)", "",
           "Median (min–max) from launch to N ready nodes in the head's GCS (alive and reporting their "
           "resources, the party resource included; before 2026-12-01: alive only); failed/attempts.", "",
           "| N | " + " | ".join(NAMES[k] for k in ks) + " | a/b | a/c |",
           "|---|" + "---|" * len(ks) + "---|---|"]
    for n in s.sizes:
        cells = [f"{spread(s.ready(n, k))}; {s.failures(n, k)} failed" for k in ks]
        a, b, c = (med(s.ready(n, k)) for k in ("sfcluster", "rayup", "bare"))
        out.append(f"| {n} | " + " | ".join(cells) + f" | {fmt(ratio(a, b))} | {fmt(ratio(a, c))} |")
    out += ["", "When the command itself returned (median, min–max): `sfcluster up` returns after every party's "
            "resource is visible; `ray up` returns before the workers join.", "",
            "| N | " + " | ".join(NAMES[k] for k in ks if k != "bare") + " |",
            "|---|" + "---|" * len([k for k in ks if k != "bare"])]
    for n in s.sizes:
        out.append(f"| {n} | " + " | ".join(spread(s.command(n, k)) for k in ks if k != "bare") + " |")
    out += ["", "Lag of `sfcluster up` (command returned − last party joined, same attempts; median, min–max). "
            "Since issue #10, `up` no longer waits for the workers' `ray start` CLIs to exit once every party "
            "has joined (their output goes to a file on the node, not the SSH channel). The poller samples every "
            "0.2 s, so a lag is known to ±0.2 s.", "", "| N | lag |", "|---|---|"]
    for n in s.sizes:
        out.append(f"| {n} | {spread(s.lag(n, 'sfcluster'))} |")
    out += ["", f"![time to ready against N]({PLOT})", ""]
    return out


def down_section(s: Summary) -> List[str]:
    out = ["## 2. Time of `down` (seconds)", "",
           "Median (min–max); failed/attempts; attempts that left Ray processes behind, and on how many nodes.", "",
           "| N | contender | time | failed | left Ray processes | iptables rules left |", "|---|---|---|---|---|---|"]
    for n in s.sizes:
        for k in s.contenders():
            ds = s.downs(n, k)
            if not ds:
                continue
            failed = sum(1 for d in ds if not d["ok"])
            dirty = [d for d in ds if d["leftovers"]]
            left = f"{len(dirty)}/{len(ds)}" + (f" (up to {max(d['leftover_nodes'] for d in dirty)} of {n} nodes)" if dirty else "")
            fw = sum(1 for d in ds if d["firewall_left"])
            out.append(f"| {n} | {DOWN_NAMES[k]} | {spread(s.down_times(n, k))} | {failed}/{len(ds)} | {left} | {fw}/{len(ds)} |")
    out += [""]
    examples = [(n, k, d["leftovers"][:4]) for n in s.sizes for k in s.contenders() for d in s.downs(n, k)[:1] if d["leftovers"]]
    if examples:
        out += ["What was left, first attempt per N and contender (node:pid command):", ""]
        for n, k, left in examples:
            out.append(f"- N={n}, {DOWN_NAMES[k]}: " + "; ".join(f"`{x}`" for x in left))
        out.append("")
    return out


def run_section(s: Summary) -> List[str]:
    out = ["## 3. `sfcluster run` overhead (seconds)", "",
           "| N | sfcluster run | ssh head python script.py | overhead (difference of medians) | failed |",
           "|---|---|---|---|---|"]
    for n in s.sizes:
        a, b = s.runs(n, "sfcluster"), s.runs(n, "ssh")
        if not a and not b:
            continue
        ov = med(a) - med(b) if a and b else None
        out.append(f"| {n} | {spread(a)} | {spread(b)} | {fmt(ov)} | {s.run_failures(n)} |")
    return out + [""]


def tls_section(s: Summary) -> List[str]:
    out = ["## 4. TLS cost: `tls: on` against `tls: off` (seconds)", "",
           "Per N, on the same bench nodes, the two modes interleaved (the order alternates each repetition); "
           "per mode and repetition: `sfcluster up` (time to ready: the poller of section 1, which under TLS asks the "
           "GCS with the head's certificate), one trivial `sfcluster run` (the first run after `up` waits for the "
           "cluster to settle; kept out of the training figures), the SS-LR demo `sfcluster run templates/train_lr.py` "
           "(training: the `seconds=` the template prints, from `sf.init` to the result inside the driver; wall: the "
           "whole command on the controller), then `sfcluster down --purge`. So every `up` starts without "
           "certificates: with TLS it creates the cluster's CA and issues every node's certificate, the cost of a "
           "first `up` (a later `up` reuses them). Median (min–max) over the successful attempts; on/off is the "
           "ratio of the medians.", ""]
    rows = [("`up`: time to ready", "up", "ready_s"), ("`up`: command returned", "up", "command_s"),
            ("SS-LR training (driver's seconds)", "train", "train_s"), ("SS-LR `sfcluster run` wall time", "train", "wall_s"),
            ("first `sfcluster run` after `up` (trivial driver)", "train", "warmup_s"),
            ("`down --purge`", "down", "down_s")]
    for n in s.tls_sizes():
        out += [f"### N = {n}", "", "| | tls: off | tls: on | on/off |", "|---|---|---|---|"]
        for label, kind, key in rows:
            off, on = s.tls_values(n, "off", kind, key), s.tls_values(n, "on", kind, key)
            out.append(f"| {label} | {spread(off)} | {spread(on)} | {fmt(ratio(med(on), med(off)))} |")
        auc = {m: med(s.tls_values(n, m, "train", "auc")) for m in ("off", "on")}
        out.append(f"| SS-LR AUC | {fmt(auc['off'], 4)} | {fmt(auc['on'], 4)} | |")
        out.append("| failed: up, training, down | " + " | ".join(
            ", ".join(s.tls_failures(n, m, k) for k in ("up", "train", "down")) for m in ("off", "on")) + " | |")
        out.append("")
        errors = sorted({f"{m}: {x['error']}" for m in ("off", "on") for k in ("up", "train", "down")
                         for x in s.tls(n, m, k) if not x["ok"]})
        if errors:
            out += ["Failures: " + "; ".join(errors)[:600], ""]
        left = [f"{m} #{x['rep']}: {', '.join(x['where'])}" for m in ("off", "on") for x in s.tls(n, m, "not_purged")]
        if left:
            out += ["Certificates left after `down --purge` (recorded, then removed by the bench): " + "; ".join(left), ""]
    return out


def reliability_section(s: Summary) -> List[str]:
    out = ["## Reliability", "", "| contender | where | failed bring-ups |", "|---|---|---|"]
    for n in s.sizes:
        cyc = s.data["sizes"][str(n)].get("cycles")
        if cyc:
            out.append(f"| sfcluster | {cyc['cycles']} consecutive up/down cycles at N={n} | {cyc['up_failures']}/{cyc['cycles']} "
                       f"(down failures {cyc['down_failures']}, cycles leaving something behind {cyc['leftover_cycles']}; "
                       f"up {spread(cyc['up_s'])} s, down {spread(cyc['down_s'])} s) |")
    for k in s.contenders():
        tot = [(sum(1 for u in s.ups(n, k) if not u["ok"]), len(s.ups(n, k))) for n in s.sizes]
        f, a = sum(x for x, _ in tot), sum(y for _, y in tot)
        errs = sorted({u["error"] for n in s.sizes for u in s.ups(n, k) if not u["ok"]})
        out.append(f"| {k} | its timed repetitions, all N | {f}/{a}" + (f": {'; '.join(errs)[:300]}" if errs else "") + " |")
    return out + [""]


def targets_section(s: Summary, partial: bool = False) -> List[str]:
    rows = []
    ac = [ratio(med(s.ready(n, "sfcluster")), med(s.ready(n, "bare"))) for n in s.sizes]
    ab = [ratio(med(s.ready(n, "sfcluster")), med(s.ready(n, "rayup"))) for n in s.sizes]
    ok_ac = None if any(x is None for x in ac) or not ac else all(x <= 1.25 for x in ac)
    ok_ab = None if any(x is None for x in ab) or not ab else all(x <= 0.6 for x in ab)
    rows.append(("a/c <= 1.25 at every N", ", ".join(f"N={n}: {fmt(x)}" for n, x in zip(s.sizes, ac)), ok_ac))
    rows.append(("a/b <= 0.6 at every N", ", ".join(f"N={n}: {fmt(x)}" for n, x in zip(s.sizes, ab)), ok_ab))
    lags = [(n, max(s.lag(n, "sfcluster"), default=None)) for n in s.sizes]
    rows.append(("`sfcluster up` returns <= 0.5 s after the last party joined (worst attempt)",
                 ", ".join(f"N={n}: {fmt(x)} s" for n, x in lags),
                 None if any(x is None for _, x in lags) or not lags else all(x <= 0.5 for _, x in lags)))
    cyc = [s.data["sizes"][str(n)].get("cycles") for n in s.sizes]
    cyc = [c for c in cyc if c]
    rows.append(("0 failed sfcluster bring-ups in 20 consecutive cycles",
                 "; ".join(f"{c['up_failures']}/{c['cycles']} at N={c['n']}" for c in cyc) or "not run",
                 None if not cyc or any(c["cycles"] < REQUIRED_CYCLES for c in cyc) and all(c["up_failures"] == 0 for c in cyc)
                 else all(c["up_failures"] == 0 for c in cyc)))  # too few cycles: no verdict unless one failed
    left = [d for n in s.sizes for d in s.downs(n, "sfcluster")]
    left += [s.data["sizes"][str(n)]["run_setup_down"] for n in s.sizes if s.data["sizes"][str(n)].get("run_setup_down")]
    dirty = sum(1 for d in left if d["leftovers"] or d["firewall_left"]) + sum(c["leftover_cycles"] for c in cyc)
    total = len(left) + sum(c["cycles"] - c["up_failures"] for c in cyc)
    rows.append(("`sfcluster down` leaves no Ray/SPU process (nor firewall rule)",
                 f"{dirty}/{total} downs left something (timed downs, the one after the runs, the cycles)",
                 dirty == 0 if total else None))
    dr = [ratio(med(s.down_times(n, "sfcluster")), med(s.down_times(n, "rayup"))) for n in s.sizes]
    rows.append(("`sfcluster down` <= 0.5x `ray down`", ", ".join(f"N={n}: {fmt(x)}" for n, x in zip(s.sizes, dr)),
                 None if any(x is None for x in dr) or not dr else all(x <= 0.5 for x in dr)))
    ov = [(n, med(s.runs(n, "sfcluster")), med(s.runs(n, "ssh"))) for n in s.sizes]
    ov = [(n, a - b) for n, a, b in ov if a is not None and b is not None]
    rows.append(("run overhead <= 1 s over plain ssh", ", ".join(f"N={n}: {x:.2f} s" for n, x in ov) or "–",
                 all(x <= 1.0 for _, x in ov) if ov else None))
    if s.tls_sizes():
        tr = [(n, s.tls_train_ratio(n)) for n in s.tls_sizes()]
        rows.append((f"SS-LR training time with TLS <= {TLS_TRAIN_TARGET}x without (demo)",
                     ", ".join(f"N={n}: {fmt(x)}" for n, x in tr),
                     None if any(x is None for _, x in tr) else all(x <= TLS_TRAIN_TARGET for _, x in tr)))
    head = "verdict on this partial run only" if partial else "verdict"
    out = ["## Targets", "", f"| target | measured | {head} |", "|---|---|---|"]
    out += [f"| {t} | {m} | {verdict(v)} |" for t, m, v in rows]
    return out + [""]


def render(data: dict, notes: str = "") -> str:
    s = Summary(data)
    partial = s.is_partial()
    out = ["# Benchmarks: `sfcluster up/run/down` against `ray up` and the bare lower bound", "",
           f"Generated by `python -m bench.report` from {data.get('results_file', 'build/bench/results.json')} (run {data['started']} – "
           f"{data.get('finished', '?')}). Reproduce with `make bench` (bench/README.md).", ""]
    if partial:
        out += ["> **Not the full benchmark**: " + "; ".join(partial) + ". These numbers validate the bench and are "
                "not the result the issue asks for; `make bench` produces that.", ""]
    out += targets_section(s, bool(partial)) + ready_section(s) + down_section(s) + run_section(s)
    if s.tls_sizes():
        out += tls_section(s)
    out += reliability_section(s)
    if notes:
        out += ["## Findings", "", notes.strip(), ""]
    out += method_section(s) + machine_section(data)
    return "\n".join(out)


def write_report(results: Path, report: Path) -> None:
    data = json.loads(results.read_text())
    try:
        data["results_file"] = str(results.resolve().relative_to(ROOT))
    except ValueError:
        data["results_file"] = str(results)
    notes_file = ROOT / "bench" / "FINDINGS.md"
    notes = notes_file.read_text() if notes_file.exists() else ""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(data, notes))
    py = BENCH_VENV / "bin" / "python"
    png = report.parent / PLOT
    if py.exists():
        p = subprocess.run([str(py), str(ROOT / "bench" / "plot.py"), str(results), str(png)], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"bench: plot failed: {p.stderr[-1000:]}", file=sys.stderr)
    else:
        print(f"bench: {py} missing (bench/setup.sh): no plot", file=sys.stderr)
    print(f"bench: wrote {report} and {png}", file=sys.stderr)


def main(argv: List[str]) -> int:
    results = Path(argv[0]) if argv else BUILD / "results.json"
    report = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "BENCHMARKS.md"
    write_report(results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
