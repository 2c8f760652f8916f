# The node side of a cluster's private state (prepended to the node scripts that need it; Python
# 3.10, stdlib only). Everything a guarantee depends on (the cluster-wide lock, the lock info, the
# run dirs) lives in ~/.sfcluster/<cluster> of the user Ray runs as: 0700, checked with lstat
# before use, never in Ray's temp dir (/tmp/sfc-<cluster>, which Ray makes world-writable) nor
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


def own_process(pid):
    """True when `pid` (from a file: anything) is a live process of ours, never pid 0, 1 or negative."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    try:
        return os.stat("/proc/%d" % pid).st_uid == os.getuid()
    except OSError:
        return False


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
    `down` holding the cluster lock)."""
    if not own_process(pid):
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
            verified = is_wrapper_of(pid, state, info.get("run_id"))
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


def is_wrapper_of(pid, state, run_id):
    """True only when `pid` is a process of ours running this run's wrapper file."""
    if not own_process(pid):
        return False
    want = os.path.join(run_dir(state, run_id), WRAPPER_NAME)
    return want in cmdline(pid)[1:3]
