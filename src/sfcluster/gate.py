"""The TLS-only door of a public link port (SPU, or production mode's cross-silo), in front of a
link that listens on a unix socket only the user Ray runs as reaches.

Why: brpc, under SPU's link and SecretFlow's cross-silo link alike, serves TLS *and* clear text on
the same port, and the link options have no way to refuse clear text (SPU 0.9's link.Desc has no
force_ssl). Measured on the harness: another user of a peer node, with no certificate at all,
POSTed in clear text to /org.interconnection.link.ReceiverService/Push on a party's SPU port and
got 200 (a message pushed into the link; the cross-silo link unpickles what it receives), while TLS
clients without a certificate of the cluster were refused. So the link listens on a unix socket in
a directory that is the Ray user's alone, and a Gate holds the public port: it passes a connection
on to the link only when its first byte opens a TLS handshake, byte for byte (brpc still does the
mutual TLS: the peer's certificate is checked against the cluster's CA there); anything else is
closed at once, unanswered.

Two homes, one text: production mode's driver wrapper holds its party's two ports with it (the
wrapper's node script is this file's text before nodescripts/driver_wrapper.py); in simulation
mode runtime.py starts one Gate per party as a Ray actor on that party's node (SpuDoor), right
after sf.init, before any SPU runtime listens. Python 3.10, stdlib only, no imports at import time
beyond these (it is shipped beside runtime.py and pasted into the wrapper).
"""
import os
import socket
import stat
import threading
import time

TLS_HANDSHAKE = 0x16   # the first byte of every TLS connection (a handshake record)
GATE_FIRST_BYTE_WAIT = 10
GATE_INNER_WAIT = 10  # seconds a TLS client waits at the gate for the link behind it to listen


class Gate:
    """One public port (bind, port) in front of the unix socket `inner`."""

    def __init__(self, name, bind, port, inner):
        self.name, self.inner = name, inner
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, port))
        self.sock.listen(128)
        self.refused = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        up = None
        try:
            conn.settimeout(GATE_FIRST_BYTE_WAIT)
            first = conn.recv(1, socket.MSG_PEEK)
            if not first or first[0] != TLS_HANDSHAKE:
                self.refused += 1
                return
            conn.settimeout(None)
            up = self.connect_inner()
            if up is None:
                return
            back = threading.Thread(target=self.pipe, args=(up, conn), daemon=True)
            back.start()
            self.pipe(conn, up)
            back.join()
        except OSError:
            pass
        finally:
            for s in (conn, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def connect_inner(self):
        """The link's unix socket; a peer that comes before this party's link listens (every party
        starts at once) waits for it up to GATE_INNER_WAIT instead of being cut off (brpc then logs
        "SSL connection was shutdown by peer" on the peer and retries)."""
        deadline = time.monotonic() + GATE_INNER_WAIT
        while True:
            up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                up.connect(self.inner)
                return up
            except (FileNotFoundError, ConnectionRefusedError):
                up.close()
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.05)

    @staticmethod
    def pipe(src, dst):
        try:
            while True:
                data = src.recv(262144)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def private_socket_path(root, name):
    """`root`/`name`, for a link's unix socket: `root` must be a directory of this user's alone
    (lstat: ours, a directory, not a link, mode 0700), as the cluster's temp root is on every node
    (`up` makes it so before Ray starts); a stale socket of an earlier run is removed. Raises
    OSError naming the path otherwise."""
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError("%s is not a directory of uid %d alone (mode 0700): the SPU's socket will not go there"
                      % (root, os.getuid()))
    path = os.path.join(root, name)
    if len(path) > 100:
        raise OSError("the unix socket path %s is too long (over 100 bytes)" % path)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    return path


class SpuDoor:
    """Simulation mode, tls on: a party's SPU gate, as a Ray actor on that party's node (runtime.py
    makes it a Ray actor class and keeps its handle for the driver's life: Ray ends it with the
    driver's job). `where()` answers once the public port is held, or raises why not."""

    def __init__(self, party, bind, port, root, name):
        self.party = party
        self.inner = private_socket_path(root, name)
        self.gate = Gate("spu", bind, int(port), self.inner)

    def where(self):
        return {"party": self.party, "host": socket.gethostname(), "inner": self.inner}

    def refused(self):
        return self.gate.refused
