# Runs on a node with the BASE Python (the CPython 3.10 the
# venv is made from: the venv's own python does not exist yet). argv[1]: a JSON request
#   {"action": "inspect", "venv"}                      as the Ray user: what is at `venv` now
#     -> {"base", "base_version", "venv_module", "user", "exists", "is_venv", "empty", "owner",
#         "marker", "python_ok", "self_swap", "busy"}
#   {"action": "wheels", "cluster", "files": {name: [size, sha256]}}   as the Ray user
#     -> {"dir", "missing": [name]}  (files not in `files` are removed from the node's wheelhouse)
#   {"action": "wheels_put", "cluster", "files": {name: [size, sha256]}} + a tar of them on stdin
#     -> {"ok": true, "count"} | {"refused": why}
#   {"action": "swap_in", "venv", "owner"}   as the Ray user, or as root when it cannot
#     -> {"moved_aside": bool} | {"refused": why, "needs_root": bool}
#   {"action": "build", "cluster", "venv", "requirements", "check": {dist: version}, "source",
#    "lock": [[name, version, [sha256], marker]], "marker"}
#     + stdin: USER:PASSWORD for a private index, or nothing        as the Ray user
#     -> {"versions", "seconds", "pip"} | {"failed": why, "package", "stage", "pip"}
#     pip installs exactly `lock` (--require-hashes, wheels only), isolated from every pip.conf and
#     PIP_* variable; each pin must be in the lock, and a wheelhouse wheel whose sha256 the lock
#     does not list is refused before pip runs (stage "lock check", naming the package).
#   {"action": "finish", "venv", "ok"}        as whoever ran swap_in
#     -> {"restored": bool}
# A venv is not relocatable, so it is built in place: what was at `venv` waits at venv+OLD_SUFFIX
# until the new one imports its pins, and is put back when it does not; never half a venv where
# the inventory's `python` points. Importable (not __main__) for the unit tests of its pure parts.
import hashlib
import json
import os
import platform
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time
import urllib.parse

from sfcluster.nodescripts.contract import OLD_SUFFIX, SYSTEM_DIRS, VENV_MARKER, WHEELHOUSE_DIR, WHEELHOUSE_MANIFEST
from sfcluster.nodescripts.nodestate import (
    UnsafeState, cmdline, print_answer, private_dir, read_private, state_dir, write_private)

REQ = json.loads(sys.argv[1]) if __name__ == "__main__" else {}
USER = pwd.getpwuid(os.getuid()).pw_name
CHUNK = 1 << 20


def venv_path():
    v = os.path.normpath(REQ["venv"])
    if not os.path.isabs(v) or v in SYSTEM_DIRS or v.count("/") < 2:
        raise UnsafeState("refusing to provision %s: not a venv directory of its own" % v)
    return v


def owner_of(st):
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return str(st.st_uid)


