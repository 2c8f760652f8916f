# Runs on the head, as the Ray user: what is left of a run once its driver
# has ended. argv[1]: {"cluster", "action": "fetch" | "clean", ...}.
#  fetch {run_id, max_bytes, log_bytes, max_files}: a tar on stdout of the run's output dir (output/...),
#    its log (driver.log, the last log_bytes) and result.json; then "SFC:FETCHED {json}" as the
#    last stderr line: {files, bytes, skipped: [[path, why]], refused, active, missing}.
#    Everything in the run dir is in reach of the driver (the same user): a link is never
#    followed (every open is O_NOFOLLOW, relative to a directory descriptor already checked),
#    only regular files and directories are sent, and outputs above max_bytes or max_files are
#    refused whole (the log and result still come), never cut.
#  clean {fetched, keep_runs, max_age, temp_dir, keep_sessions}: under the cluster lock (taken
#    here, never waited for: skipped when held), mark `fetched` as stored, remove old run dirs
#    and Ray's old session dirs of this cluster. Prints one JSON object (print_answer).
import fcntl
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import time

from sfcluster.nodescripts.contract import (
    BAD_EXIT, CONTROL_PREFIX, FETCHED, FETCHED_MARK, LOG_NAME, OUTPUT_DIR, RESULT_NAME)
from sfcluster.nodescripts.nodestate import (
    RUN_ID, UnsafeState, is_wrapper_of, open_lock, print_answer, private_dir, read_lock_info, run_dir, state_dir,
    write_private)

REQ = json.loads(sys.argv[1]) if __name__ == "__main__" else {}  # (unit tests load the planners)
MAX_DEPTH = 32
SESSION = re.compile(r"^session_[0-9]{4}-[0-9]{2}-[0-9]{2}_[0-9]{2}-[0-9]{2}-[0-9]{2}_[0-9]+_[0-9]+$")


def open_dir(name, dir_fd=None):
    """A descriptor on directory `name` (relative to dir_fd), never through a link."""
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)


def scan(dir_fd, prefix, files, skipped, depth=0):
    """(relative path, size) of every regular file under dir_fd; links and others in `skipped`."""
    for name in sorted(os.listdir(dir_fd)):
        rel = prefix + name
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            skipped.append([rel, "a symbolic link (never followed)"])
        elif stat.S_ISREG(st.st_mode):
            files.append((rel, st.st_size))
        elif stat.S_ISDIR(st.st_mode) and depth < MAX_DEPTH:
            fd = open_dir(name, dir_fd)
            try:
                scan(fd, rel + "/", files, skipped, depth + 1)
            finally:
                os.close(fd)
        else:
            skipped.append([rel, "not a regular file or directory" if depth < MAX_DEPTH else "nested too deep"])


def open_file(root_fd, rel):
    """rel (a/b/c) under root_fd, opened component by component without following any link."""
    parts = rel.split("/")
    fd = root_fd
    try:
        for p in parts[:-1]:
            nfd = open_dir(p, fd)
            if fd != root_fd:
                os.close(fd)
            fd = nfd
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        if fd != root_fd:
            os.close(fd)


def add_file(tar, arcname, fd, skip_to=0):
    """Add the regular file open on fd (from byte skip_to); its size as fstat says, so that a file
    that changes under us gives a clear error instead of a bad archive."""
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return 0
        f.seek(skip_to)
        info = tarfile.TarInfo(arcname)
        info.size, info.mode, info.mtime = st.st_size - skip_to, 0o600, int(st.st_mtime)
        tar.addfile(info, f)
        return info.size


def is_active(state, run_id):
    """True while this run's wrapper runs (the lock info names it, and /proc shows that pid is
    ours running this run's wrapper). Never touches the lock: a run starting now is not disturbed."""
    info = read_lock_info(state) or {}
    return info.get("run_id") == run_id and is_wrapper_of(info.get("pid"), state, run_id, bool(info.get("detached")))


def fetch():
    summary = {"files": 0, "bytes": 0, "skipped": [], "refused": "", "active": False, "missing": False}
    run_dir("", REQ["run_id"])  # a bad run id is refused before anything is looked at
    state = state_dir(REQ["cluster"], create=False)
    rd = run_dir(state, REQ["run_id"]) if state else None
    if rd is None or private_dir(rd, create=False) is None:
        summary["missing"] = True
        return summary
    if is_active(state, REQ["run_id"]):
        summary["active"] = True
        return summary
    rd_fd = open_dir(rd)
    try:
        files = []
        try:
            out_fd = open_dir(OUTPUT_DIR, rd_fd)
        except FileNotFoundError:
            out_fd = None
        except OSError:
            out_fd = None
            summary["skipped"].append([OUTPUT_DIR, "not a directory (a link or a file is there)"])
        with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            if out_fd is not None:
                try:
                    scan(out_fd, "", files, summary["skipped"])
                    total = sum(size for _, size in files)
                    if total > REQ["max_bytes"]:
                        summary["refused"] = ("the outputs are %d bytes in %d files, above the limit of %d bytes"
                                              % (total, len(files), REQ["max_bytes"]))
                        files = []
                    elif len(files) > REQ.get("max_files", len(files)):  # the controller takes no more
                        summary["refused"] = ("the outputs are %d files, above the limit of %d files"
                                              % (len(files), REQ["max_files"]))
                        files = []
                    for rel, _ in files:
                        try:
                            fd = open_file(out_fd, rel)
                        except OSError as e:
                            summary["skipped"].append([rel, "cannot open: %s" % e.strerror])
                            continue
                        summary["bytes"] += add_file(tar, OUTPUT_DIR + "/" + rel, fd)
                        summary["files"] += 1
                finally:
                    os.close(out_fd)
            for name, keep in ((LOG_NAME, REQ["log_bytes"]), (RESULT_NAME, 65536)):
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=rd_fd)
                except OSError:
                    continue
                size = os.fstat(fd).st_size
                summary["log_truncated" if name == LOG_NAME else "result_truncated"] = size > keep
                add_file(tar, name, fd, skip_to=max(0, size - keep))
    finally:
        os.close(rd_fd)
    return summary


