"""A trivial sanctioned driver: guard, connect to the cluster, tick for argv[1] seconds."""
import sys
import time

from sfcluster import runtime

runtime.guard()
cfg = runtime.load()
import ray  # noqa: E402

ray.init(address=cfg["ray_address"], log_to_driver=False)
print("connected", flush=True)
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 30):
    print(f"tick {i}", flush=True)
    time.sleep(1)
print("done", flush=True)
