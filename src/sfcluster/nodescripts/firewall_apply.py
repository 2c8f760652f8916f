# Runs on a node AS THE SSH USER (after nodestate.py): adds a cluster's firewall rules and records
# what it added, or removes exactly what that record says. The record, ~/.sfcluster/<cluster>/
# firewall.json (0600 in the 0700 state dir), is the node's own truth about what `up` added there;
# the controller keeps a cached copy only. Each firewall command runs as root through `sudo -n --`
# when the request says so (and we are not root already). The request comes on stdin (JSON: an
# nftables ruleset can be long; it holds no secret):
#   {"action": "apply" | "remove", "cluster", "sudo": bool,
#    "names": {"iptables_chain", "nft_table", "ufw_comment"},
#    "fallback": {"backend", "remove": [argv, ...]},    what to remove where there is no record
#    apply only: "backend", "add": [argv, ...], "add_stdin": str | null (fed to each add command),
#                "remove": [argv, ...] (what removes `add`: the new record), "plan": its digest}
#  - apply: remove what the record (else the fallback) names: a re-plan after a peer's IP changed
#    drops the old rules first; write the new record BEFORE the first add command (a plan that
#    fails half-way is still removable); add in order, stopping at the first failure.
#  - remove: remove what the record (else the fallback) names, going on past a rule that is
#    already gone (removing is idempotent); delete the record.
# Every removal to run (recorded, or sent as the fallback where there is no record) is checked
# before anything runs: the backend's own tool, a delete verb, this cluster's names only; anything
# else is refused and nothing runs.
# Prints one JSON object as its last line:
#   {"ok", "from": "record" | "fallback" | "nothing", "removed", "gone", "added", "error", "kind"}
# (removed/gone: removal commands that exited 0 / did not). Exit 0 when ok; 1 when a firewall
# command failed (kind "command_failed") or sudo asks for a password ("no_privilege"); 3 when it
# refused ("refused": a removal that is not ours; "state": the state dir or the record file is
# unsafe or unusable; "bad_request").
import shlex
import subprocess
import sys

RECORD = "firewall.json"
TOOL = {"iptables": "iptables", "nftables": "nft", "ufw": "ufw", "firewalld": "firewall-cmd"}
COMMAND_TIMEOUT = 30
PLAN_DIGEST = re.compile(r"^[0-9a-f]{64}$")
NAME_SHAPES = {"iptables_chain": r"^SFC-[A-Za-z0-9_-]{1,24}$", "nft_table": r"^sfc_[a-z0-9_]{1,31}$",
               "ufw_comment": r"^sfcluster:[a-z0-9_]{1,31}$"}


class Refused(Exception):
    def __init__(self, message, kind="refused"):
        super().__init__(message)
        self.kind = kind


class Failed(Exception):
    def __init__(self, message, kind="command_failed"):
        super().__init__(message)
        self.kind = kind


def is_argv(x):
    return isinstance(x, list) and bool(x) and all(isinstance(a, str) and "\0" not in a for a in x)


def removal_refused(argv, backend, names):
    """Why `argv` is not a removal of this cluster's own rules with `backend`'s own tool; None
    when it is one."""
    if backend not in TOOL:
        return "unknown backend %r" % (backend,)
    if not is_argv(argv):
        return "not a command (a list of strings)"
    if argv[0] != TOOL[backend]:
        return "not %s (the %s tool)" % (TOOL[backend], backend)
    if backend == "iptables":
        chain = names["iptables_chain"]
        if argv in (["iptables", "-w", "-D", "INPUT", "-j", chain], ["iptables", "-w", "-F", chain],
                    ["iptables", "-w", "-X", chain]):
            return None
        return "not a delete of chain %s (or of its jump from INPUT)" % chain
    if backend == "nftables":
        return None if argv == ["nft", "delete", "table", "inet", names["nft_table"]] else \
            "not a delete of table inet %s" % names["nft_table"]
    if backend == "ufw":
        if (len(argv) > 5 and argv[1] == "delete" and argv[2] in ("allow", "deny")
                and argv[-2:] == ["comment", names["ufw_comment"]] and not any(a.startswith("-") for a in argv[2:-2])):
            return None
        return "not a delete of a rule with comment %s" % names["ufw_comment"]
    if len(argv) == 2 and argv[1].startswith("--remove-rich-rule=rule ") and "\n" not in argv[1]:
        return None
    return "not a --remove-rich-rule of one rich rule"


def checked_removals(backend, removals, names, what):
    """`removals` when every one is a removal of ours; Refused naming the first that is not."""
    if backend in ("none", "unknown") and not removals:
        return []
    if not isinstance(removals, list):
        raise Refused("%s: refused: the removals are not a list" % what)
    for argv in removals:
        why = removal_refused(argv, backend, names)
        if why:
            shown = shlex.join(argv) if is_argv(argv) else repr(argv)
            raise Refused("%s: refused to run `%s` as root: %s" % (what, shown[:300], why))
    return removals


