"""A driver that brings up the SPU (every party's link), proves it computes, then idles for
argv[1] seconds: the SPU ports listen the whole time (TLS tests probe them)."""
import sys
import time

from sfcluster import runtime

runtime.guard()
import secretflow as sf  # noqa: E402

cluster = runtime.init(log_to_driver=False)
spu = cluster.spu
alice = cluster.pyus[cluster.parties[0]]
x = alice(lambda: 41)()
y = x.to(spu)
print("spu computes:", sf.reveal(spu(lambda a: a + 1)(y)), flush=True)
print("spu up", flush=True)
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 60):
    time.sleep(1)
print("done", flush=True)
