# Runs on a node: listen briefly on the given ports so peers can test reachability.
# argv[1]: JSON [[addr, port], ...]. Prints "READY <json of the pairs bound>" then accepts and
# closes connections until stdin closes (the controller is done) or 30 s pass. Never lingers.
import json
import select
import socket
import sys
import time


def main(pairs):
    socks = []
    bound = []
    for addr, port in pairs:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
            s.listen(64)
            s.setblocking(False)
            socks.append(s)
            bound.append([addr, port])
        except OSError:
            s.close()  # busy: the real server (e.g. this cluster's Ray) answers instead
    print("READY " + json.dumps(bound), flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r, _, _ = select.select(socks + [sys.stdin], [], [], 0.5)
        if sys.stdin in r:
            if not sys.stdin.buffer.read1(1):
                break
        for s in r:
            if s is not sys.stdin:
                try:
                    c, _ = s.accept()
                    c.close()
                except OSError:
                    pass


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
