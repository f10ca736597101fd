"""One rank failing mid-training ends every rank promptly instead of hanging in a collective.

The ranks are started as separate processes joined through MASTER_ADDR/MASTER_PORT, as Slurm
or a multi-node launch does: torchrun would kill the other workers itself and hide a hang.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import tiny_overrides

from videocls.data.loader import ShardedSampler

REPO = Path(__file__).resolve().parents[2]
BATCH = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_that_fails_mid_epoch_stops_the_other(tiny_synthetic, tmp_path):
    # Corrupt the video rank 1 reaches in its third batch; rank 0's shard never touches it.
    # With max_retries=0 the dataset raises instead of substituting another video.
    lines = (tiny_synthetic / "train.csv").read_text().splitlines()
    shards = [ShardedSampler(len(lines), 2, rank, seed=0).shard() for rank in range(2)]
    bad = shards[1][2 * BATCH]
    assert bad not in shards[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video\n" * 100)
    lines[bad] = f"{broken},{lines[bad].rsplit(',', 1)[1]}"
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")

    port = _free_port()
    procs, outputs = [], [tmp_path / f"rank{rank}.log" for rank in range(2)]
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        overrides = tiny_overrides(tiny_synthetic, tmp_path / f"rank{rank}", f"data.batch_size={BATCH}",
                                   f"data.train_list={tmp_path / 'train.csv'}", "data.max_retries=0")
        with outputs[rank].open("w") as log:
            procs.append(subprocess.Popen([sys.executable, str(REPO / "tools" / "train.py"), *overrides],
                                          cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))

    exited: dict[int, float] = {}
    deadline = time.monotonic() + 240  # about 50 s here: two ranks start on two shared cores
    while len(exited) < 2 and time.monotonic() < deadline:
        for rank, proc in enumerate(procs):
            if rank not in exited and proc.poll() is not None:
                exited[rank] = time.monotonic()
        time.sleep(0.2)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    logs = [out.read_text() for out in outputs]
    assert len(exited) == 2, f"a rank hung; rank 0:\n{logs[0][-2000:]}\nrank 1:\n{logs[1][-2000:]}"

    assert procs[1].returncode != 0 and procs[0].returncode != 0
    assert f"1 videos in a row could not be read; last: {broken}" in logs[1]
    # The survivor stopped because of its peer (the process-group timeout is 30 minutes), not
    # because it finished: it never reached the test protocol.
    assert exited[0] - exited[1] < 60, logs[0][-2000:]
    assert "results:" not in logs[0] and not (tmp_path / "rank0" / "results.json").exists()
