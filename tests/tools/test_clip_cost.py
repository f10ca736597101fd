"""tools/clip_cost.py: CPU-ms per training clip of several folders, taken in turns."""

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_sizes_and_ratio(real_videos_dir, tmp_path):
    """One row per folder, in order, with its mean bytes per video, its backend and mode; the
    baseline's ratio to itself is 1.00x."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, names in ((a, ["g1.avi", "g2.avi"]), (b, ["g1.avi"])):
        folder.mkdir()
        for name in names:
            shutil.copy(real_videos_dir / name, folder / name)
    (a / "notes.txt").write_text("not a video")
    argv = [str(a), str(b), "--frames", "4", "--rate", "2", "--crop", "32", "--clips", "2", "--rounds", "2",
            "--backend", "auto", "pyav", "--mode", "decode"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert load_tool("clip_cost").main(argv) == 0
    rows = [line.split() for line in out.getvalue().splitlines()[2:]]
    sizes = {name: (real_videos_dir / name).stat().st_size for name in ("g1.avi", "g2.avi")}
    assert [row[:4] for row in rows] == [[str(a), "auto", "decode", "1"], [str(b), "pyav", "decode", "1"]]
    assert int(rows[0][4].replace(",", "")) == round((sizes["g1.avi"] + sizes["g2.avi"]) / 2)
    assert int(rows[1][4].replace(",", "")) == sizes["g1.avi"]
    assert rows[0][-1] == "1.00x" and float(rows[0][5]) > 0


@pytest.mark.parametrize("option", [["--backend", "auto", "pyav"], ["--clips-per-video", "1", "2"],
                                    ["--share-frames", "yes", "no"]])
def test_one_value_or_one_per_folder(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        load_tool("clip_cost").main([str(tmp_path)] * 3 + option)
    assert exit_info.value.code == 2
    assert f"give one {option[0]} or one per folder (3)" in capsys.readouterr().err


def test_gpu_mode_and_clips_per_video_cost_per_clip(real_videos_dir, tmp_path):
    """--mode gpu runs the worker's half of data.gpu_transforms; with --clips-per-video 2 every
    item is two clips from one decode (in gpu mode too, own or shared frames, one value for all
    folders or one per folder), so the row says so and the cost is per clip."""
    folder = tmp_path / "a"
    folder.mkdir()
    shutil.copy(real_videos_dir / "g1.avi", folder / "g1.avi")
    common = [str(folder), str(folder), "--frames", "4", "--rate", "2", "--crop", "32", "--clips", "2",
              "--rounds", "1", "--backend", "pyav"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert load_tool("clip_cost").main(common + ["--mode", "full", "gpu"]) == 0
    rows = [line.split() for line in out.getvalue().splitlines()[2:]]
    assert [row[2:4] for row in rows] == [["full", "1"], ["gpu", "1"]]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert load_tool("clip_cost").main(common + ["--mode", "decode", "--clips-per-video", "2",
                                                     "--share-frames"]) == 0
    rows = [line.split() for line in out.getvalue().splitlines()[2:]]
    assert [row[2:4] for row in rows] == [["decode", "2/shared"]] * 2
    with contextlib.redirect_stdout(io.StringIO()) as out:
        arms = ["--mode", "gpu", "--clips-per-video", "1", "2", "2", "--share-frames", "no", "no", "yes"]
        assert load_tool("clip_cost").main([str(folder), *common, *arms]) == 0
    rows = [line.split() for line in out.getvalue().splitlines()[2:]]
    assert [row[2:4] for row in rows] == [["gpu", "1"], ["gpu", "2/own"], ["gpu", "2/shared"]]
