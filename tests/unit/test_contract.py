"""The controller <-> node contract (nodescripts/contract.py) is the one source of its names:
the standalone runtime helper and the controller's exit-code mapping agree with it."""
from __future__ import annotations

import ast
from pathlib import Path

from sfcluster import runtime
from sfcluster.exitcodes import Exit
from sfcluster.nodescripts import contract as C
from sfcluster.nodescripts import bundle, source, wrapper
from sfcluster.run.driver import STOPPED_EXIT


def test_the_runtime_helper_uses_the_contracts_env_names():
    assert (runtime.ENV_CONFIG, runtime.ENV_TOKEN, runtime.ENV_LOCK, runtime.ENV_READY, runtime.ENV_GATE) == (
        C.ENV_CONFIG, C.ENV_RUN_TOKEN, C.ENV_LOCK_INFO, C.ENV_READY, C.ENV_GATE)


def test_node_exit_codes_are_their_own_never_one_of_sfclusters():
    node = (C.HELD_EXIT, C.FOREIGN_EXIT, C.NORAY_EXIT, C.UNSAFE_EXIT, C.BAD_EXIT)
    assert len(set(node)) == len(node) and not set(node) & {int(e) for e in Exit}
    assert set(STOPPED_EXIT) == set(C.STOP_KINDS)


