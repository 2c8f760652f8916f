# Runs on a node AS THE SSH USER: adds a cluster's firewall rules and records
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
#    ufw and firewalld: a rule the site already has is the site's, not ours: it is not added and
#    its removal leaves the record (listed under "kept"), so `down` never removes it. firewalld:
#    the rules `--list-rich-rules` shows before the first add; ufw (no query verb): a prepend that
#    answers only "Skipping inserting existing rule" (ufw matches a rule whatever its comment);
#    firewalld again for a rule it answers ALREADY_ENABLED to. The plan's removal must be exactly
#    the counterpart of its adds for these two (what the record names is what was added).
#  - remove: remove what the record (else the fallback) names, going on past a rule that is
#    already gone (removing is idempotent); delete the record.
# Every removal to run (recorded, or sent as the fallback where there is no record) is checked
# before anything runs: the backend's own tool, a delete verb, this cluster's names only; anything
# else is refused and nothing runs.
# Prints one JSON object as its last line:
#   {"ok", "from": "record" | "fallback" | "nothing", "removed", "gone", "added", "kept", "error", "kind"}
# (kept: rules of the plan the site already had, left as they are and out of the record)
# (removed/gone: removal commands that exited 0 / did not). Exit 0 when ok; 1 when a firewall
# command failed (kind "command_failed") or sudo asks for a password ("no_privilege"); 3 when it
# refused ("refused": a removal that is not ours; "state": the state dir or the record file is
# unsafe or unusable; "bad_request").
import json
import os
import re
import shlex
import subprocess
import sys

from sfcluster.nodescripts.nodestate import UnsafeState, read_private, state_dir, write_private

RECORD = "firewall.json"
TOOL = {"iptables": "iptables", "nftables": "nft", "ufw": "ufw", "firewalld": "firewall-cmd"}
COMMAND_TIMEOUT = 30
PLAN_DIGEST = re.compile(r"^[0-9a-f]{64}$")
IPV4 = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# exactly the two rich rules plan.firewalld_rules writes: an accept from one IPv4 address to one
# port (or range), and the priority-32000 drop of one port (or range); nothing else is ours to remove
FIREWALLD_OURS = re.compile(r'^--remove-rich-rule=rule (?:family="ipv4" source address="%s" (?=.* accept\Z)'
                            r'|priority="32000" family="ipv4" (?=.* drop\Z))port port="([0-9]{1,5})(?:-([0-9]{1,5}))?" '
                            r'protocol="tcp" (?:accept|drop)\Z' % IPV4)
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
    m = FIREWALLD_OURS.match(argv[1]) if len(argv) == 2 else None
    if m and all(0 < int(p) <= 65535 for p in m.groups() if p is not None):
        return None
    return "not a --remove-rich-rule of one of sfcluster's rich rules (an accept from one IPv4 address or the drop " \
           "of one port)"


def counterpart(argv):
    """The removal of what an add of ufw or firewalld adds (None for a command that is not such an add)."""
    if len(argv) > 2 and argv[:2] == ["ufw", "prepend"]:
        return ["ufw", "delete"] + argv[2:]
    if len(argv) == 2 and argv[0] == "firewall-cmd" and argv[1].startswith("--add-rich-rule="):
        return ["firewall-cmd", "--remove-rich-rule=" + argv[1][len("--add-rich-rule="):]]
    return None


def already_there(backend, code, out):
    """Whether an add that exited 0 found its rule already there (so added nothing)."""
    if code != 0:
        return False
    if backend == "firewalld":
        return "ALREADY_ENABLED" in out
    lines = [l.strip() for l in out.splitlines() if l.strip()]
    # ufw prints one result line per rule it makes (an IPv4 and an IPv6 one for a rule without an
    # address): only when every one of them was skipped did it add nothing
    return backend == "ufw" and bool(lines) and any(l.startswith("Skipping ") for l in lines) and \
        not any(l.startswith("Rule") for l in lines)


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
    """(exit code, stderr, stdout) of one firewall command, as root when `sudo`; in the C locale,
    as ufw's answers are read."""
    try:
        p = subprocess.run((["sudo", "-n", "--"] if sudo else []) + argv, input=stdin or "",
                           capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                           env=dict(os.environ, LC_ALL="C", LANG="C", LANGUAGE=""))
        return p.returncode, p.stderr, p.stdout
    except subprocess.TimeoutExpired:
        return 124, "did not finish within %d s" % COMMAND_TIMEOUT, ""
    except OSError as e:
        return 127, str(e), ""


