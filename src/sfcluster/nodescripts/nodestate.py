# The node side of a cluster's private state (imported by the node scripts that need it; Python
# 3.10, stdlib only). Everything a guarantee depends on (the cluster-wide lock, the lock info, the
# run dirs) lives in ~/.sfcluster/<cluster> of the user Ray runs as: 0700, checked with lstat
# before use, never in Ray's temp dir (/tmp/sfc-<cluster>/r, which Ray makes world-writable) nor
# anywhere another local user can plant, delete or lock a file.
#  - the lock is an flock on the cluster's state DIRECTORY itself: nobody else can open it, and
#    it cannot be deleted (nor swapped) while runs/ is in it;
#  - files are created with O_EXCL|O_NOFOLLOW and replaced atomically, never followed as links.
import errno
import json
import os
import pwd
import re
import stat
import sys
import time

from sfcluster.nodescripts.contract import BAD_EXIT, ENV_NODE_HOME, HEARTBEAT_SILENCE, RUN_ID_PATTERN, WRAPPER_NAME

RUN_ID = re.compile(RUN_ID_PATTERN)


class UnsafeState(Exception):
    pass


def home_dir():
    # ENV_NODE_HOME (contract.py): for the unit tests that run these scripts on the controller
    return os.environ.get(ENV_NODE_HOME) or pwd.getpwuid(os.getuid()).pw_dir


def private_dir(path, create=True):
    """The directory at `path`, made 0700 if missing; refuse a link, a non-directory, another
    owner, or a mode that lets anyone else in."""
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafeState("%s is not a directory (a link or a file is there); remove it" % path)
    if st.st_uid != os.getuid():
        raise UnsafeState("%s belongs to uid %d, not to us (uid %d); remove it" % (path, st.st_uid, os.getuid()))
    if st.st_mode & 0o077:
        raise UnsafeState("%s has mode %o: others can get in; chmod 700 it after checking its contents"
                          % (path, stat.S_IMODE(st.st_mode)))
    return path


def state_dir(cluster, create=True):
    """~/.sfcluster/<cluster>, private all the way down; None when it does not exist (create=False)."""
    if not re.match(r"^[a-z][a-z0-9_]{0,30}$", cluster):
        raise UnsafeState("bad cluster name %r" % cluster)
    base = private_dir(os.path.join(home_dir(), ".sfcluster"), create)
    if base is None:
        return None
    d = private_dir(os.path.join(base, cluster), create)
    if d is not None and create:
        private_dir(os.path.join(d, "runs"), True)
    return d


def run_dir(state, run_id):
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise UnsafeState("bad run id %r" % (run_id,))
    return os.path.join(state, "runs", run_id)


def open_lock(state):
    """A descriptor on the state directory itself, to flock."""
    return os.open(state, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def write_private(path, data):
    """Write `path` (0600) atomically: a fresh file (O_EXCL|O_NOFOLLOW) renamed over it."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def read_private(path):
    """Text of a regular file of ours (never through a link); None when absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP):
            return None
        raise
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            return None
        return f.read()


def print_answer(main):
    """The one way a state-dir script answers: main()'s dict as ONE JSON line on stdout; an unsafe
    state dir (or an OSError) as {"error": why} and exit BAD_EXIT (nodescripts.answer() reads both)."""
    try:
        print(json.dumps(main()))
    except (UnsafeState, OSError) as e:
        print(json.dumps({"error": str(e)}))
        sys.exit(BAD_EXIT)


def lock_info_path(state):
    return os.path.join(state, "lock.json")


