# sfcluster-needs: contract nodestate
# Runs on a node (after contract.py and nodestate.py), for `down --purge`: removes the node's
# certificates (<state dir>/TLS_DIR), after the same checks as every use of the state dir (ours,
# 0700, not a link). argv[1]: {"cluster"}. Prints one JSON object: {"removed": bool} or {"error"}.
import json
import os
import shutil
import sys

REQ = json.loads(sys.argv[1])


def main():
    st = state_dir(REQ["cluster"], create=False)
    d = os.path.join(st, TLS_DIR) if st else None
    removed = bool(d and private_dir(d, create=False))
    if removed:
        shutil.rmtree(d)
    return {"removed": removed}


print_answer(main)
