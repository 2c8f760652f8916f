# Runs on a node: connect to each target and say how it went. argv[1]: JSON
# {"timeout": s, "targets": [[key, addr, port], ...]}. Prints {key: "ok"|"refused"|"timeout"|"error: ..."}.
import json
import socket
import sys
import threading



def probe(out, timeout, key, addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
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


def main(req):
    out = {}
    threads = [threading.Thread(target=probe, args=(out, req.get("timeout", 2.0), *t)) for t in req["targets"]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
