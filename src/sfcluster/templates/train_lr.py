"""SS-LR (SS-SGD logistic regression on the SPU, with the inventory's protocol and field), SS-XGB
(`-- --model xgb`: secretflow.ml.boost.ss_xgb_v, gradient-boosted trees on the SPU) or SS-GLM
(`-- --model glm`: secretflow.ml.linear.SSGLM, a logistic GLM fitted by IRLS on the SPU) or
SecureBoost (`-- --model sgb`: secretflow.ml.boost.sgb_v, boosted trees whose gradients an HEU
device encrypts, its secret key with the label holder) on tabular
data split VERTICALLY across the parties: each party's CSV, on that party's own node, holds an id
column and its own feature columns; the label column is at the head's party. The rows need not be
in the same order, nor every id at every party: PSI on the SPU aligns them first.

Run it with sfcluster, never by hand:
    sfcluster run -i inventory.yaml templates/train_lr.py                 # data named breast_cancer
    sfcluster run -i inventory.yaml templates/train_lr.py -- --data NAME --epochs 5
    sfcluster run -i inventory.yaml templates/train_lr.py -- --synthetic  # generated numbers, said so
    sfcluster run -i inventory.yaml train_lr -- --model xgb --trees 3 --depth 3   # SS-XGB on the same data
    sfcluster run -i inventory.yaml train_lr -- --model glm --epochs 3            # SS-GLM (IRLS rounds)
    sfcluster run -i inventory.yaml train_lr -- --model sgb --trees 3 --depth 3   # SecureBoost (HEU)
The inventory names each party's file:  nodes: {alice: {data: {breast_cancer: /srv/data/alice.csv}}}
(`sfcluster data push alice breast_cancer data/breast_cancer/alice.csv` puts it there; the sample
files ship with sfcluster, `sfcluster init HOSTS --sample-data` writes them out, and the repository's
data/make_party_csvs.py makes them). Metrics go to $SFCLUSTER_OUTPUT/metrics.json, which `run`
brings back to the controller. The trained weights stay secret-shared on the SPU; `--reveal-model`
reveals them to the head and saves them (model.json): only when every party agrees to that.
PSI's aligned copies live in a private temporary directory on each party's node, removed at the end.
"""
import argparse
import json
import os
import sys
import time

from sfcluster import runtime

# What this script needs of every party in simulation mode (run/needs.py: `run` refuses before it
# ships anything when the inventory gives less, and `check --for train_lr -- --model xgb` says so):
# SS-LR and SS-GLM the SPU actor's CPU and one for the PYU tasks; SS-XGB one more for its tree
# worker actor beside the SPU's; SecureBoost two more, for its HEU actor and its tree worker
# (with 3 its tasks wait forever: measured on the harness, the run stops as starved).
SFCLUSTER_NEEDS = {"cpus": 2, "by_arg": {"--model": {"xgb": {"cpus": 3}, "sgb": {"cpus": 4}}}}

runtime.guard()          # before sf.init: exactly one driver (per party in production mode), under the lock
cfg = runtime.load()

SEED = 20240601
XGB_CPUS = SFCLUSTER_NEEDS["by_arg"]["--model"]["xgb"]["cpus"]
MODELS = {"lr": "SS-LR", "xgb": "SS-XGB", "glm": "SS-GLM", "sgb": "SecureBoost"}
PARTIES = list(cfg["parties"])
HEAD = cfg["head"]


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="train_lr.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="breast_cancer", help="the inventory's data name at every party")
    ap.add_argument("--id", default="id", help="the id column every party's CSV has (PSI's key)")
    ap.add_argument("--label", default="target", help="the label column, in the head's CSV")
    ap.add_argument("--model", choices=tuple(MODELS), default="lr",
                    help="SS-LR, SS-XGB (boosted trees) or SS-GLM (logistic GLM by IRLS)")
    ap.add_argument("--epochs", type=int, default=5, help="SS-LR: passes over the data; SS-GLM: IRLS rounds")
    ap.add_argument("--trees", type=int, default=3, help="SS-XGB, SecureBoost: boosting rounds")
    ap.add_argument("--depth", type=int, default=3, help="SS-XGB, SecureBoost: the trees' depth")
    ap.add_argument("--test-size", type=float, default=0.25, help="held-out share for AUC/accuracy")
    ap.add_argument("--reveal-model", action="store_true",
                    help="reveal the trained weights to the head and save them (a privacy decision)")
    ap.add_argument("--synthetic", action="store_true",
                    help="train on numbers generated on each node instead of the parties' data")
    return ap.parse_args(argv)


