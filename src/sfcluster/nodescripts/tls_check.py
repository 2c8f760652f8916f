# Runs on a node: what `check` learns about the node's TLS
# files in <state dir>/TLS_DIR (TLS_KEY, TLS_CERT, TLS_CA, pushed there by remote/transfer.py). It
# only looks: each file must be a regular file of ours, not a link; the key 0600 and the key of the
# certificate. The certificates come back as text for the controller to verify (tls/pki.py
# verify_node_cert); the key never does. argv[1]: {"cluster"}. Prints one JSON object:
#   {"dir", "files": {name: {"exists", "mode", "owner_ok", "link"}}, "problems": [{"file", "message"}],
#    "key_matches", "cert_pem", "ca_pem"}
# A message reads after "<dir>/<file>: ". Exit 0, or BAD_EXIT with {"error"} when the state dir
# itself is not safe to use.
import json
import os
import ssl
import stat
import sys

from sfcluster.nodescripts.contract import TLS_CA, TLS_CERT, TLS_DIR, TLS_KEY
from sfcluster.nodescripts.nodestate import UnsafeState, print_answer, private_dir, read_private, state_dir

REQ = json.loads(sys.argv[1]) if __name__ == "__main__" else {}
TLS_FILES = (TLS_KEY, TLS_CERT, TLS_CA)
MAX_PEM = 64 * 1024  # a certificate is a few hundred bytes; anything this big is not one


def examine(path, name, problems):
    """The file's facts; a problem for each thing wrong with it. True when it is safe to read."""
    facts = {"exists": False, "mode": None, "owner_ok": False, "link": False}
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        problems.append({"file": name, "message": "missing"})
        return facts, False
    facts.update(exists=True, mode="%04o" % stat.S_IMODE(st.st_mode), owner_ok=st.st_uid == os.getuid(),
                 link=stat.S_ISLNK(st.st_mode))
    if facts["link"]:
        problems.append({"file": name, "message": "a symbolic link (never followed); remove it"})
        return facts, False
    if not stat.S_ISREG(st.st_mode):
        problems.append({"file": name, "message": "not a regular file; remove it"})
        return facts, False
    if not facts["owner_ok"]:
        problems.append({"file": name, "message": "belongs to uid %d, not to us (uid %d); remove it"
                                                  % (st.st_uid, os.getuid())})
        return facts, False
    if name == TLS_KEY and st.st_mode & 0o077:
        problems.append({"file": name, "message": "mode %s: others can read the node's private key; chmod 600 "
                                                  "it, and consider it leaked (issue a new one)" % facts["mode"]})
    return facts, True


def read_pem(path, name, problems):
    """The text of a certificate file of ours, or None (with a problem when it is not usable)."""
    try:
        text = read_private(path)
    except (OSError, ValueError) as e:  # ValueError: not text
        problems.append({"file": name, "message": "cannot be read: %s" % e})
        return None
    if text is not None and len(text) > MAX_PEM:
        problems.append({"file": name, "message": "%d bytes: too big to be a certificate" % len(text)})
        return None
    return text


def key_matches(tls, problems):
    """True when the key is the certificate's (OpenSSL's own check). Paths, not descriptors:
    load_cert_chain wants them; examine() found both regular files of ours in a 0700 dir of ours."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # a password, so that an encrypted key fails here instead of asking on a terminal
        ctx.load_cert_chain(os.path.join(tls, TLS_CERT), os.path.join(tls, TLS_KEY), password=b"")
    except (ssl.SSLError, OSError) as e:
        problems.append({"file": TLS_KEY, "message": "not a usable key for %s (the key of another certificate?): %s"
                                                     % (TLS_CERT, e)})
        return False
    return True


def main():
    out = {"dir": None, "files": {}, "problems": [], "key_matches": None, "cert_pem": None, "ca_pem": None}
    state = state_dir(REQ["cluster"], create=False)
    tls = os.path.join(state, TLS_DIR) if state is not None else None
    if tls is not None:
        try:
            tls = private_dir(tls, create=False)
        except UnsafeState as e:
            out["dir"] = os.path.abspath(os.path.join(state, TLS_DIR))
            out["problems"].append({"file": ".", "message": str(e)})
            tls = None  # never looked into
    if tls is None:
        for name in TLS_FILES:
            out["files"][name] = {"exists": False, "mode": None, "owner_ok": False, "link": False}
        if out["dir"] is None:
            out["problems"] += [{"file": name, "message": "missing (no certificates on this node yet)"}
                                for name in TLS_FILES]
        return out
    out["dir"] = os.path.abspath(tls)
    usable = {}
    for name in TLS_FILES:
        out["files"][name], usable[name] = examine(os.path.join(tls, name), name, out["problems"])
    if usable[TLS_CERT]:
        out["cert_pem"] = read_pem(os.path.join(tls, TLS_CERT), TLS_CERT, out["problems"])
    if usable[TLS_CA]:
        out["ca_pem"] = read_pem(os.path.join(tls, TLS_CA), TLS_CA, out["problems"])
    if usable[TLS_KEY] and usable[TLS_CERT]:
        out["key_matches"] = key_matches(tls, out["problems"])
    return out


if __name__ == "__main__":
    print_answer(main)
