"""Production mode: every party's driver starts its link; the party named in argv[1] then exits
with code argv[2]; the others wait up to argv[3] seconds for a message from it that never comes.
`run` must stop the others at once and exit with the failing party's code."""
import sys
import time

from sfcluster import runtime

runtime.guard()
import secretflow as sf  # noqa: E402

cluster = runtime.init()
failing, code, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
first = cluster.pyus[cluster.parties[0]]
print("link up:", sf.reveal(first(lambda: 1)()), flush=True)
if cluster.self_party == failing:
    print(f"{failing}: failing on purpose with {code}", flush=True)
    sys.exit(code)
t0 = time.time()
while time.time() - t0 < wait:
    time.sleep(1)
print("waited it out", flush=True)
