"""A training epoch over a list where a third of the entries are broken completes and reports them."""

import shutil

from helpers import compose_config, tiny_overrides

from videocls.engine.trainer import fit


def test_epoch_with_a_third_bad_entries_completes_and_lists_them(tiny_synthetic, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_synthetic, root)
    good = (root / "train.csv").read_text().splitlines()  # 20 videos
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.mp4").write_text("not a video\n")
    real = (root / good[0].split(",")[0]).read_bytes()
    (root / "truncated.mp4").write_bytes(real[: len(real) // 8])
    bad_names = ["empty.mp4", "notes.mp4", "truncated.mp4", "missing.mp4", "videos/gone.mp4"]
    bad = [f"{name},{i % 10}" for i in range(2) for name in bad_names]  # 10 bad of 30 entries
    (root / "train.csv").write_text("\n".join(good + bad) + "\n")

    summary = fit(compose_config(tiny_overrides(root, tmp_path / "run", f"data.root={root}")),
                  tmp_path / "run")
    assert summary["num_videos"] == 10
    listed = (tmp_path / "run" / "skipped_videos.tsv").read_text().splitlines()
    skipped = {line.split("\t")[0] for line in listed}
    # The truncated file may still decode a few frames (then it is usable, not skipped).
    expected = {str(root / name) for name in bad_names}
    assert expected - {str(root / "truncated.mp4")} <= skipped <= expected
    assert all("\t" in line and line.split("\t")[1] for line in listed)  # every entry has a reason
