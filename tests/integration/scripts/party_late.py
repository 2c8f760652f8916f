"""Production mode: the party named in argv[1] sleeps argv[2] seconds before runtime.init (its
driver never comes to the start line in time); the others init and wait for it."""
import sys
import time

from sfcluster import runtime

cfg = runtime.guard()
if cfg["self_party"] == sys.argv[1]:
    print(f"{sys.argv[1]}: late on purpose", flush=True)
    time.sleep(float(sys.argv[2]))
cluster = runtime.init()
print("all linked", flush=True)