def fail(msg):
    print(f"train_lr: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def data_paths(name):
    """Every party's path for `name`, from the inventory; an error naming the parties without it."""
    missing = [p for p in PARTIES if name not in (cfg["parties"][p].get("data") or {})]
    if missing:
        fail(f"no data named {name!r} at {', '.join(missing)}: give each party "
             f"`data: {{{name}: /path/on/its/node.csv}}` in the inventory and put the file there "
             f"(`sfcluster data push PARTY {name} FILE`), or pass `-- --synthetic` for generated numbers")
    if len(PARTIES) > 3:
        fail(f"PSI in SecretFlow 1.10 aligns 2 or 3 parties, this cluster has {len(PARTIES)}; "
             "use `-- --synthetic` or a 2- or 3-party inventory")
    return {p: cfg["parties"][p]["data"][name] for p in PARTIES}


# ---- run on the parties' nodes (PYU functions) ----
def inspect_csv(party, path, id_col, label_col):
    """The header and row count of this party's file, checked before PSI; errors name the party."""
    import csv
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = sum(1 for _ in reader)
    except OSError as e:
        return {"error": f"{party}: cannot read {path}: {e.strerror}"}
    if id_col not in header:
        return {"error": f"{party}: {path} has no id column {id_col!r} (columns: {', '.join(header[:8])}...)"}
    return {"rows": rows, "columns": len(header) - 1, "label": label_col in header}


def n_rows(a):
    return len(a)


def private_tmpdir():
    import tempfile
    return tempfile.mkdtemp(prefix="sfc-psi-")     # 0700, this run's user only


def remove_tree(path):
    import shutil
    shutil.rmtree(path, ignore_errors=True)
    return True


def aligned_features(path, id_col, label_col):
    """This party's feature columns of PSI's output (sorted by id at every party), standardised
    here: each party scales its own columns, on its own node."""
    import numpy as np
    import pandas as pd
    df = pd.read_csv(path).drop(columns=[id_col] + ([label_col] if label_col else []))
    x = df.to_numpy(dtype=np.float32)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)


def aligned_label(path, label_col):
    import numpy as np
    import pandas as pd
    return pd.read_csv(path, usecols=[label_col])[label_col].to_numpy(dtype=np.float32).reshape(-1, 1)


def synthetic_features(party, cols, n_rows, n_features):
    import numpy as np
    x = np.random.default_rng(SEED).normal(size=(n_rows, n_features))[:, cols[0]:cols[1]]
    print(f"[{party}] SYNTHETIC features {x.shape} generated", flush=True)
    return x.astype(np.float32)


def metrics_at_head(y_true, y_pred):
    """AUC and accuracy where the labels are (the head's node): only the two numbers leave it."""
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    return {"auc": float(roc_auc_score(y_true, y_pred)),
            "accuracy": float(accuracy_score(y_true, (y_pred > 0.5).astype(float))), "test_rows": int(len(y_true))}


def synthetic_label(n_rows, n_features):
    import numpy as np
    x = np.random.default_rng(SEED).normal(size=(n_rows, n_features))
    w = np.random.default_rng(SEED + 1).normal(size=n_features)
    logits = x @ w + 0.3 * np.random.default_rng(SEED + 2).normal(size=n_rows)
    return (logits > 0).astype(np.float32).reshape(-1, 1)


# ---- the driver ----
def load_aligned(sf, cluster, args):
    """PSI on the SPU, then each party's aligned rows as arrays on its own node (features x, the
    label y at the head). Arrays, not a VDataFrame: SecretFlow 1.10 holds a VDataFrame's partitions
    in actors that take a CPU each, and with the SPU's actor they starve a party with `cpus: 2`."""
    from secretflow.data import FedNdarray, PartitionWay
    pyus = cluster.pyus
    paths = data_paths(args.data)
    info = {p: sf.reveal(pyus[p](inspect_csv)(p, paths[p], args.id, args.label)) for p in PARTIES}
    errors = [i["error"] for i in info.values() if "error" in i]
    if errors:
        fail("; ".join(errors))
    if not info[HEAD]["label"]:
        fail(f"{HEAD}: {paths[HEAD]} has no label column {args.label!r} (the label is at the head's party)")
    tmp = {p: sf.reveal(pyus[p](private_tmpdir)()) for p in PARTIES}
    try:
        aligned = {p: f"{tmp[p]}/aligned.csv" for p in PARTIES}
        spu = cluster.spu
        if hasattr(spu, "psi_csv"):  # SecretFlow 1.10
            spu.psi_csv(args.id, input_path={pyus[p]: paths[p] for p in PARTIES},
                        output_path={pyus[p]: aligned[p] for p in PARTIES}, receiver=HEAD,
                        protocol="KKRT_PSI_2PC" if len(PARTIES) == 2 else "ECDH_PSI_3PC")
        else:  # 1.11 and later: psi_csv is gone; PSI v2 takes the parties by name (output aligned by key)
            spu.psi(keys={p: [args.id] for p in PARTIES}, input_path=dict(paths), output_path=dict(aligned),
                    receiver=HEAD, broadcast_result=True,
                    protocol="PROTOCOL_RR22" if len(PARTIES) == 2 else "PROTOCOL_ECDH_3PC")
        label = {p: args.label if p == HEAD else None for p in PARTIES}
        x = {p: pyus[p](aligned_features)(aligned[p], args.id, label[p]) for p in PARTIES}
        y = pyus[HEAD](aligned_label)(aligned[HEAD], args.label)
        # read before the files go (PYU functions are Ray tasks: nothing orders them but their inputs)
        rows = {p: sf.reveal(pyus[p](n_rows)(x[p])) for p in PARTIES}
        rows["label"] = sf.reveal(pyus[HEAD](n_rows)(y))
    finally:
        for p in PARTIES:
            sf.reveal(pyus[p](remove_tree)(tmp[p]))
    if len(set(rows.values())) != 1:
        fail(f"PSI left the parties with different row counts: {rows}")
    common = rows.pop("label")
    print("PSI: " + ", ".join(f"{p} {info[p]['rows']} rows" for p in PARTIES) + f" -> {common} in common",
          flush=True)
    x = FedNdarray(partitions={pyus[p]: x[p] for p in PARTIES}, partition_way=PartitionWay.VERTICAL)
    y = FedNdarray(partitions={pyus[HEAD]: y}, partition_way=PartitionWay.VERTICAL)
    return x, y, {"rows_per_party": {p: info[p]["rows"] for p in PARTIES}, "rows_in_common": common}


