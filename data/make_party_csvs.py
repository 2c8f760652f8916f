"""Make the demo's per-party CSVs from scikit-learn's bundled breast cancer dataset (569 rows,
30 features, label 1 = benign), split VERTICALLY: each party holds an `id` column and its own
features; the label is at the head's party (alice). Rows are in a different order at each party and
each party lacks some ids, so the parties must align by PSI before training (templates/train_lr.py).

The controller has no scikit-learn; run this where it is (any harness node has it):
    docker cp data/make_party_csvs.py sfcluster-test-alice:/tmp/ && \
    docker exec sfcluster-test-alice /opt/sf/bin/python /tmp/make_party_csvs.py /tmp/out
then copy /tmp/out/*.csv to data/breast_cancer/. Deterministic: the same files every time.
"""
import csv
import os
import sys

import numpy as np
from sklearn.datasets import load_breast_cancer

SEED = 20241201
# party -> which of the 30 features (sklearn's order: 10 "mean", 10 "error", 10 "worst")
SPLIT = {"alice": range(0, 10), "bob": range(10, 20), "carol": range(20, 30)}
LABEL_AT = "alice"
MISSING = 0.04   # share of ids each party lacks (different ids at each party)


def main(out: str) -> None:
    ds = load_breast_cancer()
    x, y = ds.data, ds.target
    names = [n.replace(" ", "_") for n in ds.feature_names]
    ids = [f"p{i:04d}" for i in range(len(y))]
    rng = np.random.default_rng(SEED)
    os.makedirs(out, exist_ok=True)
    for party, cols in SPLIT.items():
        keep = rng.random(len(ids)) >= MISSING
        order = rng.permutation(np.flatnonzero(keep))
        header = ["id"] + [names[c] for c in cols] + (["target"] if party == LABEL_AT else [])
        with open(os.path.join(out, f"{party}.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i in order:
                row = [ids[i]] + [f"{x[i, c]:.6g}" for c in cols] + ([int(y[i])] if party == LABEL_AT else [])
                w.writerow(row)
        print(f"{party}: {len(order)} rows, {len(header) - 1} columns besides id")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out")