def read_lock_info(state):
    text = read_private(lock_info_path(state))
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def proc_status(pid):
    """{"uid": real uid, "ppid": parent pid, "comm": name, "state": "R", "S", "Z"...} of a process from /proc/<pid>/status,
    which every user may read (unlike the /proc/<pid> dir's owner, which is root for a process
    that made itself not dumpable, as the wrapper does); None when it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            fields = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        return {"uid": int(fields["Uid"].split()[0]), "ppid": int(fields["PPid"]), "comm": fields["Name"].strip(),
                "state": fields["State"].split()[0]}
    except (OSError, KeyError, ValueError, IndexError):
        return None


# What an SSH login's command (or `sudo -u <ray user>` inside it) has above it: a ROOT process of
# sshd or sudo that is not pid 1. The Ray user cannot make such a parent for a process of its own:
# a detached (setsid) child of a driver is reparented to pid 1 or to a subreaper, a Ray worker
# hangs under the raylet, a cron job under cron. Imitating a command line is easy; this is not.
LOGIN_PARENTS = ("sshd", "sshd-session", "sudo")


def started_by_login(pid):
    """True when `pid`'s ancestors, up to the first root sshd/sudo (not pid 1), are all of its own
    uid: how `sfcluster` starts its lock holders (an SSH exec, maybe through sudo -u)."""
    me = proc_status(pid)
    if me is None:
        return False
    cur = me["ppid"]
    for _ in range(64):
        if cur <= 1:
            return False
        st = proc_status(cur)
        if st is None:
            return False
        if st["uid"] == 0 and st["comm"] in LOGIN_PARENTS:
            return True
        if st["uid"] != me["uid"]:
            return False
        cur = st["ppid"]
    return False


def own_process(pid):
    """True when `pid` (from a file: anything) is a live process of ours, never pid 0, 1 or negative."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    st = proc_status(pid)
    return st is not None and st["uid"] == os.getuid()


def controller_gone(still_needed=lambda: True):
    """Block until the controller is gone: EOF on stdin, or HEARTBEAT_SILENCE s without its
    heartbeat (a line a second). True then; False when still_needed() turned false first."""
    import select
    last = time.monotonic()
    while still_needed():
        ready, _, _ = select.select([0], [], [], 1.0)
        if ready:
            try:
                data = os.read(0, 1024)
            except OSError:
                data = b""
            if not data:
                return True
            last = time.monotonic()
        elif time.monotonic() - last > HEARTBEAT_SILENCE:
            return True
    return False


def is_oplock_of(pid, cluster):
    """True only when `pid` is a process of ours running oplock.py for this cluster (an `up` or
    `down` holding the cluster lock) started by an SSH login (started_by_login)."""
    if not own_process(pid) or not started_by_login(pid):
        return False
    argv = cmdline(pid)
    # the mark as a line of its own: oplock.py's first line, not this file's constant
    if len(argv) < 4 or argv[1] != "-c" or "\n" + OPLOCK_MARK + "\n" not in argv[2]:
        return False
    try:
        return json.loads(argv[3]).get("cluster") == cluster
    except (ValueError, AttributeError):
        return False


OPLOCK_MARK = "# sfcluster-oplock: holds the cluster lock for one up/down"
HOLDER_KEYS = ("op", "user", "controller", "host", "since", "script", "run_id", "detached")


def describe_holder(state, cluster):
    """Who holds the cluster lock, from its lock info, VERIFIED: `verified` is true only when the
    pid named there is ours and is that run's wrapper (op run) or an oplock of this cluster (op
    up/down). Called only while somebody else holds the flock."""
    info = read_lock_info(state) or {}
    out = {"verified": False}
    for k in HOLDER_KEYS:
        if isinstance(info.get(k), (str, bool)):
            out[k] = info[k]
    out.setdefault("op", "run" if "run_id" in out else None)
    pid = info.get("pid")
    try:
        if out["op"] == "run":
            verified = is_wrapper_of(pid, state, info.get("run_id"), bool(info.get("detached")))
        else:
            verified = out["op"] in ("up", "down") and is_oplock_of(pid, cluster)
    except UnsafeState:
        verified = False
    if not verified:
        out["why"] = "the lock is held, but its info names no live holder of ours (starting, or tampered with)"
        return out
    out.update(verified=True, pid=pid)
    if out["op"] == "run":
        out["log"] = os.path.join(run_dir(state, info["run_id"]), "driver.log")
        driver_pid = info.get("driver_pid")
        if isinstance(driver_pid, int) and not isinstance(driver_pid, bool) and driver_pid > 1:
            out["driver_pid"] = driver_pid
    return out


def is_wrapper_of(pid, state, run_id, detached=False):
    """True only when `pid` is a process of ours running this run's wrapper file, started by an
    SSH login (started_by_login: a driver's detached child cannot pass for it). A detached run's
    wrapper left its login on purpose: it is recognised by its file alone, and `cancel` ends it
    with SIGKILL when SIGTERM does not, so an impostor posing as one is removed, not obeyed."""
    if not own_process(pid) or not (detached or started_by_login(pid)):
        return False
    want = os.path.join(run_dir(state, run_id), WRAPPER_NAME)
    return want in cmdline(pid)[1:3]
