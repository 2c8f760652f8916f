"""Production mode's driver launcher, shipped beside the script to every party's node (Python 3.10,
stdlib only): `python launch.py SCRIPT ARGS...` runs SCRIPT as __main__ and makes its exit final.

Why: SecretFlow's cross-silo layer (secretflow/distributed/fed, ray_mode=False) runs its receive,
send and cleanup work in threads that are not daemons. A party's driver that ends without
sf.shutdown() (an exception, sys.exit(3), a forgotten shutdown) therefore never exits: the
interpreter waits for those threads, and they wait for peers that wait for this party (measured on
the harness: a `sys.exit(3)` after sf.init hung until the peers' 600 s receive timeout). Here:
- the script failed (non-zero, or an uncaught exception): its traceback is printed and the process
  leaves at once with the script's own exit code; `sfcluster run` then stops the other parties;
- the script succeeded but left SecretFlow up: sf.shutdown() is called for it (the barrier with
  the peers it meant to reach), then it exits 0.
Every way out ends with os._exit, after the script's atexit functions and a flush of stdout and
stderr: the cross-silo link that sf.shutdown() let go of is never closed by its own handshake,
which races between the parties (sfcluster/runtime.py, _patch_brpc_link), and no destructor of
SecretFlow's C++ objects runs at interpreter exit.
"""
import atexit
import gc
import io
import os
import runpy
import sys
import traceback


def _fed_alive():
    gc = sys.modules.get("secretflow.distributed.fed.global_context")
    try:
        return gc is not None and gc.get_global_context(assert_none=False) is not None
    except Exception:  # noqa: BLE001 - a SecretFlow without this layer: nothing of it to wait for
        return False


def _flush_open_files():
    """What the interpreter's own exit would have written: every file the script left open and
    unflushed (os._exit skips the finalizers that would flush it)."""
    for obj in gc.get_objects():
        if isinstance(obj, io.IOBase):
            try:
                if not obj.closed and obj.writable():
                    obj.flush()
            except Exception:  # noqa: BLE001 - a file that cannot be flushed is as the interpreter would leave it
                pass


def main():
    script = os.path.abspath(sys.argv[1])
    sys.argv = [script] + sys.argv[2:]
    sys.path[0] = os.path.dirname(script)
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - what the interpreter would print, then the exit code it would give
        traceback.print_exc()
        code = 1
    if _fed_alive() and code == 0:
        import secretflow as sf
        try:
            sf.shutdown()
        except BaseException:  # noqa: BLE001 - the shutdown barrier failed: a peer did not end well
            traceback.print_exc()
            code = 1
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 - printed by atexit itself
        pass
    _flush_open_files()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code & 0xFF)


if __name__ == "__main__":
    main()
