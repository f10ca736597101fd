"""tools/test.py gives the same predictions on 1, 2 and 3 ranks (torchrun, gloo on CPU)."""

import json
import subprocess
import sys
from pathlib import Path

from helpers import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
NUM_VIDEOS = 7  # divides by neither 2 nor 3 ranks, nor do its 14 views by 3


def _launch(cmd: list[str], run_dir: Path, data_root: Path, *extra: str) -> subprocess.Popen:
    run_dir.mkdir()
    with open(run_dir / "output.log", "w") as log:
        args = [*cmd, str(REPO / "tools" / "test.py"), *tiny_overrides(data_root, run_dir, *extra)]
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)


def test_predictions_do_not_depend_on_the_number_of_ranks(tiny_run, tiny_synthetic, tmp_path):
    lines = (tiny_synthetic / "val.csv").read_text().splitlines()[:NUM_VIDEOS]
    val_list = tmp_path / "val7.csv"
    val_list.write_text("\n".join(lines) + "\n")
    extra = (f"data.val_list={val_list}", f"test.checkpoint={tiny_run / 'checkpoints' / 'last.pt'}")
    # All three at once: most of each run is single-threaded imports.
    procs = {1: _launch([sys.executable], tmp_path / "1", tiny_synthetic, *extra)}
    for n in (2, 3):
        torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}",
                    f"--master_port={29540 + n}"]
        procs[n] = _launch(torchrun, tmp_path / str(n), tiny_synthetic, *extra)
    try:
        for n, proc in procs.items():
            output = tmp_path / str(n) / "output.log"
            assert proc.wait(timeout=600) == 0, f"{n} ranks:\n{output.read_text()[-5000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()  # torchrun passes it on to its ranks
                proc.wait(timeout=60)
    single = (tmp_path / "1" / "predictions.csv").read_bytes()
    expected_videos = [str(tiny_synthetic / line.split(",")[0]) for line in lines]
    assert [row.split(",")[0] for row in single.decode().splitlines()[1:]] == expected_videos
    for n in procs:
        results = json.loads((tmp_path / str(n) / "results.json").read_text())
        assert results["num_videos"] == NUM_VIDEOS and results["num_views"] == 2 * NUM_VIDEOS, n
        assert (tmp_path / str(n) / "predictions.csv").read_bytes() == single, n
