"""The driver of the run-overhead benchmark: connect to Ray, print, exit. Needs nothing from
sfcluster (no runtime.guard()), so the very same file runs under `sfcluster run` and plain ssh.
argv[1]: the GCS address (the bench clusters use their own temp dirs, so address="auto" would
not find them)."""
import sys

import ray

ray.init(address=sys.argv[1], log_to_driver=False)
print("SFBENCH-DRIVER-OK", len(ray.nodes()), "nodes", flush=True)
ray.shutdown()
