# Runs on a node, for `down --purge`: removes the node's
# certificates (<state dir>/TLS_DIR), after the same checks as every use of the state dir (ours,
# 0700, not a link). argv[1]: {"cluster"}. Prints one JSON object: {"removed": bool} or {"error"}.
import json
import os
import shutil
import sys

from sfcluster.nodescripts.contract import TLS_DIR
from sfcluster.nodescripts.nodestate import print_answer, private_dir, state_dir

REQ = json.loads(sys.argv[1]) if __name__ == "__main__" else {}


def main():
    st = state_dir(REQ["cluster"], create=False)
    d = os.path.join(st, TLS_DIR) if st else None
    removed = bool(d and private_dir(d, create=False))
    if removed:
        shutil.rmtree(d)
    return {"removed": removed}


if __name__ == "__main__":
    print_answer(main)