NEVER_STARTED_AGE = 3600  # a run dir without a log this old: its run was refused (lock held, no Ray)


def plan_run_cleanup(runs, keep, max_age, now):
    """Which run dirs to remove: [(run_id, mtime, fetched, started)] -> [run_id]. The newest `keep`
    (by run id: its start time) stay; an older one goes once its outputs were fetched, when its
    driver never started (and an hour passed), or when it is older than max_age seconds (an
    unfetched detached run is kept that long)."""
    newest_first = sorted(runs, key=lambda r: r[0], reverse=True)
    return [run_id for run_id, mtime, fetched, started in newest_first[max(keep, 1):]
            if fetched or (not started and now - mtime > NEVER_STARTED_AGE) or now - mtime > max_age]


def plan_session_cleanup(sessions, live, in_use, keep):
    """Which of Ray's session dirs to remove: never the live one (session_latest) nor one a
    process still uses; of the others, the newest `keep` stay (the last Ray's logs)."""
    old = sorted((s for s in sessions if s != live and s not in in_use), reverse=True)
    return old[keep:]


def sessions_in_use(names):
    """The session names that appear on a live process's command line (Ray's processes name
    their session dir there), whoever that process belongs to."""
    used = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().decode(errors="replace")
        except OSError:
            continue
        used.update(n for n in names if n in argv)
    return used


def clean_sessions(temp_dir, keep):
    """Remove Ray's old session dirs under the cluster's temp dir (/tmp/sfc-<cluster>): only real
    directories of ours with Ray's session name, never through a link."""
    out = {"sessions_removed": [], "sessions_kept": []}
    if not re.match(r"^/tmp/sfc-[a-z][a-z0-9_]{0,30}/r$", temp_dir or ""):
        out["sessions_error"] = "bad temp dir %r" % (temp_dir,)
        return out
    try:
        root = os.lstat(os.path.dirname(temp_dir))  # the private parent up made (Cluster.temp_root)
        st = os.lstat(temp_dir)
    except FileNotFoundError:
        return out
    if not stat.S_ISDIR(root.st_mode) or root.st_uid != os.getuid() or root.st_mode & 0o077:
        out["sessions_error"] = "%s is not a private directory of ours; left alone" % os.path.dirname(temp_dir)
        return out
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        out["sessions_error"] = "%s is not a directory of ours; left alone" % temp_dir
        return out
    try:
        live = os.path.basename(os.readlink(os.path.join(temp_dir, "session_latest")))
    except OSError:
        live = None
    names = []
    for n in os.listdir(temp_dir):
        if not SESSION.match(n):
            continue
        s = os.lstat(os.path.join(temp_dir, n))
        if stat.S_ISDIR(s.st_mode) and s.st_uid == os.getuid():
            names.append(n)
    gone = plan_session_cleanup(names, live, sessions_in_use(names), keep)
    for n in gone:
        shutil.rmtree(os.path.join(temp_dir, n), ignore_errors=True)  # fd-based: never follows a link
    out["sessions_removed"] = gone
    out["sessions_kept"] = sorted(set(names) - set(gone))
    return out


def clean():
    state = state_dir(REQ["cluster"], create=False)
    if state is None:
        return {"cleaned": False, "why": "no state dir"}
    fd = open_lock(state)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return {"cleaned": False, "why": "the cluster lock is held (a run, an up or a down): cleaned next time"}
        runs_dir = os.path.join(state, "runs")
        private_dir(runs_dir, create=False)
        if REQ.get("fetched"):
            rd = run_dir(state, REQ["fetched"])
            if private_dir(rd, create=False) is not None:
                write_private(os.path.join(rd, FETCHED_MARK), "")
        runs = []
        for n in os.listdir(runs_dir):
            p = os.path.join(runs_dir, n)
            st = os.lstat(p)
            if RUN_ID.fullmatch(n) and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                runs.append((n, st.st_mtime, os.path.lexists(os.path.join(p, FETCHED_MARK)),
                             os.path.lexists(os.path.join(p, LOG_NAME))))
        gone = plan_run_cleanup(runs, REQ["keep_runs"], REQ["max_age"], time.time())
        for n in gone:
            shutil.rmtree(os.path.join(runs_dir, n), ignore_errors=True)
        out = {"cleaned": True, "runs_removed": sorted(gone), "runs_kept": len(runs) - len(gone)}
        out.update(clean_sessions(REQ.get("temp_dir"), REQ["keep_sessions"]))
        return out
    finally:
        os.close(fd)


if __name__ == "__main__":
    if REQ.get("action") == "fetch":
        try:
            s = fetch()
        except (UnsafeState, OSError, tarfile.TarError) as e:
            s = {"error": str(e)}
        sys.stdout.flush()
        sys.stderr.write("%s%s %s\n" % (CONTROL_PREFIX, FETCHED, json.dumps(s)))
        sys.exit(BAD_EXIT if "error" in s else 0)
    print_answer(clean)
