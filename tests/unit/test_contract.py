"""The controller <-> node contract (nodescripts/contract.py) is the one source of its names:
the standalone runtime helper and the controller's exit-code mapping agree with it."""
from __future__ import annotations

import ast
from pathlib import Path

from sfcluster import runtime
from sfcluster.exitcodes import Exit
from sfcluster.nodescripts import contract as C
from sfcluster.nodescripts import with_state, wrapper
from sfcluster.run.driver import STOPPED_EXIT


def test_the_runtime_helper_uses_the_contracts_env_names():
    assert (runtime.ENV_CONFIG, runtime.ENV_TOKEN, runtime.ENV_LOCK, runtime.ENV_READY, runtime.ENV_GATE) == (
        C.ENV_CONFIG, C.ENV_RUN_TOKEN, C.ENV_LOCK_INFO, C.ENV_READY, C.ENV_GATE)


def test_node_exit_codes_are_sfclusters_own():
    assert C.HELD_EXIT == Exit.LOCKED and C.FOREIGN_EXIT == Exit.FOREIGN_DRIVER
    assert set(STOPPED_EXIT) == set(C.STOP_KINDS)


def test_node_scripts_use_the_contract_not_literals():
    """No control kind, exit code or env name is spelled out again in the scripts that get the contract."""
    for name in ("driver_wrapper", "oplock", "run_ctl", "nodestate"):
        text = (Path(C.__file__).parent / f"{name}.py").read_text()
        strings = {n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        kinds = {C.BEAT, C.LOCKED, C.FOREIGN, C.NORAY, C.UNSAFE, C.STARTED, C.LINKING, C.READY, C.NOGATE, C.NODE_DOWN, C.STARVED, C.STOPPING, C.EXIT,
                 C.ENV_CONFIG, C.ENV_RUN_TOKEN, C.ENV_LOCK_INFO, C.ENV_READY, C.ENV_GATE, C.ENV_NODE_HOME, C.WRAPPER_NAME}
        assert not strings & kinds, (name, strings & kinds)
    compile(with_state("driver_wrapper"), "driver_wrapper", "exec")
    compile(wrapper(), "driver_wrapper", "exec")  # as shipped: with gate.py before it
    assert "class Gate" in wrapper() and "class Gate" not in with_state("driver_wrapper")


def _stall_clock():
    """driver_wrapper.py's StallClock alone (the script acts on import: it reads its request)."""
    import ast
    from sfcluster.nodescripts import source
    text = source("driver_wrapper")
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == "StallClock")
    ns: dict = {}
    exec(compile(ast.get_source_segment(text, node), "driver_wrapper.py", "exec"), ns)
    return ns["StallClock"]


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
