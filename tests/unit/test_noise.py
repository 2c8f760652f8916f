"""run's terminal filter: SecretFlow/SPU/brpc/Ray INFO logging off the terminal (it stays in the
log), the driver's own output, warnings and errors on it. Lines as they came on the harness."""
from __future__ import annotations

import pytest

from sfcluster.run.noise import QuietLines, is_noise

NOISE = [
    b"[bob] 2026-12-03 12:31:57.638 INFO model.py:621 [bob] -- epoch 5 times: 0.37688612937927246s",
    b"2026-12-03 12:31:58.681 INFO driver.py:548 [alice] -- shutdown is called, barrier_on_shutdown True",
    b"[alice] [2026-12-03 12:31:52.521] [info] [bucket_psi.cc:382] Begin post filtering, indices.size=513",
    b"[carol] I1203 12:57:21.747884   526 external/com_github_brpc_brpc/src/brpc/server.cpp:1169] Server is serving",
    b"[carol] INFO:root:Try init sf in PRODUCTION mode",
    b"(SPURuntime pid=3012, ip=172.30.77.12) [2026-12-03 10:00:00.000] [info] [thread_pool.cc:30] Create a pool",
    # as Ray 2.9.3 printed them on a driver without a terminal: coloured prefixes, an actor's arguments
    b"\x1b[36m(SPURuntime(device_id=None, party=bob) pid=1086, ip=172.30.77.12)\x1b[0m [2026-12-04 04:12:27.631] "
    b"[info] [launch.cc:164] LEGACY PSI config: {\"psi_type\":\"KKRT_PSI_2PC\"}",
    b"\x1b[36m(SPURuntime(device_id=None, party=alice) pid=1454)\x1b[0m [2026-12-04 04:12:27.732] [info] "
    b"[bucket_psi.cc:564] psi protocol=2, result_size=531\x1b[32m [repeated 6x across cluster] (Ray deduplicates logs)",
    b"\x1b[36m(pyu_fn pid=1419)\x1b[0m INFO:jax._src.xla_bridge:Unable to initialize backend 'cuda': ",
    b"2026-12-03 12:57:25.909 [info] [channel.cc:SendRequestWithRetry:359] send request failed and retry",
    b"2024-01-01 00:00:00,000\tINFO worker.py:1540 -- Connecting to existing Ray cluster at address: 10.0.0.1:6379",
    # known chatter: warnings/errors that mean nothing (each one's reason is in noise.py)
    b"[alice] 2026-12-03 15:37:17.966 [error] [variable.cpp:BRPC:174] Already exposed `rpc_server_123456789_error' whose value is `0'",
    b"[bob] E1203 15:37:16.708241  2543 external/com_github_brpc_brpc/src/bvar/variable.cpp:174] Already exposed `rpc_server_1_eps'",
    b"[bob] 2026-12-03 15:37:30.482 [warning] [channel.h:~Channel:163] Channel destructor is called before WaitLinkTaskFinish, try stop send thread",
]
KEPT = [
    b"[alice] RESULT auc=0.9990 accuracy=0.9845 seconds=14.8",
    b"PSI: alice 547 rows, bob 550 rows, carol 547 rows -> 513 in common",
    b"(_run pid=123, ip=172.30.77.12) printed by a party function",
    b"[alice] 2026-12-03 12:57:25.928 [error] [socket.cpp:BRPC:2020] SSL connection was shutdown by peer",
    b"2026-12-03 12:31:58.681 WARNING driver.py:12 [alice] -- something to see",
    b"[bob] E1203 12:57:21.750001   544 socket.cpp:2020] SSL connection was shutdown by peer",
    b"Traceback (most recent call last):",
    b"\x1b[36m(_run pid=1419, ip=172.30.77.12)\x1b[0m printed by a party function",
    b"\x1b[36m(SPURuntime(device_id=None, party=bob) pid=1086)\x1b[0m [2026-12-04 04:12:27.631] [error] [x.cc:1] real",
    b"INFO is a word a script may print",
    # the same loggers' other errors stay on the terminal
    b"[alice] 2026-12-03 15:37:17.966 [error] [variable.cpp:BRPC:174] something else went wrong",
    b"[bob] 2026-12-03 15:37:30.482 [warning] [channel.h:Send:99] Already exposed but not a metric",
]


@pytest.mark.parametrize("line", NOISE)
def test_noise(line):
    assert is_noise(line)


@pytest.mark.parametrize("line", KEPT)
def test_kept(line):
    assert not is_noise(line)


def test_quiet_lines_pass_whole_lines_and_count_the_rest():
    got = []
    q = QuietLines(got.append)
    data = b"\n".join(NOISE[:3] + KEPT[:2]) + b"\n" + KEPT[2][:10]
    for i in range(0, len(data), 7):  # as chunks arrive: lines split anywhere
        q(data[i:i + 7])
    q(KEPT[2][10:] + b"\n" + b"no newline at the end")
    q.flush()
    assert got == [KEPT[0] + b"\n", KEPT[1] + b"\n", KEPT[2] + b"\n", b"no newline at the end"]
    assert q.dropped == 3