def without(removals, argv):
    """`removals` without one occurrence of `argv`."""
    out = list(removals)
    if argv in out:
        out.remove(argv)
    return out


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
        backend, add, plan, undo = checked_plan(req, names)
    state = state_dir(req.get("cluster"), create=action == "apply")
    path = os.path.join(state, RECORD) if state else None
    record = read_record(path, names) if path else None
    old = record["remove"] if record else checked_removals(fallback.get("backend", "none"), fallback.get("remove", []),
                                                           names, "the controller's removal (no record here)")
    out["from"] = "record" if record else "fallback" if old else "nothing"
    if sudo and (old or action == "apply"):
        code, err, _ = run(["true"], True)
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
    kept = site_rules(backend, add, sudo)
    for argv in kept:
        undo = without(undo, counterpart(argv))
    record = {"backend": backend, "remove": undo, "plan": plan, "kept": kept}
    write_private(path, json.dumps(record))
    add_recorded(add, kept, record, path, backend, sudo, req.get("add_stdin"), out)


def checked_plan(req, names):
    """The plan to add, refused unless it is commands of its backend's tool with a digest, and
    its removal (ufw, firewalld) exactly the removal of what it adds."""
    backend, add, plan = req.get("backend"), req.get("add"), req.get("plan")
    if backend not in TOOL:
        raise Refused("unknown backend %r" % (backend,), "bad_request")
    undo = checked_removals(backend, req.get("remove"), names, "the plan's removal")
    if (not isinstance(add, list) or not all(is_argv(c) and c[0] == TOOL[backend] for c in add)
            or not isinstance(req.get("add_stdin") or "", str)
            or not isinstance(plan, str) or not PLAN_DIGEST.match(plan)):
        raise Refused("the plan to add is not commands of %s with a digest" % TOOL[backend], "bad_request")
    if backend in ("ufw", "firewalld") and sorted(undo) != sorted(counterpart(c) or [] for c in add):
        raise Refused("the plan's removal is not exactly the removal of the rules it adds", "bad_request")
    return backend, add, plan, undo


def site_rules(backend, add, sudo):
    """firewalld: the rich rules of the plan that are there already (the site's, not ours)."""
    if backend != "firewalld" or not add:
        return []
    code, err, listed = run(["firewall-cmd", "--list-rich-rules"], sudo)
    if code != 0:
        raise Failed("`firewall-cmd --list-rich-rules` exited %d: %s" % (code, err.strip()[-200:]))
    have = set(l.strip() for l in listed.splitlines())
    return [c for c in add if c[1][len("--add-rich-rule="):] in have]


def add_recorded(add, kept, record, path, backend, sudo, stdin, out):
    """Each rule added, the record updated before the next when a rule turns out to be the site's."""
    for argv in add:
        if argv in kept:
            continue
        code, err, said = run(argv, sudo, stdin)
        if code != 0:
            tail = " | ".join(err.strip().splitlines()[-3:])
            raise Failed("`%s` exited %d%s" % (shlex.join(argv)[:300], code, ": " + tail if tail else ""))
        if counterpart(argv) is not None and already_there(backend, code, said + "\n" + err):
            kept.append(argv)  # the site's rule, not ours: out of the record before the next add
            record["remove"] = without(record["remove"], counterpart(argv))
            write_private(path, json.dumps(record))
            continue
        out["added"] += 1
    out["kept"] = len(kept)


if __name__ == "__main__":
    answer = {"ok": False, "from": "nothing", "removed": 0, "gone": 0, "added": 0, "kept": 0, "error": None, "kind": None}
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
