# Runs on a node: connect to each target and say how it went. argv[1]: JSON
# {"timeout": s, "targets": [[key, addr, port], ...]}. Prints {key: "ok"|"refused"|"timeout"|"error: ..."}.
import json
import socket
import sys
import threading

req = json.loads(sys.argv[1])
out = {}


def probe(key, addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(req.get("timeout", 2.0))
    try:
        s.connect((addr, port))
        out[key] = "ok"
    except socket.timeout:
        out[key] = "timeout"
    except ConnectionRefusedError:
        out[key] = "refused"
    except OSError as e:
        out[key] = "error: %s" % e
    finally:
        s.close()


threads = [threading.Thread(target=probe, args=t) for t in req["targets"]]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