def busy(venv):
    """pids whose program lives in `venv` (Ray's raylet, a python of it): never swapped under them."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        argv = cmdline(int(pid))
        if argv and (argv[0] + "/").startswith(venv + "/") and argv[0] != venv:
            out.append({"pid": int(pid), "cmd": " ".join(argv)[:160]})
    return out


def inspect():
    venv = venv_path()
    out = {"base": sys.executable, "base_version": platform.python_version(), "user": USER, "exists": False,
           "is_venv": False, "empty": False, "owner": None, "marker": None, "python_ok": False, "busy": []}
    try:
        import importlib   # Debian/Ubuntu ship venv's pip bootstrap apart (python3.10-venv)
        for name in ("venv", "ensurepip"):
            importlib.import_module(name)
        out["venv_module"] = None
    except ImportError as e:
        out["venv_module"] = str(e)
    try:
        st = os.lstat(venv)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            out.update(exists=True, owner=owner_of(st), is_venv=False)
        else:
            out.update(exists=True, owner=owner_of(st), is_venv=os.path.isfile(os.path.join(venv, "pyvenv.cfg")))
            try:
                out["empty"] = not os.listdir(venv)
            except OSError:
                pass
            text = None
            try:
                with open(os.path.join(venv, VENV_MARKER)) as f:
                    text = f.read()
                out["marker"] = json.loads(text)
            except (OSError, ValueError):
                pass
            py = os.path.join(venv, "bin", "python")
            out["python_ok"] = os.access(py, os.X_OK)
            out["busy"] = busy(venv)
    except FileNotFoundError:
        pass
    parent = os.path.dirname(venv)
    mine = not out["exists"] or out["owner"] == USER
    out["self_swap"] = mine and os.access(parent, os.W_OK | os.X_OK)
    return out


def wheel_dir():
    d = os.path.join(state_dir(REQ["cluster"]), WHEELHOUSE_DIR)
    private_dir(d, True)
    return d


def manifest(d):
    try:
        data = json.loads(read_private(os.path.join(d, WHEELHOUSE_MANIFEST)) or "{}")
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}


def safe_name(name):
    return isinstance(name, str) and name == os.path.basename(name) and not name.startswith(".") and name


def wheels():
    d = wheel_dir()
    want, have = REQ["files"], manifest(d)
    for name in os.listdir(d):
        if name != WHEELHOUSE_MANIFEST and name not in want:
            os.unlink(os.path.join(d, name))
            have.pop(name, None)
    missing = []
    for name, (size, digest) in sorted(want.items()):
        if not safe_name(name):
            raise UnsafeState("bad wheel name %r" % (name,))
        try:
            st = os.lstat(os.path.join(d, name))
            ok = stat.S_ISREG(st.st_mode) and st.st_size == size and have.get(name) == [size, digest]
        except FileNotFoundError:
            ok = False
        if not ok:
            missing.append(name)
            have.pop(name, None)
    write_private(os.path.join(d, WHEELHOUSE_MANIFEST), json.dumps(have))
    return {"dir": d, "missing": missing}


def wheels_put():
    """The missing wheels, as one tar stream on stdin (read as it comes, never held whole): each
    member is written to a fresh file, its size and sha256 checked against the request, then
    renamed in. A member the request does not name is refused."""
    import tarfile
    d, want = wheel_dir(), REQ["files"]
    have, got = manifest(d), []
    with tarfile.open(fileobj=sys.stdin.buffer, mode="r|") as tar:
        for member in tar:
            name = member.name
            if not safe_name(name) or name not in want or not member.isfile():
                return {"refused": "unexpected member %r in the wheel stream" % (name,)}
            size, digest = want[name]
            path = os.path.join(d, name)
            tmp = "%s.%d.tmp" % (path, os.getpid())
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            h, n, src = hashlib.sha256(), 0, tar.extractfile(member)
            try:
                while True:
                    block = src.read(CHUNK)
                    if not block:
                        break
                    h.update(block)
                    n += len(block)
                    os.write(fd, block)
            finally:
                os.close(fd)
            if n != size or h.hexdigest() != digest:
                os.unlink(tmp)
                return {"refused": "%s: received %d bytes with sha256 %s, expected %d bytes with %s"
                                   % (name, n, h.hexdigest()[:16], size, digest[:16])}
            os.replace(tmp, path)
            have[name] = [size, digest]
            got.append(name)
    write_private(os.path.join(d, WHEELHOUSE_MANIFEST), json.dumps(have))
    missing = sorted(set(want) - set(got))
    if missing:
        return {"refused": "the wheel stream ended before %s" % ", ".join(missing)}
    return {"ok": True, "count": len(got)}


def remove_tree(path):
    if os.path.lexists(path):
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)


def recover(venv):
    """An earlier provision that died between swap_in and finish: keep the verified venv (it has
    its marker), else put the old one back."""
    old = venv + OLD_SUFFIX
    if not os.path.isdir(old) or os.path.islink(old):
        return
    if os.path.isfile(os.path.join(venv, VENV_MARKER)):
        remove_tree(old)
        return
    remove_tree(venv)
    os.rename(old, venv)


def swap_in():
    venv, owner = venv_path(), REQ["owner"]
    old = venv + OLD_SUFFIX
    try:
        recover(venv)
        moved = False
        if os.path.lexists(venv):
            st = os.lstat(venv)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
                return {"refused": "%s is a link or a file, not a venv: refusing to replace it; remove it or point "
                                   "`python` elsewhere" % venv, "needs_root": False}
            if os.listdir(venv) and not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
                return {"refused": "%s holds files but is no venv (no pyvenv.cfg): refusing to replace it; move it "
                                   "away or point `python` elsewhere" % venv, "needs_root": False}
            os.rename(venv, old)
            moved = True
        os.mkdir(venv, 0o755)
        os.chmod(venv, 0o755)
        if os.getuid() == 0 and owner != "root":
            pw = pwd.getpwnam(owner)
            os.chown(venv, pw.pw_uid, pw.pw_gid)
        return {"moved_aside": moved}
    except PermissionError as e:
        return {"refused": "%s: %s (as %s)" % (e.filename, e.strerror, USER), "needs_root": os.getuid() != 0}


def tail(text, n=8):
    return "\n".join(text.strip().splitlines()[-n:])


def failed_requirement(text):
    """The requirement pip names in its error, if it names one (a hash mismatch names the package
    whose bytes differ from the lock; a dependency missing from the lock, the one pip wanted)."""
    for pattern in (r"DO NOT MATCH THE HASHES.*?\n\s+(\S+) from ", r"must have their versions pinned with ==\. "
                    r"These do not:\s*\n\s+(\S+)", r"but they are missing from some requirements.*?\n\s+(\S+)",
                    r"No matching distribution found for (\S+)", r"satisfies the requirement (\S+)",
                    r"Cannot install (.+?) because", r"Failed to build (\S+)", r"ERROR: (\S+) has requirement"):
        m = re.search(pattern, text, re.S)
        if m:
            return m.group(1)
    return None


LOCK_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
LOCK_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
LOCK_MARKER_RE = re.compile(r"^[A-Za-z0-9_.<>=!~'\" ()-]*$")


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_lines(lock):
    """The lock as pip's requirements lines; an entry that could smuggle a pip option in is refused."""
    lines = []
    for entry in lock:
        name, version, hashes, marker = entry
        if (not LOCK_NAME_RE.match(name) or not LOCK_VERSION_RE.match(version) or not hashes
                or not all(isinstance(h, str) and re.match(r"^[0-9a-f]{64}$", h) for h in hashes)
                or (marker and (not LOCK_MARKER_RE.match(marker) or re.search(r"(^|\s)-", marker)))):
            raise UnsafeState("refusing a malformed lock entry %r" % (entry,))
        lines.append("%s==%s%s %s" % (name, version, " ; " + marker if marker else "",
                                       " ".join("--hash=sha256:" + h for h in hashes)))
    return lines