def load_synthetic(sf, cluster):
    import numpy as np
    from secretflow.data import FedNdarray, PartitionWay
    n_rows, n_features = 1000, 10
    bounds = np.linspace(0, n_features, len(PARTIES) + 1).astype(int)
    cols = {p: (int(bounds[i]), int(bounds[i + 1])) for i, p in enumerate(PARTIES)}
    pyus = cluster.pyus
    x = FedNdarray(partitions={pyus[p]: pyus[p](synthetic_features)(p, cols[p], n_rows, n_features) for p in PARTIES},
                   partition_way=PartitionWay.VERTICAL)
    y = FedNdarray(partitions={pyus[HEAD]: pyus[HEAD](synthetic_label)(n_rows, n_features)},
                   partition_way=PartitionWay.VERTICAL)
    return x, y, {"synthetic": True, "rows_in_common": n_rows}


def fit_lr(cluster, args, x, y):
    from secretflow.ml.linear.ss_sgd import SSRegression
    model = SSRegression(cluster.spu)
    model.fit(x=x, y=y, epochs=args.epochs, learning_rate=0.3, batch_size=128, sig_type="t1",
              reg_type="logistic", penalty="l2", l2_norm=0.01)
    return model


def fit_glm(cluster, args, x, y):
    """SS-GLM: a logistic GLM (Logit link, Bernoulli), IRLS on the SPU; its predictions are the
    probabilities, as SS-LR's."""
    from secretflow.ml.linear import SSGLM
    model = SSGLM(cluster.spu)
    model.fit_irls(x, y, None, None, args.epochs, "Logit", "Bernoulli", 1, 1, l2_lambda=0.1, stopping_rounds=0)
    return model


def fit_sgb(cluster, args, x, y):
    """SecureBoost (secretflow.ml.boost.sgb_v.Sgb): the gradients are encrypted by an HEU device
    whose secret key stays with the label holder (the head), the other parties sum them under
    encryption (OU, 2048-bit keys)."""
    import secretflow as sf
    from secretflow.ml.boost.sgb_v import Sgb
    from spu import spu_pb2
    rc = cfg["spu_cluster_def"]["runtime_config"]
    heu = sf.HEU({"sk_keeper": {"party": HEAD}, "evaluators": [{"party": p} for p in PARTIES if p != HEAD],
                  "mode": "PHEU", "he_parameters": {"schema": "ou", "key_pair": {"generate": {"bit_size": 2048}}}},
                 getattr(spu_pb2, rc["field"]))
    params = {"num_boost_round": args.trees, "max_depth": args.depth, "learning_rate": 0.3, "sketch_eps": 0.1,
              "objective": "logistic", "reg_lambda": 0.1, "gamma": 0, "rowsample_by_tree": 1.0,
              "colsample_by_tree": 1.0, "base_score": 0.5, "seed": SEED}
    return Sgb(heu).train(params, x, y)


def fit_xgb(cluster, args, x, y):
    """SS-XGB (measured with secretflow-lite 1.10.0b1 on loopback: AUC 0.9893 in 9.5 s for 2
    parties, 3 trees of depth 3)."""
    from secretflow.ml.boost.ss_xgb_v import Xgb
    params = {"num_boost_round": args.trees, "max_depth": args.depth, "learning_rate": 0.3, "sketch_eps": 0.1,
              "objective": "logistic", "reg_lambda": 0.1, "subsample": 1.0, "colsample_by_tree": 1.0,
              "base_score": 0.5}
    return Xgb(cluster.spu).train(params, x, y)


