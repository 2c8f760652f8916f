"""The controller <-> node contract (nodescripts/contract.py) is the one source of its names:
the standalone runtime helper and the controller's exit-code mapping agree with it."""
from __future__ import annotations

import ast
from pathlib import Path

from sfcluster import runtime
from sfcluster.exitcodes import Exit
from sfcluster.nodescripts import contract as C
from sfcluster.nodescripts import with_state
from sfcluster.run.driver import STOPPED_EXIT


def test_the_runtime_helper_uses_the_contracts_env_names():
    assert (runtime.ENV_CONFIG, runtime.ENV_TOKEN, runtime.ENV_LOCK) == (C.ENV_CONFIG, C.ENV_RUN_TOKEN, C.ENV_LOCK_INFO)


def test_node_exit_codes_are_sfclusters_own():
    assert C.HELD_EXIT == Exit.LOCKED and C.FOREIGN_EXIT == Exit.FOREIGN_DRIVER
    assert set(STOPPED_EXIT) == set(C.STOP_KINDS)


def test_node_scripts_use_the_contract_not_literals():
    """No control kind, exit code or env name is spelled out again in the scripts that get the contract."""
    for name in ("driver_wrapper", "oplock", "run_ctl", "nodestate"):
        text = (Path(C.__file__).parent / f"{name}.py").read_text()
        strings = {n.value for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        kinds = {C.BEAT, C.LOCKED, C.FOREIGN, C.NORAY, C.UNSAFE, C.STARTED, C.NODE_DOWN, C.STARVED, C.STOPPING, C.EXIT,
                 C.ENV_CONFIG, C.ENV_RUN_TOKEN, C.ENV_LOCK_INFO, C.ENV_NODE_HOME, C.WRAPPER_NAME}
        assert not strings & kinds, (name, strings & kinds)
    compile(with_state("driver_wrapper"), "driver_wrapper", "exec")