def lock_problem(lock, requirements, wheelhouse):
    """Why pip must not run: a pin the lock lacks, or a wheel of the wheelhouse whose sha256 the
    lock does not list ({"failed", "package", "stage": "lock check"}); None when they agree."""
    locked = {canonical(e[0]): e for e in lock}
    for req in requirements:
        name, _, version = req.partition("==")
        e = locked.get(canonical(name))
        if e is None or e[1] != version:
            return {"failed": "%s is not in the lock (it locks %s)" % (req, "%s==%s" % (e[0], e[1]) if e else
                                                                         "no %s" % name),
                    "package": req, "stage": "lock check"}
    for name in sorted(os.listdir(wheelhouse) if wheelhouse else []):
        if not name.endswith(".whl"):
            continue
        parts = name[:-4].split("-")
        e = locked.get(canonical(parts[0]))
        if e is None:
            continue   # never installed: pip takes only what the lock names
        path = os.path.join(wheelhouse, name)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
        if h.hexdigest() not in e[2]:
            return {"failed": "%s==%s: %s has sha256 %s, the lock says %s" % (e[0], parts[1], path, h.hexdigest()[:16],
                                                                          ", ".join(x[:16] for x in e[2])),
                    "package": e[0], "stage": "lock check"}
    return None


def pip_env(environ):
    """pip's environment: no PIP_* nor PYTHON* variable of the node, and no pip.conf at all."""
    env = {k: v for k, v in environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull   # skips the global, user and site pip.conf (pip's own rule)
    return env


def pip_argv(py, source, requirements_file):
    """`pip install` of exactly the lock: isolated, wheels only, every file checked by sha256."""
    argv = [py, "-I", "-m", "pip", "install", "--isolated", "--no-input", "--disable-pip-version-check",
            "--progress-bar", "off", "--only-binary=:all:", "--require-hashes"]
    if source.get("wheelhouse"):
        argv += ["--no-index", "--find-links", source["wheelhouse"]]
    return argv + ["-r", requirements_file]


def requirements_text(source, lock, secret):
    """The requirements file: the index (credentials in it, never on a command line) and the lock."""
    head = []
    if not source.get("wheelhouse"):
        url = source["index_url"]
        if not url.startswith("https://"):
            raise UnsafeState("refusing the index %s: only https" % url)
        if secret:
            user, _, password = secret.partition(":")
            parts = urllib.parse.urlsplit(url)
            netloc = "%s:%s@%s" % (urllib.parse.quote(user, safe=""), urllib.parse.quote(password, safe=""),
                                   parts.netloc)
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        head = ["--index-url " + url]
    return "\n".join(head + lock_lines(lock)) + "\n"


def build():
    venv = venv_path()
    py = os.path.join(venv, "bin", "python")
    started = time.monotonic()
    source, lock = REQ["source"], REQ["lock"]
    refused = lock_problem(lock, REQ["requirements"], source.get("wheelhouse"))
    if refused:   # before the venv: nothing is built from wheels the lock does not vouch for
        return refused
    os.umask(0o022)
    p = subprocess.run([sys.executable, "-m", "venv", venv], capture_output=True, text=True)
    if p.returncode != 0:
        return {"failed": "`%s -m venv %s` failed: %s" % (sys.executable, venv, tail(p.stderr + p.stdout, 3)),
                "package": None, "stage": "venv"}
    secret = "" if source.get("wheelhouse") else sys.stdin.read().strip()
    # the requirements file holds the index password: 0600 in the private state dir, gone after pip
    reqs = os.path.join(state_dir(REQ["cluster"]), "pip-lock.txt")
    write_private(reqs, requirements_text(source, lock, secret))
    argv = pip_argv(py, source, reqs)
    shown = {"argv": argv, "config_file": os.devnull}
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=pip_env(os.environ))
    finally:
        os.unlink(reqs)
    if p.returncode != 0:
        text = p.stderr + p.stdout
        return {"failed": "pip install failed: %s" % tail(p.stderr or p.stdout, 6),
                "package": failed_requirement(text), "stage": "pip", "pip": shown}
    check = REQ["check"]
    probe = ("import importlib.metadata as m, json, sys\n"
             "v = {d: m.version(d) for d in json.loads(sys.argv[1])}\n"
             "import secretflow\n"
             "if 'ray' in json.loads(sys.argv[1]): import ray\n"
             "print(json.dumps(v))\n")
    p = subprocess.run([py, "-c", probe, json.dumps(sorted(check))], capture_output=True, text=True)
    if p.returncode != 0:
        return {"failed": "the new venv does not import its pins: %s" % tail(p.stderr, 3), "package": None,
                "stage": "verify"}
    versions = json.loads(p.stdout.strip().splitlines()[-1])
    wrong = ["%s %s (wanted %s)" % (d, versions.get(d), v) for d, v in sorted(check.items()) if versions.get(d) != v]
    if wrong:
        return {"failed": "installed versions differ from the pins: %s" % ", ".join(wrong),
                "package": wrong[0].split()[0], "stage": "verify"}
    marker = dict(REQ["marker"], versions=versions, built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    with open(os.path.join(venv, VENV_MARKER), "w") as f:
        f.write(json.dumps(marker))
    return {"versions": versions, "seconds": round(time.monotonic() - started, 1), "pip": shown}


def finish():
    venv = venv_path()
    old = venv + OLD_SUFFIX
    if REQ["ok"]:
        remove_tree(old)
        return {"restored": False}
    remove_tree(venv)
    if os.path.isdir(old) and not os.path.islink(old):
        os.rename(old, venv)
        return {"restored": True}
    return {"restored": False}


ACTIONS = {"inspect": inspect, "wheels": wheels, "wheels_put": wheels_put, "swap_in": swap_in, "build": build,
           "finish": finish}
if __name__ == "__main__":
    print_answer(ACTIONS[REQ["action"]])