def test_node_scripts_use_the_contract_not_literals():
    """No control kind, exit code or env name is spelled out again in the scripts that get the contract."""
    for name in ("driver_wrapper", "oplock", "run_ctl", "nodestate"):
        text = (Path(C.__file__).parent / f"{name}.py").read_text()
        strings = {n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        kinds = {C.BEAT, C.LOCKED, C.FOREIGN, C.NORAY, C.UNSAFE, C.STARTED, C.LINKING, C.READY, C.NOGATE, C.NODE_DOWN, C.STARVED, C.STOPPING, C.EXIT,
                 C.ENV_CONFIG, C.ENV_RUN_TOKEN, C.ENV_LOCK_INFO, C.ENV_READY, C.ENV_GATE, C.ENV_NODE_HOME, C.WRAPPER_NAME}
        assert not strings & kinds, (name, strings & kinds)
    compile(bundle("driver_wrapper"), "driver_wrapper", "exec")
    compile(wrapper(), "driver_wrapper", "exec")  # as shipped: with gate.py before it
    assert "class Gate" in wrapper() and "class Gate" not in source("driver_wrapper")


def _stall_clock():
    """driver_wrapper.py's StallClock: the wrapper is a module that acts only as __main__."""
    from sfcluster.nodescripts.driver_wrapper import StallClock
    return StallClock


def test_starvation_clock_survives_a_poll_without_the_demand():
    # a demand pending, one report without it, pending again: nothing changed all along, so the
    # party has waited since the first poll (the first version never fired after such a blip)
    clock = _stall_clock()(60)
    shape, fp = {(("CPU", 1.0), ("alice", 1.0)): 1}, ("node", (("alice", 998.0),))
    assert clock.update(shape, fp, 0) is False
    assert clock.update({}, fp, 2) is False
    fired = [t for t in range(4, 130, 2) if clock.update(shape, fp, t)]
    assert fired and fired[0] == 60


def test_starvation_clock_restarts_on_progress_and_ignores_an_idle_driver():
    clock = _stall_clock()(60)
    shape = {(("CPU", 1.0), ("bob", 1.0)): 1}
    assert not any(clock.update({}, "a", t) for t in range(0, 300, 2))      # nothing pending: never
    assert clock.update(shape, "a", 300) is False                           # the clock starts now
    assert clock.update(shape, "b", 350) is False                           # progress: restart
    assert clock.update(shape, "b", 409) is False and clock.update(shape, "b", 410) is True


# -- the one funnel for node calls (nodescripts.argv / run / call) -----------------------------------
def _node():
    from sfcluster.inventory import parse_inventory
    return parse_inventory("cluster: demo\npython: /opt/sf/bin/python\n"
                           "nodes:\n  a: {host: 10.0.0.1, root_python: /usr/bin/python3}\n  b: {host: 10.0.0.2}\n").node("a")


def test_each_script_ships_with_exactly_the_modules_it_imports():
    from sfcluster import nodescripts as N
    state = ["nodescripts.contract", "nodescripts.nodestate"]
    for script in ("oplock", "run_ctl", "run_files", "data_files", "tls_check", "tls_purge", "provision", "firewall_apply"):
        assert N.imports(script) == state, script
        compile(N.bundle(script), script, "exec")
    assert N.imports("driver_wrapper") == state + ["gate"]
    for script in ("probe", "gcs", "ray_stop", "reach_listen", "reach_connect"):
        assert N.imports(script) == []  # no state dir: nothing but the stdlib
    assert N.imports("nodestate") == ["nodescripts.contract"]


def test_a_shipped_script_s_traceback_names_its_own_file_and_line():
    import subprocess
    import sys
    from sfcluster import nodescripts as N
    p = subprocess.run([sys.executable, "-c", N.bundle("run_ctl"), "not json"], capture_output=True, text=True, timeout=30)
    line = next(i for i, text in enumerate(source("run_ctl").splitlines(), 1) if "json.loads(sys.argv[1])" in text)
    assert p.returncode != 0 and f'File "run_ctl.py", line {line}' in p.stderr, p.stderr
    # the modules it imports are there under their names, not pasted into its text
    p = subprocess.run([sys.executable, "-c", N.bundle("tls_purge"), '{"cluster": "x/../y"}'], capture_output=True,
                       text=True, timeout=30)
    assert '"error"' in p.stdout and "Traceback" not in p.stderr, p.stdout + p.stderr


def test_the_funnel_picks_the_interpreter_for_who_runs_the_script():
    import json
    from sfcluster import nodescripts as N
    node = _node()
    ray = N.argv(node, "run_ctl", {"cluster": "demo"})
    assert ray[0] == "/opt/sf/bin/python" and ray[1] == "-c" and json.loads(ray[3]) == {"cluster": "demo"}
    assert N.argv(node, "provision", {"action": "inspect"}, as_="base")[0] == node.base_python
    root = N.argv(node, "probe", {"x": 1}, as_="root")
    assert root[:2] == ["sh", "-c"] and root[3:6] == ["sh", "/usr/bin/python3", "root"]
    assert "/opt/sf/bin/python" not in root  # never the Ray user's venv for root
    assert root[root.index("-c", 3) + 1].startswith(N.ROOT_GUARD)
    assert N.argv(node, "firewall_apply", as_="self")[5] == "self" and N.argv(node, "firewall_apply", as_="self")[-2] == "-c"
    import pytest
    with pytest.raises(ValueError):
        N.argv(node, "probe", as_="sudo")


class _Said:
    name, user = "a", "me"

    def __init__(self, code, out="", err=""):
        self.res, self.argv = (code, out, err), None

    def run(self, argv, *, timeout=None, stdin=None, sudo=False):
        from sfcluster.remote.base import Result
        self.argv = argv
        return Result("a", "x", *self.res)


def test_the_funnel_names_an_unusable_root_python_and_reads_refusals_as_one_error():
    import pytest
    from sfcluster import nodescripts as N
    from sfcluster.errors import RemoteError, SfclusterError
    node = _node()
    with pytest.raises(RemoteError) as e:
        N.run(_Said(126, err="sfcluster: /usr/bin (root_python /usr/bin/python3) is writable by others"), node, "probe",
              {}, as_="root", timeout=5)
    assert "writable by others" in e.value.message and "nodes.a.root_python" in (e.value.hint or "")
    # as the Ray user the same exit code is the script's own: no interpreter story
    assert N.run(_Said(126), node, "run_ctl", {}, timeout=5).exit_code == 126
    with pytest.raises(SfclusterError) as e:
        N.call(_Said(3, out='{"error": "~/.sfcluster/demo is a symlink"}\n'), node, "run_ctl", {}, what="x", timeout=5)
    assert "not safe to use" in e.value.message and "symlink" in e.value.message
    assert N.call(_Said(0, out='noise\n{"active": false}\n'), node, "run_ctl", {}, what="x", timeout=5) == {"active": False}
