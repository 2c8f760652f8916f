# Runs on a node (Python >= 3.8, stdlib only). argv[1] is a JSON request; prints one JSON object.
# Gathers every fact sfcluster needs about a node in one process: versions, addresses, planned
# ports (free? held by whom? by this cluster?), Ray processes, sudo, firewall backend, resources.
import errno
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys

REQ = json.loads(sys.argv[1]) if __name__ == "__main__" else {}
TEMP_DIR = REQ.get("temp_dir", "")
# A process is this cluster's when its command line names the cluster's temp dir or its GCS
# address (Ray's client server, started by `ray start`, carries only the latter).
MARKERS = [m for m in (TEMP_DIR, REQ.get("ray_address")) if m]
# whole words only: cluster demo's /tmp/sfc-demo is not demo2's /tmp/sfc-demo2 (same as ray_stop.py)
MARKER_RE = re.compile("|".join("(?:%s)(?![A-Za-z0-9_.-])" % re.escape(m) for m in MARKERS) or "(?!x)x")

OTHER_CLUSTER_RE = re.compile(r"/tmp/sfc-([a-z][a-z0-9_]{0,30})/(?:r/)?session_")


def is_ours(cmd):
    return bool(MARKER_RE.search(cmd))


def venv_site(python):
    """The site-packages of the node's `python` (a venv of the user Ray runs as), found WITHOUT
    running it: the probe runs as root with the root-owned interpreter, and running (or importing
    from) a venv another user can write would run that user's code as root."""
    import glob
    root = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    found = []
    for pat in ("lib/python3*/site-packages", "lib/python3*/dist-packages", "local/lib/python3*/dist-packages"):
        found += sorted(glob.glob(os.path.join(root, pat)))
    return found


def venv_python_version(python):
    """The venv's Python version from its pyvenv.cfg (data, never run); None when `python` is missing."""
    if not os.path.exists(python):
        return None
    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(python))), "pyvenv.cfg")
    try:
        with open(cfg) as f:
            for line in f:
                k, _, v = line.partition("=")
                if k.strip() in ("version", "version_info") and v.strip():
                    return v.strip()
    except OSError:
        pass
    m = re.search(r"python(3\.[0-9]+)", " ".join(venv_site(python)))
    return m.group(1) if m else "unknown"


DASHBOARD_DEPS = ("aiohttp", "aiohttp-cors", "opencensus", "prometheus-client", "pydantic", "grpcio")


def dist_version(name):
    """A distribution's version from the metadata files of the node's venv (read, never imported)."""
    try:
        from importlib.metadata import distributions
        want = re.sub(r"[-_.]+", "-", name).lower()
        for d in distributions(path=venv_site(REQ.get("python", sys.executable))):
            if re.sub(r"[-_.]+", "-", d.metadata["Name"] or "").lower() == want:
                return d.version
    except Exception:
        return None
    return None


def run(argv, timeout=5):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, "", str(e)


def addresses():
    out = set(["127.0.0.1"])
    code, text, _ = run(["ip", "-o", "addr", "show"])
    if code == 0:
        for line in text.splitlines():
            parts = line.split()
            for i, p in enumerate(parts):
                if p in ("inet", "inet6") and i + 1 < len(parts):
                    out.add(parts[i + 1].split("/")[0])
    return sorted(out)


def listening_inodes():
    """inode -> port for LISTEN tcp sockets (state 0A)."""
    res = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if cols[3] != "0A":
                        continue
                    port = int(cols[1].rsplit(":", 1)[1], 16)
                    res[cols[9]] = port
        except OSError:
            pass
    return res


