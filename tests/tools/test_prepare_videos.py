"""tools/prepare_videos.py on a few real videos: size, frame rate, keyframes, frame choice, resume,
and the fast training format (all-intra, fastdecode, short side 256)."""

import contextlib
import importlib.util
import io
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from videocls.data.io.reader import open_video
from videocls.data.prepare import FORMATS, X264_PRESETS, X264_TUNES, EncodeSettings, output_size

REPO = Path(__file__).resolve().parents[2]
SOURCES = {  # relative source path -> (source file, source fps, output size at --short-side 64)
    "g1.avi": ("g1.avi", 25, (86, 64)),
    "clips/sage-example.wmv": ("sage-example.wmv", 1, (84, 32)),  # 84x33: never upscaled, made even
    "clips/Effet_force_magnetique.ogv": ("Effet_force_magnetique.ogv", 25, (84, 64)),
    # damaged, 11 of its 12 frames decode: a partial source validate_dataset keeps is encoded too
    "afl-small_movie.mp4": ("afl-small_movie.mp4", None, None),
}
FPS, GOP = 30, 8


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True, scope="module")
def probe_cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIDEOCLS_CACHE_DIR", str(tmp_path_factory.mktemp("videocls-cache")))
        yield


@pytest.fixture(scope="module")
def prepared(real_videos_dir, tmp_path_factory):
    """SRC with the sample videos (and a non-video), DST after one run of the tool, the
    tool's arguments and what that run printed."""
    root = tmp_path_factory.mktemp("prepare")
    src, dst = root / "src", root / "dst"
    for relative, (name, _, _) in SOURCES.items():
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_videos_dir / name, src / relative)
    (src / "clips" / "notes.txt").write_text("not a video")
    # the first 3000 bytes of a real MP4: no moov atom, nothing decodes: must fail
    (src / "truncated.mp4").write_bytes((real_videos_dir / "bikes.mp4").read_bytes()[:3000])
    argv = [str(src), str(dst), "--short-side", "64", "--fps", str(FPS), "--gop", str(GOP), "-j", "2"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert load_tool("prepare_videos").main(argv) == 0
    return src, dst, argv, out.getvalue()


def test_outputs_failures_and_resume(prepared, capsys):
    src, dst, argv, printed = prepared
    assert printed.startswith("5 videos: 4 encoded, 0 already done, 1 failed")
    rows = (dst / "failures.tsv").read_text().splitlines()
    assert rows[0] == "src\treason" and len(rows) == 2
    failed_src, reason = rows[1].split("\t")
    assert failed_src == str(src / "truncated.mp4") and reason.startswith("source unreadable")
    outputs = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert outputs == ["afl-small_movie.mp4", "clips/Effet_force_magnetique.mp4", "clips/sage-example.mp4",
                       "failures.tsv", "g1.mp4"]
    # its 11 decodable frames, resampled to 30 fps (the source is slower): more frames, none lost
    assert len(open_video(dst / "afl-small_movie.mp4")) > 11

    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*.mp4")}
    assert load_tool("prepare_videos").main(argv) == 0
    assert capsys.readouterr().out.startswith("5 videos: 0 encoded, 4 already done, 1 failed")
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.mp4")} == mtimes


@pytest.mark.parametrize("relative", [r for r, (_, fps, _) in SOURCES.items() if fps])
def test_output_format_size_rate_and_keyframes(prepared, relative):
    src, dst, _, _ = prepared
    out = (dst / relative).with_suffix(".mp4")
    _, source_fps, size = SOURCES[relative]
    with open_video(src / relative) as source:
        expected_frames = round(len(source) / source_fps * FPS)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.pix_fmt) == ("h264", "yuv420p")
        assert (stream.width, stream.height) == size and stream.average_rate == FPS
        packets = sorted((p.pts, p.is_keyframe) for p in container.demux(stream) if p.size)
    assert len(packets) == expected_frames
    assert [i for i, (_, key) in enumerate(packets) if key] == list(range(0, expected_frames, GOP))
    with open_video(out) as reader:
        assert len(reader) == expected_frames and reader.fps == FPS


