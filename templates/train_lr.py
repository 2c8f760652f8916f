"""SS-LR (SS-SGD logistic regression on the SPU, with the inventory's protocol and field) on
vertically partitioned data.

Run it with sfcluster, never by hand:   sfcluster run -i inventory.yaml templates/train_lr.py
Each party's features are loaded ON that party's node (inventory `data: {features: path}` as .npy;
without paths, a deterministic synthetic set is generated on each node). The label is at the head.
"""
import sys
import time

from sfcluster import runtime

runtime.guard()          # before sf.init: exactly one driver, on the head, under the lock
cfg = runtime.load()

import numpy as np  # noqa: E402
import secretflow as sf  # noqa: E402
from secretflow.data import FedNdarray, PartitionWay  # noqa: E402
from secretflow.ml.linear.ss_sgd import SSRegression  # noqa: E402

N_ROWS, N_FEATURES, SEED = 1000, 10, 20240601
parties = list(cfg["parties"])
head = cfg["head"]


def split_columns(n_features, names):
    """Contiguous column blocks, one per party, as even as possible."""
    bounds = np.linspace(0, n_features, len(names) + 1).astype(int)
    return {p: (int(bounds[i]), int(bounds[i + 1])) for i, p in enumerate(names)}


COLS = split_columns(N_FEATURES, parties)


def load_features(party, path, cols):
    """Runs on the party's own node (a PYU function)."""
    import socket
    if path:
        x = np.load(path)
    else:
        rng = np.random.default_rng(SEED)
        x = rng.normal(size=(N_ROWS, N_FEATURES))[:, cols[0]:cols[1]]
    print(f"[{party}] features {x.shape} loaded on {socket.gethostname()}", flush=True)
    return x.astype(np.float32)


def load_label(path):
    if path:
        return np.load(path).reshape(-1, 1).astype(np.float32)
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(N_ROWS, N_FEATURES))
    w = np.random.default_rng(SEED + 1).normal(size=N_FEATURES)
    logits = x @ w + 0.3 * np.random.default_rng(SEED + 2).normal(size=N_ROWS)
    return (logits > 0).astype(np.float32).reshape(-1, 1)


def main():
    t0 = time.time()
    cluster = runtime.init()   # sf.init for this cluster; PYUs by party; the SPU with its link settings
    pyus, spu = cluster.pyus, cluster.spu
    print(f"sfcluster: {len(parties)} parties {parties}, head {head}, Ray {cfg['ray_address']}", flush=True)

    x = FedNdarray(
        partitions={pyus[p]: pyus[p](load_features)(p, cfg["parties"][p]["data"].get("features"), COLS[p])
                    for p in parties},
        partition_way=PartitionWay.VERTICAL)
    y = FedNdarray(partitions={pyus[head]: pyus[head](load_label)(cfg["parties"][head]["data"].get("label"))},
                   partition_way=PartitionWay.VERTICAL)

    model = SSRegression(spu)
    rc = cfg["spu_cluster_def"]["runtime_config"]
    print(f"training SS-LR on SPU ({rc['protocol']}, {rc['field']})...", flush=True)
    model.fit(x=x, y=y, epochs=3, learning_rate=0.3, batch_size=128, sig_type="t1", reg_type="logistic",
              penalty="l2", l2_norm=0.01)
    y_pred = sf.reveal(model.predict(x))
    y_true = sf.reveal(y.partitions[pyus[head]])
    from sklearn.metrics import accuracy_score, roc_auc_score
    auc = roc_auc_score(y_true, y_pred)
    acc = accuracy_score(y_true, (np.asarray(y_pred) > 0.5).astype(float))
    print(f"RESULT auc={auc:.4f} accuracy={acc:.4f} seconds={time.time() - t0:.1f}", flush=True)
    sf.shutdown()
    return 0 if auc >= 0.85 else 1


if __name__ == "__main__":
    sys.exit(main())