def checked_names(names):
    if not isinstance(names, dict):
        raise Refused("the request names no rules", "bad_request")
    for key, shape in NAME_SHAPES.items():
        if not isinstance(names.get(key), str) or not re.match(shape, names[key]):
            raise Refused("bad %s %r in the request" % (key, names.get(key)), "bad_request")
    return names


def read_record(path, names):
    """The record at `path`, every removal in it checked; None when there is none."""
    text = read_private(path)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise Refused("%s is not a record sfcluster wrote; check it, remove it, and remove the rules "
                      "it names by hand" % path)
    checked_removals(record.get("backend"), record.get("remove"), names, path)
    return record


def run(argv, sudo, stdin=None):
    """(exit code, stderr) of one firewall command, as root when `sudo`."""
    try:
        p = subprocess.run((["sudo", "-n", "--"] if sudo else []) + argv, input=stdin or "",
                           capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        return p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        return 124, "did not finish within %d s" % COMMAND_TIMEOUT
    except OSError as e:
        return 127, str(e)


def main(req, out):
    action = req.get("action")
    if action not in ("apply", "remove"):
        raise Refused("unknown action %r" % (action,), "bad_request")
    if not isinstance(req.get("cluster"), str):
        raise Refused("the request names no cluster", "bad_request")
    names = checked_names(req.get("names"))
    fallback = req.get("fallback") or {}
    if not isinstance(fallback, dict):
        raise Refused("the fallback is not a JSON object", "bad_request")
    sudo = bool(req.get("sudo")) and os.geteuid() != 0
    if action == "apply":
        backend, add, plan = req.get("backend"), req.get("add"), req.get("plan")
        if backend not in TOOL:
            raise Refused("unknown backend %r" % (backend,), "bad_request")
        undo = checked_removals(backend, req.get("remove"), names, "the plan's removal")
        if (not isinstance(add, list) or not all(is_argv(c) and c[0] == TOOL[backend] for c in add)
                or not isinstance(req.get("add_stdin") or "", str)
                or not isinstance(plan, str) or not PLAN_DIGEST.match(plan)):
            raise Refused("the plan to add is not commands of %s with a digest" % TOOL[backend], "bad_request")
    state = state_dir(req.get("cluster"), create=action == "apply")
    path = os.path.join(state, RECORD) if state else None
    record = read_record(path, names) if path else None
    old = record["remove"] if record else checked_removals(fallback.get("backend", "none"), fallback.get("remove", []),
                                                           names, "the controller's removal (no record here)")
    out["from"] = "record" if record else "fallback" if old else "nothing"
    if sudo and (old or action == "apply"):
        code, err = run(["true"], True)
        if code != 0:
            raise Failed("`sudo -n true` failed (%s); nothing was changed" % (err.strip()[-200:] or "exit %d" % code),
                         "no_privilege")
    for argv in old:
        ok = run(argv, sudo)[0] == 0
        out["removed" if ok else "gone"] += 1
    if action == "remove":
        if record:
            os.unlink(path)
        return
    write_private(path, json.dumps({"backend": backend, "remove": undo, "plan": plan}))
    for argv in add:
        code, err = run(argv, sudo, req.get("add_stdin"))
        if code != 0:
            tail = " | ".join(err.strip().splitlines()[-3:])
            raise Failed("`%s` exited %d%s" % (shlex.join(argv)[:300], code, ": " + tail if tail else ""))
        out["added"] += 1


answer = {"ok": False, "from": "nothing", "removed": 0, "gone": 0, "added": 0, "error": None, "kind": None}
try:
    try:
        request = json.loads(sys.stdin.read())
    except ValueError as e:
        raise Refused("the request is not JSON: %s" % e, "bad_request")
    if not isinstance(request, dict):
        raise Refused("the request is not a JSON object", "bad_request")
    main(request, answer)
    answer["ok"] = True
except (Refused, Failed) as e:
    answer.update(error=str(e), kind=e.kind)
except UnsafeState as e:
    answer.update(error=str(e), kind="state")
except OSError as e:
    answer.update(error="%s: %s" % (e.filename or "the state dir", e.strerror or e), kind="state")
except Exception as e:  # a bug of ours: still one answer, naming it
    answer.update(error="%s: %s" % (type(e).__name__, e), kind="bad_request")
print(json.dumps(answer))
sys.exit(0 if answer["ok"] else 1 if answer["kind"] in ("command_failed", "no_privilege") else 3)