@pytest.mark.parametrize("relative", ["g1.avi", "clips/sage-example.wmv"])
def test_frames_are_dropped_or_repeated_by_timestamp(prepared, relative):
    """Output frame k must show source frame floor(k * source_fps / fps): the source frame
    closest to each output frame (after scaling) is that one."""
    src, dst, _, _ = prepared
    _, source_fps, (width, height) = SOURCES[relative]
    with open_video(src / relative) as source, open_video((dst / relative).with_suffix(".mp4")) as output:
        scaled = np.stack(
            [
                np.asarray(Image.fromarray(f).resize((width, height), Image.BOX))
                for f in source.get_frames(range(len(source))).numpy()
            ]
        ).astype(np.float32)
        produced = output.get_frames(range(len(output))).numpy().astype(np.float32)
    distance = np.abs(produced[:, None] - scaled[None]).mean(axis=(2, 3, 4))
    expected = [k * source_fps // FPS for k in range(len(produced))]
    assert distance.argmin(axis=1).tolist() == expected


def test_output_size_never_upscales_and_is_even():
    assert output_size(400, 300, 64) == (86, 64)
    assert output_size(300, 400, 64) == (64, 86)
    assert output_size(1280, 720, 320) == (568, 320)
    assert output_size(84, 33, 64) == (84, 32)
    assert output_size(1, 1, 64) == (2, 2)


def _encodes_with(preset: str, tune: str | None = None) -> bool:
    """Whether libx264 opens with ``preset`` and ``tune`` (two black 16 x 16 frames into memory)."""
    try:
        with av.open(io.BytesIO(), mode="w", format="mp4") as output:
            stream = output.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            stream.options = {"preset": preset, **({"tune": tune} if tune else {})}
            black = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            for _ in range(2):
                output.mux(stream.encode(black))
            output.mux(stream.encode())
    except av.error.FFmpegError:
        return False
    return True


def test_an_unknown_preset_is_refused_before_any_work(tmp_path, capsys):
    """--preset bogus used to fail every file and exit 0; the accepted names are libx264's own."""
    assert all(_encodes_with(preset) for preset in X264_PRESETS) and not _encodes_with("bogus")
    with pytest.raises(ValueError, match="unknown x264 preset 'bogus'; choose one of ultrafast"):
        EncodeSettings(preset="bogus")
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        load_tool("prepare_videos").main([str(src), str(tmp_path / "dst"), "--preset", "bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and all(preset in err for preset in X264_PRESETS), err
    assert not (tmp_path / "dst").exists()


def test_tunes_are_libx264s_own():
    assert all(_encodes_with("medium", tune) for tune in X264_TUNES) and not _encodes_with("medium", "bogus")
    with pytest.raises(ValueError, match="unknown x264 tune 'bogus'; choose one of film"):
        EncodeSettings(tune="bogus")


# --------------------------------------------------------------------------- the fast format

FAST_SOURCE, FAST_SOURCE_FPS = "g1.avi", 25  # 400 x 300, 16 frames


@pytest.fixture(scope="module")
def fast_prepared(real_videos_dir, tmp_path_factory):
    """g1.avi prepared with --format fast, and with --format fast --gop 4 --short-side 64."""
    root = tmp_path_factory.mktemp("fast")
    (root / "src").mkdir()
    shutil.copy(real_videos_dir / FAST_SOURCE, root / "src" / FAST_SOURCE)
    runs = {"fast": [], "override": ["--gop", "4", "--short-side", "64"]}
    for name, extra in runs.items():
        argv = [str(root / "src"), str(root / name), "--format", "fast", "-j", "1", *extra]
        with contextlib.redirect_stdout(io.StringIO()):
            assert load_tool("prepare_videos").main(argv) == 0
    return root / "src" / FAST_SOURCE, {name: root / name / "g1.mp4" for name in runs}


def _x264_options(path: Path) -> str:
    """The option string x264 writes into the stream's first packet (an SEI message)."""
    with av.open(str(path)) as container:
        first = bytes(next(p for p in container.demux(container.streams.video[0]) if p.size))
    start = first.index(b"options: ")
    return first[start:first.index(b"\0", start)].decode()


@pytest.mark.parametrize(("run", "size", "gop"), [("fast", (342, 256), 1), ("override", (86, 64), 4)])
def test_fast_format_keyframes_size_and_fastdecode(fast_prepared, run, size, gop):
    """``fast`` is every frame a keyframe at short side 256 (400 x 300 -> 341.3 -> 342 x 256),
    encoded without CABAC and deblocking (x264 tune=fastdecode); options beside --format win."""
    assert FORMATS["fast"] == EncodeSettings(short_side=256, gop=1, tune="fastdecode")
    _, outputs = fast_prepared
    with av.open(str(outputs[run])) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", *size)
        keys = [p.is_keyframe for p in sorted(container.demux(stream), key=lambda p: p.pts or 0) if p.size]
    assert len(keys) == round(16 / FAST_SOURCE_FPS * FPS)
    assert [i for i, key in enumerate(keys) if key] == list(range(0, len(keys), gop))
    options = _x264_options(outputs[run]).split()
    assert {"cabac=0", "deblock=0:0:0", f"keyint={gop}", "scenecut=0"} <= set(options)


def test_fast_format_frames_are_the_sources_and_read_exactly(fast_prepared):
    """Output frame k is source frame floor(k * 25 / 30) scaled to 342 x 256 (PIL's box
    filter as the reference) within the codec's loss, and the training reader serves the
    file (with decord where installed) exactly as a sequential PyAV decode gives it."""
    src, outputs = fast_prepared
    with open_video(src) as source:
        frames = source.get_frames(range(len(source))).numpy()
    with av.open(str(outputs["fast"])) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    scaled = np.stack([np.asarray(Image.fromarray(f).resize((342, 256), Image.BOX)) for f in frames])
    for k, frame in enumerate(decoded.astype(np.float32)):
        # x264 at CRF 23 leaves about 29-33 dB on this noisy source; its neighbours are 6 dB further
        psnr = [10 * np.log10(255**2 / np.mean((frame - s) ** 2)) for s in scaled.astype(np.float32)]
        expected = k * FAST_SOURCE_FPS // FPS
        assert psnr[expected] > 27 and int(np.argmax(psnr)) == expected, (k, np.round(psnr, 1))
    with open_video(outputs["fast"]) as reader:
        assert reader.backend == "pyav"  # auto reads all-intra files with PyAV (decord pays per seek)
        indices = [len(decoded) - 1, 0, 7, 8, 9, 3]
        assert np.array_equal(reader.get_frames(indices).numpy(), decoded[indices])
