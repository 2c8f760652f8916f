# Runs on a node, as the user Ray runs as: each party's data
# files, named by the inventory's `data:` (name -> path on this node). argv[1]: a JSON request
#   {"cluster", "action": "check", "files": {name: path}}
#     -> {"files": {name: {"path", "size", "sha256", "cached"} | {"path", "error"}}}
#   {"cluster", "action": "put", "name", "path", "size", "sha256"[, "probe": true]} and, unless
#   probing (is this file already there?), the file's bytes on stdin
#     -> {"path", "size", "sha256", "unchanged": bool, "hashed": bool} or {"refused": why}
# A digest is cached in the state dir by path and (device, inode, size, mtime_ns, ctime_ns): a large
# file is read once, not at every `check`. mtime alone can be put back (os.utime, touch -d, tar -x)
# after a same-size edit; ctime cannot, short of root setting the clock. `check` says when a digest
# came from the cache; `put` never answers "unchanged" from it: it reads the target through first
# ("hashed": true), so a push never skips a file that differs. `put` writes a fresh file next to the target (O_EXCL, 0600: the party's data is
# private), checks size and sha256 of what arrived, then renames it over the target; a target that
# is a link or not a regular file is refused, never written through.
import hashlib
import json
import os
import pwd
import stat
import sys
import threading
import time

from sfcluster.nodescripts.contract import DATA_BEAT, DATA_BEAT_EVERY
from sfcluster.nodescripts.nodestate import UnsafeState, print_answer, read_private, state_dir, write_private

REQ = json.loads(sys.argv[1]) if __name__ == "__main__" else {}


def _beat():
    """A sign of life on stderr while a large file is read or received (DATA_BEAT, contract.py):
    the controller tells a node that works from one that is stuck by it."""
    while True:
        time.sleep(DATA_BEAT_EVERY)
        try:
            sys.stderr.write(DATA_BEAT + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            return


CACHE_NAME = "data-digests.json"
CHUNK = 1 << 20


def cache_path():
    return os.path.join(state_dir(REQ["cluster"]), CACHE_NAME)


def load_cache():
    try:
        data = json.loads(read_private(cache_path()) or "{}")
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}


def sha256_of(fd):
    h = hashlib.sha256()
    while True:
        block = os.read(fd, CHUNK)
        if not block:
            return h.hexdigest()
        h.update(block)


def cache_key(st):
    """What must all be the same for a cached digest to stand for the file: a same-size edit moves
    ctime even when mtime is put back; a file swapped in (rename) has another inode."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def digest(path, cache, trust_cache=True):
    """(size, sha256, cached) of the regular file at `path`, or raise OSError/ValueError. With
    trust_cache False the file is read whatever the cache says (and the cache updated)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        key = cache_key(st)
        hit = cache.get(path)
        if trust_cache and isinstance(hit, dict) and hit.get("key") == key and isinstance(hit.get("sha256"), str):
            return st.st_size, hit["sha256"], True
        value = sha256_of(fd)
        after = os.fstat(fd)
        if cache_key(after) == key:  # not written to while it was read: the digest stands for it
            cache[path] = {"key": key, "sha256": value}
        else:
            cache.pop(path, None)
        return st.st_size, value, False
    finally:
        os.close(fd)


def check():
    cache, out = load_cache(), {}
    for name, path in sorted(REQ["files"].items()):
        try:
            size, value, cached = digest(path, cache)
            out[name] = {"path": path, "size": size, "sha256": value, "cached": cached}
        except FileNotFoundError:
            out[name] = {"path": path, "error": "missing"}
        except PermissionError:
            out[name] = {"path": path, "error": "not readable by %s" % USER}
        except (OSError, ValueError) as e:
            out[name] = {"path": path, "error": str(getattr(e, "strerror", None) or e)}
    write_private(cache_path(), json.dumps(cache))
    return {"files": out}


def put():
    path, want, size = REQ["path"], REQ["sha256"], int(REQ["size"])
    if not os.path.isabs(path):
        return {"refused": "%s is not an absolute path" % path}
    cache = load_cache()
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            return {"refused": "%s is a link or not a regular file: refusing to write through it; remove it first" % path}
        if REQ.get("probe"):  # "unchanged" only from the target's bytes, read now, never the cache
            have_size, have, _ = digest(path, cache, trust_cache=False)
            write_private(cache_path(), json.dumps(cache))
            if have_size == size and have == want:
                return {"path": path, "size": size, "sha256": want, "unchanged": True, "hashed": True}
    except FileNotFoundError:
        pass
    if REQ.get("probe"):                         # only asked whether the bytes are needed
        return {"path": path, "unchanged": False}
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    tmp = "%s.sfc-%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    h, n = hashlib.sha256(), 0
    try:
        while True:
            block = sys.stdin.buffer.read(CHUNK)
            if not block:
                break
            h.update(block)
            n += len(block)
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    if n != size or h.hexdigest() != want:
        os.unlink(tmp)
        return {"refused": "received %d bytes with sha256 %s, expected %d bytes with %s: nothing was replaced"
                         % (n, h.hexdigest()[:16], size, want[:16])}
    os.replace(tmp, path)
    cache[path] = {"key": cache_key(os.lstat(path)), "sha256": want}
    write_private(cache_path(), json.dumps(cache))
    return {"path": path, "size": size, "sha256": want, "unchanged": False}


def put_or_refuse():
    """put(), with a file-system error (a parent not writable, a full disk) as the answer's
    `refused`: the state dir's own problems alone come back as `error`."""
    try:
        return put()
    except UnsafeState:
        raise
    except OSError as e:
        out = {"refused": "%s: %s (as %s)" % (e.filename or REQ.get("path"), e.strerror or e, USER)}
        if isinstance(e, PermissionError):  # what to do: the file's dir, which the Ray user may not make or write
            parent = os.path.dirname(REQ["path"])
            out.update(denied_dir=parent, dir_exists=os.path.isdir(parent), user=USER)
        return out


USER = pwd.getpwuid(os.getuid()).pw_name
if __name__ == "__main__":
    threading.Thread(target=_beat, daemon=True).start()
    print_answer(lambda: check() if REQ.get("action") == "check" else put_or_refuse())
