"""A sanctioned driver that leaves results in $SFCLUSTER_OUTPUT: metrics, a nested file, and a link
to a file it must not be able to make `run` fetch. argv: a tag, then seconds to wait first."""
import json
import os
import sys
import time

from sfcluster import runtime

runtime.guard()
tag = sys.argv[1] if len(sys.argv) > 1 else "x"
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
out = os.environ["SFCLUSTER_OUTPUT"]
with open(os.path.join(out, "metrics.json"), "w") as f:
    json.dump({"tag": tag, "auc": 0.9}, f)
os.makedirs(os.path.join(out, "model"), exist_ok=True)
with open(os.path.join(out, "model", "weights.bin"), "wb") as f:
    f.write(os.urandom(4096))
os.symlink("/etc/shadow", os.path.join(out, "shadow"))
print(f"wrote outputs {tag}", flush=True)
