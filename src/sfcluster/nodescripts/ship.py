# Runs on a node (after nodestate.py), once per `sfcluster run`: a fresh private run dir in the
# cluster's state dir, and the run's files from a tar on stdin. argv[1]: {"cluster", "run_id"}.
# Prints {"run_dir": <absolute path>} (the same run id has another path per node: each user's
# home), or {"error": ...} with exit 3 when the state dir is not safe to use.
import io
import sys
import tarfile

REQ = json.loads(sys.argv[1])


def ship():
    state = state_dir(REQ["cluster"])
    rd = run_dir(state, REQ["run_id"])
    os.mkdir(rd, 0o700)  # fresh: fails when it exists
    with tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read())) as tar:
        members = tar.getmembers()
        for m in members:
            parts = m.name.split("/")
            if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                raise UnsafeState("refusing tar member %r" % m.name)
        tar.extractall(rd, members=members)  # checked above: plain files and dirs under rd only
    return rd


try:
    print(json.dumps({"run_dir": ship()}))
except (UnsafeState, OSError) as e:
    print(json.dumps({"error": str(e)}))
    sys.exit(3)