def check_args(args):
    """What can be refused before Ray and the SPU start: the flags, the CPUs SS-XGB needs, the data."""
    if args.reveal_model and args.model != "lr":
        fail(f"--reveal-model saves SS-LR's weights; {MODELS[args.model]}'s model stays secret-shared (drop the flag)")
    # SS-LR's floor (2) is `check`'s (cpus row) and the run watcher's; SS-XGB needs one CPU more
    short = {p: cfg["parties"][p].get("cpus") for p in PARTIES if (cfg["parties"][p].get("cpus") or 0) < XGB_CPUS}
    if args.model == "xgb" and short and cfg.get("mode") != "production":  # production: no shared Ray
        have = ", ".join(f"{p} has {c}" for p, c in short.items())
        fail(f"SS-XGB needs cpus: {XGB_CPUS} or more at every party (its tree worker actor holds a CPU beside the "
             f"SPU's, and a party's tasks would wait for ever); {have}: set cpus: {XGB_CPUS} in the inventory, "
             "then `sfcluster down` and `up`")
    if not args.synthetic:
        data_paths(args.data)            # a missing name fails here, before Ray and the SPU start


def save(sf, np, args, model, metrics):
    """metrics.json (and with --reveal-model SS-LR's weights) into $SFCLUSTER_OUTPUT."""
    out = os.environ.get("SFCLUSTER_OUTPUT")
    if not out:
        if args.reveal_model:
            print("model: not saved ($SFCLUSTER_OUTPUT is not set)", flush=True)
        return
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    if args.reveal_model:
        w = np.asarray(sf.reveal(model.save_model().weights)).reshape(-1)
        with open(os.path.join(out, "model.json"), "w") as f:
            json.dump({"weights": w.tolist(), "note": "revealed with --reveal-model (to every party's driver in "
                                                  "production mode)"}, f)
        print("model: weights REVEALED and saved (--reveal-model)", flush=True)
    print(f"metrics: {out}/metrics.json", flush=True)


def main(argv):
    args = parse_args(argv)
    check_args(args)
    t0 = time.time()
    import numpy as np
    import secretflow as sf
    from secretflow.data.split import train_test_split

    cluster = runtime.init()   # sf.init for this cluster; PYUs by party; the SPU with its link settings
    where = (f"production mode, this driver is party {cluster.self_party}" if cluster.mode == "production"
             else f"Ray {cfg['ray_address']}")
    print(f"sfcluster: {len(PARTIES)} parties {PARTIES}, head {HEAD}, {where}", flush=True)
    if args.synthetic:
        print("train_lr: SYNTHETIC data (asked for with --synthetic), not the parties' data", flush=True)
        x, y, facts = load_synthetic(sf, cluster)
    else:
        x, y, facts = load_aligned(sf, cluster, args)
    x_train, x_test = train_test_split(x, test_size=args.test_size, random_state=SEED)
    y_train, y_test = train_test_split(y, test_size=args.test_size, random_state=SEED)

    rc = cfg["spu_cluster_def"]["runtime_config"]
    head = cluster.pyus[HEAD]
    name = MODELS[args.model]
    print(f"training {name} on SPU ({rc['protocol']}, {rc['field']})...", flush=True)
    t_fit = time.time()
    model = {"lr": fit_lr, "xgb": fit_xgb, "glm": fit_glm, "sgb": fit_sgb}[args.model](cluster, args, x_train, y_train)
    fit_s = time.time() - t_fit
    # the held-out predictions are revealed to the head only, which holds the labels; the metrics
    # are computed there and only they are revealed (to every party's driver in production mode)
    pred = model.predict(x_test, to_pyu=head)
    y_pred = pred.partitions[head] if hasattr(pred, "partitions") else pred
    m = sf.reveal(head(metrics_at_head)(y_test.partitions[head], y_pred))
    auc, acc = m["auc"], m["accuracy"]
    metrics = {"auc": round(auc, 6), "accuracy": round(acc, 6), "test_rows": m["test_rows"],
               "model": name, **({"trees": args.trees, "depth": args.depth} if args.model in ("xgb", "sgb") else
                                 {"epochs": args.epochs}), "fit_seconds": round(fit_s, 2), "seconds": round(time.time() - t0, 2),
               "data": None if args.synthetic else args.data, "protocol": rc["protocol"], "field": rc["field"],
               **facts}
    save(sf, np, args, model, metrics)
    print(f"RESULT auc={auc:.4f} accuracy={acc:.4f} seconds={time.time() - t0:.1f}", flush=True)
    sf.shutdown()
    return 0 if auc >= 0.85 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
