"""Plot time-to-ready against N for a (sfcluster), b (ray up) and c (bare): medians with min-max bars.

    build/bench/venv/bin/python bench/plot.py build/bench/results.json docs/bench-time-to-ready.png

Runs in the bench venv (matplotlib is a bench tool, not an sfcluster dependency); stand-alone.
"""
import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"sfcluster": ("a. sfcluster up", "tab:blue", "o"),
         "rayup": ("b. ray up (local provider)", "tab:red", "s"),
         "bare": ("c. bare lower bound", "tab:gray", "^")}


def main(results: str, png: str) -> None:
    data = json.load(open(results))
    sizes = sorted(int(n) for n in data["sizes"])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for key, (label, color, marker) in STYLE.items():
        xs, ys, lo, hi, fails = [], [], [], [], []
        for n in sizes:
            ups = data["sizes"][str(n)]["up"].get(key, [])
            ok = [u["ready_s"] for u in ups if u["ok"]]
            if ups and not ok:
                fails.append(n)
            if not ok:
                continue
            m = statistics.median(ok)
            xs.append(n)
            ys.append(m)
            lo.append(m - min(ok))
            hi.append(max(ok) - m)
        if xs:
            failed = sum(1 for n in sizes for u in data["sizes"][str(n)]["up"].get(key, []) if not u["ok"])
            total = sum(len(data["sizes"][str(n)]["up"].get(key, [])) for n in sizes)
            ax.errorbar(xs, ys, yerr=[lo, hi], label=f"{label} ({failed}/{total} failed)", color=color,
                        marker=marker, capsize=4, linewidth=1.5)
    ax.set_xlabel("nodes N")
    ax.set_ylabel("seconds to N alive nodes in the GCS")
    ax.set_xticks(sizes)
    ax.set_ylim(bottom=0)
    m = data.get("machine", {})
    cfg = data.get("config", {})
    partial = (sizes != [2, 4, 8] or cfg.get("reps_sfcluster", 0) < 5 or cfg.get("reps_bare", 0) < 5
               or cfg.get("reps_rayup", 0) < 3 or cfg.get("skip_rayup"))
    title = f"Time to a ready cluster (median, min-max); {m.get('cores', '?')} cores, all nodes on one machine"
    if partial:
        title += "\nVALIDATION RUN: too few sizes/repetitions, not the benchmark result"
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(png)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