def proc_info(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        uid = os.stat("/proc/%d" % pid).st_uid
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = str(uid)
        return {"pid": pid, "name": name, "cmdline": cmd[:300], "ppid": ppid, "user": user}
    except (OSError, ValueError):
        return None


def uses_tls(pid):
    """Whether the process runs with Ray's TLS on (its environment; None when we may not read it)."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return b"RAY_USE_TLS=1" in f.read().split(b"\0")
    except OSError:
        return None


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def port_holders(ports):
    """port -> process info of the listener, for planned ports only."""
    inode_port = {i: p for i, p in listening_inodes().items() if p in ports}
    found = {}
    if not inode_port:
        return found
    for pid in all_pids():
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                port = inode_port.get(link[8:-1])
                if port is not None and port not in found:
                    found[port] = proc_info(pid)
    for port in set(inode_port.values()) - set(found):
        found[port] = {"pid": None, "name": "unknown (not visible to this user)", "cmdline": "", "user": "?"}
    return found


def belongs_to_cluster(info, cache={}):
    """True when the process or an ancestor was started with this cluster's temp dir."""
    seen = 0
    while info and seen < 12:
        if is_ours(info.get("cmdline", "")):
            return True
        ppid = info.get("ppid")
        if not ppid or ppid <= 1:
            return False
        info = cache.get(ppid) or proc_info(ppid)
        cache[ppid] = info
        seen += 1
    return False


def bind_free(port, addr):
    """SO_REUSEADDR semantics, as brpc and Ray use: TIME_WAIT leftovers are not a conflict."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def ray_processes():
    procs = []
    for pid in all_pids():
        info = proc_info(pid)
        if not info:
            continue
        cmd = info["cmdline"]
        if "/raylet" in cmd.split(" ")[0] or info["name"] == "raylet":
            info["kind"] = "raylet"
        elif info["name"] == "gcs_server" or "gcs_server" in cmd.split(" ")[0]:
            info["kind"] = "gcs_server"
        else:
            continue
        info["ours"] = is_ours(cmd)
        if info["ours"]:
            info["tls"] = uses_tls(pid)
        if not info["ours"]:
            # another cluster of sfcluster's (its temp dir /tmp/sfc-<name>): it may run beside
            # us when no port clashes (the port check); any other Ray is foreign
            m = OTHER_CLUSTER_RE.search(cmd)
            if m:
                info["cluster"] = m.group(1)
        procs.append(info)
    return procs


def sudo_mode():
    if os.geteuid() == 0:
        return "nopasswd" if os.environ.get("SUDO_USER") else "root"
    if not shutil.which("sudo"):
        return "absent"
    code, _, err = run(["sudo", "-n", "true"])
    return "nopasswd" if code == 0 else "password"


def priv(argv):
    return argv if os.geteuid() == 0 else ["sudo", "-n"] + argv


def ufw_enabled_in_config():
    try:
        with open("/etc/ufw/ufw.conf") as f:
            return any(l.strip().lower() in ("enabled=yes", "enabled='yes'", 'enabled="yes"') for l in f)
    except OSError:
        return False


def process_running(comm):
    for pid in all_pids():
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() == comm:
                    return True
        except OSError:
            pass
    return False


def firewall_record(cluster):
    """Backend and plan digest of what firewall_apply.py recorded it added here, in the SSH user's
    ~/.sfcluster/<cluster>/firewall.json (we may be root through sudo: SUDO_UID names the user);
    None when there is none. Read as root too: a regular file of that user only, never through a
    link, never waiting on a FIFO, and only these two fields come out of it, with the counts of
    the ufw allows and denies the site already had (left out of what `up` added: `kept`)."""
    if not re.match(r"^[a-z][a-z0-9_]{0,30}$", cluster or ""):
        return None
    uid = int(os.environ["SUDO_UID"]) if os.geteuid() == 0 and os.environ.get("SUDO_UID", "").isdigit() else os.getuid()
    try:
        home = os.environ.get("SFCLUSTER_NODE_HOME") or pwd.getpwuid(uid).pw_dir
    except KeyError:
        return None
    path = os.path.join(home, ".sfcluster", cluster, "firewall.json")
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return {"error": "%s is not a regular file" % path}
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        return None if e.errno == errno.ENOENT else {"error": "%s: %s" % (path, e.strerror)}
    with os.fdopen(fd) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            return {"error": "%s is not a regular file of uid %d" % (path, uid)}
        try:
            data = json.loads(f.read(1 << 20))
        except ValueError:
            data = None
    if not isinstance(data, dict) or not isinstance(data.get("backend"), str) \
            or not re.match(r"^[0-9a-f]{64}$", str(data.get("plan"))):
        return {"error": "%s is not a record sfcluster wrote" % path}
    kept = data.get("kept") if isinstance(data.get("kept"), list) else []
    # the ufw rules of the plan the site already had (firewall_apply.py): they carry the site's comment
    kept_ufw = [sum(1 for c in kept if isinstance(c, list) and c[2:3] == [verb]) for verb in ("allow", "deny")]
    return {"backend": data["backend"][:20], "plan": data["plan"], "kept_ufw": kept_ufw}


def pick_backend(prefer, available, ufw_status, tables, nft_table):
    """The backend in charge here: the inventory's, else an active ufw, a running firewalld, an
    nftables ruleset of the site's own, iptables, nft, none (in that order)."""
    if prefer not in ("auto", ""):
        return prefer
    if "Status: active" in ufw_status:
        return "ufw"
    if ("firewall-cmd" in available and process_running("firewalld")
            and run(priv(["firewall-cmd", "--state"]))[1].strip() == "running"):
        return "firewalld"
    if any(l.startswith("table inet ") and l != "table inet " + nft_table for l in tables):
        return "nftables"
    if "iptables" in available:
        return "iptables"
    return "nftables" if "nft" in available else "none"


def firewall(prefer, can_priv, chain, nft_table, ufw_comment, ufw_expect, firewalld_rules):
    """The active backend and whether this cluster's rules are there. rules_present: any of ours
    (down must remove them); rules_complete: all of them (up has nothing to add)."""
    info = {"backend": "none", "rules_present": False, "rules_complete": False, "available": [],
            "record": firewall_record(REQ.get("cluster"))}
    for tool in ("ufw", "firewall-cmd", "nft", "iptables"):
        if shutil.which(tool) or os.path.exists("/usr/sbin/" + tool):
            info["available"].append(tool)
    if not can_priv:
        info["backend"] = "unknown"
        info["error"] = "needs root (sudo asks for a password)"
        return info
    # `ufw` and `firewall-cmd` are Python programs (~0.1-0.2 s of CPU each): ask them only when
    # their config says enabled / their daemon runs. Eight probes share two cores on the bench.
    ufw_status = run(priv(["ufw", "status"]))[1] if "ufw" in info["available"] and ufw_enabled_in_config() else ""
    nft_tables = run(priv(["nft", "list", "tables"]))[1] if "nft" in info["available"] else ""
    tables = [l.strip() for l in nft_tables.splitlines()]
    ours_nft = ("table inet " + nft_table) in tables  # exact: cluster demo never takes sfc_demo2 for its own
    backend = info["backend"] = pick_backend(prefer, info["available"], ufw_status, tables, nft_table)
    if backend == "iptables":
        chain_there = run(priv(["iptables", "-w", "-S", chain]))[0] == 0
        # the chain does nothing without its jump from INPUT: complete means both
        jump_there = run(priv(["iptables", "-w", "-C", "INPUT", "-j", chain]))[0] == 0
        info["rules_present"] = chain_there or jump_there
        info["rules_complete"] = chain_there and jump_there
        if chain_there and not jump_there:
            info["missing"] = "the jump from INPUT to %s" % chain
    elif backend == "nftables":
        info["rules_present"] = info["rules_complete"] = ours_nft
    elif backend == "ufw":
        # `ufw status` prints each rule's comment after a '#'; ufw adds a (v6) twin of each deny
        ours = [l for l in ufw_status.splitlines() if l.rstrip().endswith("# " + ufw_comment)]
        info["rules_present"] = bool(ours)
        v4 = [l for l in ours if "(v6)" not in l]
        kept = (info["record"] or {}).get("kept_ufw") or [0, 0]
        info["rules_complete"] = [sum(1 for l in v4 if " ALLOW " in l) + kept[0],
                                  sum(1 for l in v4 if " DENY " in l) + kept[1]] == ufw_expect
    elif backend == "firewalld":
        have = set(run(priv(["firewall-cmd", "--list-rich-rules"]))[1].splitlines())
        want = set(firewalld_rules)
        info["rules_present"] = bool(have & want)
        info["rules_complete"] = bool(want) and want <= have
    return info


def meminfo():
    res = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, v = line.split(":", 1)
                res[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return res.get("MemAvailable")


def disk_free(path):
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path or "/")
    return st.f_bavail * st.f_frsize


def main():
    planned = REQ.get("ports", [])
    all_ports = set()
    for p in planned:
        all_ports.update(range(p[0], p[1] + 1))
    holders = port_holders(all_ports)
    ports = {}
    for start, end, purpose, bind in planned:
        busy = []
        for port in range(start, end + 1):
            holder = holders.get(port)
            free = holder is None and bind_free(port, bind)
            if not free:
                ours = bool(holder) and holder.get("pid") is not None and belongs_to_cluster(holder)
                busy.append({"port": port, "holder": holder, "ours": ours})
        ports["%d-%d" % (start, end)] = {"purpose": purpose, "busy": busy}
    sudo = sudo_mode()
    can_priv = sudo in ("root", "nopasswd")
    try:
        uname = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        uname = str(os.geteuid())
    out = {
        "hostname": socket.gethostname(),
        "user": uname,
        "python": venv_python_version(REQ.get("python", sys.executable)),
        "python_executable": REQ.get("python", sys.executable),
        "ray": dist_version("ray"),
        "secretflow": dist_version("secretflow-lite") or dist_version("secretflow"),
        "spu": dist_version("spu"),
        # what ray/dashboard/optional_deps.py imports (Ray 2.9): without them `ray start
        # --include-dashboard=true` exits "Cannot include dashboard with missing packages"
        "dashboard_missing": [d for d in DASHBOARD_DEPS if not dist_version(d)] if REQ.get("dashboard") else [],
        "addresses": addresses(),
        "ports": ports,
        "ray_processes": ray_processes(),
        "sudo": sudo,
        "firewall": firewall(REQ.get("firewall_backend", "auto"), can_priv, REQ.get("iptables_chain", ""),
                             REQ.get("nft_table", ""), REQ.get("ufw_comment", "sfcluster:"),
                             REQ.get("ufw_expect", [0, 0]), REQ.get("firewalld_rules", [])),
        "mem_available": meminfo(),
        "shm_free": disk_free("/dev/shm"),
        "tmp_free": disk_free(TEMP_DIR or "/tmp"),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
