"""A driver whose SPU exchanges messages of some 100 KB (matrix products of 400 x 400 shares between
alice and bob), argv[1] times, through runtime.init(): the SPU gets the generated link settings."""
import sys
import time

from sfcluster import runtime

runtime.guard()
import numpy as np  # noqa: E402
import secretflow as sf  # noqa: E402

cluster = runtime.init()
alice, bob = (cluster.pyus[p] for p in cluster.parties[:2])
x = alice(lambda: np.random.default_rng(1).normal(size=(400, 400)).astype(np.float32))().to(cluster.spu)
y = bob(lambda: np.random.default_rng(2).normal(size=(400, 400)).astype(np.float32))().to(cluster.spu)
t0 = time.time()
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 4):
    x = cluster.spu(lambda p, q: (p @ q) / 400.0)(x, y)
    print(f"round {i}: {float(sf.reveal(x)[0][0]):.4f} after {time.time() - t0:.1f} s", flush=True)
print("MATMULS DONE", flush=True)
