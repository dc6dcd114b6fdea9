"""``vqfr video`` and ``VideoRestorer``: clips made here with PyAV, a tiny random network, real and fake detectors."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ALIGNED_FACES, needs_shared_data

from vqfr.errors import VQFRError
from vqfr.face.align import face_template
from vqfr.face.detect import DetectedFace
from vqfr.video.tracking import FaceTracker, flicker, landmark_jitter

av = pytest.importorskip("av", reason='PyAV is not installed (pip install -e ".[video]")')

from vqfr.cli import main  # noqa: E402
from vqfr.restore import FaceRestorer  # noqa: E402
from vqfr.video import VideoRestorer  # noqa: E402
from vqfr.video.synthetic import face_position, make_face_clip  # noqa: E402

SIZE, FACE = (160, 120), 80


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def face() -> np.ndarray:
    if not ALIGNED_FACES.is_dir():
        pytest.skip(f"shared sample faces not found at {ALIGNED_FACES}")
    return cv2.cvtColor(cv2.imread(str(ALIGNED_FACES / "Adele_crop.png")), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def restorer(tiny_v2_checkpoint) -> FaceRestorer:
    return FaceRestorer(model=str(tiny_v2_checkpoint), device="cpu", upscale=1, batch_size=4, detector="dlib-hog")


@pytest.fixture(scope="module")
def clip(face, tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """20 frames, the face panning across frames 0-14 and gone in 15-19, variable frame rate, a tone."""
    path = tmp_path_factory.mktemp("clips") / "pan.mp4"
    frames = make_face_clip(path, face, frames=20, size=SIZE, face_size=FACE, face_frames=lambda t: t < 15, vfr=True)
    return path, frames


def decode(path: Path) -> tuple[list[np.ndarray], list[float], dict]:
    """Upright RGB frames, their times, and facts about the file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {
            "rate": float(v.average_rate),
            "sar": v.sample_aspect_ratio,
            "size": (v.codec_context.width, v.codec_context.height),
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
        }
        frames, times = [], []
        for f in c.decode(v):
            img = f.to_ndarray(format="rgb24")
            info["rotation"] = f.rotation
            frames.append(np.rot90(img, k=f.rotation // 90) if f.rotation else img)
            times.append(float(f.time))
    return frames, times, info


def audio_packets(path: Path) -> list[tuple[float, bytes]]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return [(float(p.pts * s.time_base), bytes(p)) for p in c.demux(s) if p.size]


def truth(t: int, frames: int, motion: str) -> np.ndarray:
    """The five landmarks of the synthetic face in frame ``t`` (the sample is FFHQ-aligned)."""
    x, y = face_position(t, frames, motion, (SIZE[0] - FACE, SIZE[1] - FACE))
    return face_template(FACE) + (x, y)


class NoisyDetector:
    """Returns the true landmarks plus Gaussian noise (a detector that wobbles), one call per frame in order."""

    def __init__(self, frames: int, motion: str, noise: float, seed: int = 0):
        self.frames, self.motion, self.noise = frames, motion, noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        lm = truth(self.calls, self.frames, self.motion) + self.rng.normal(0, self.noise, (5, 2))
        self.calls += 1
        x0, y0 = lm.min(0) - 10
        x1, y1 = lm.max(0) + 10
        return [DetectedFace((x0, y0, x1, y1), 1.0, lm.astype(np.float32))]


def texture_restorer(model: Path, detector) -> FaceRestorer:
    """A restorer whose "network" overlays fixed detail in crop coordinates, as a real one hallucinates it:
    the detail moves with the alignment, so alignment jitter shows up as flicker (a random tiny network's
    output jumps with any input change and would measure nothing)."""
    r = FaceRestorer(model=str(model), device="cpu", upscale=1, detector=detector)
    rng = np.random.default_rng(0)
    detail = cv2.GaussianBlur(rng.uniform(-60, 60, (512, 512, 3)).astype(np.float32), (0, 0), 3) * 4
    r.restore_crops = lambda crops, fidelity=None: [np.clip(c + detail, 0, 255).astype(np.uint8) for c in crops]
    return r


def face_box(t: int, frames: int = 20, motion: str = "pan") -> tuple[slice, slice]:
    x, y = face_position(t, frames, motion, (SIZE[0] - FACE, SIZE[1] - FACE))
    return slice(y + 20, y + FACE - 10), slice(x + 15, x + FACE - 15)


# ---------------------------------------------------------------- end to end
@needs_shared_data
def test_video_keeps_frames_timestamps_audio_and_restores_faces(restorer, clip, tmp_path):
    src, written = clip
    out = tmp_path / "out.mp4"
    report = VideoRestorer(restorer).restore(src, out)
    assert report.frames == 20 and report.frames_with_faces >= 13 and report.tracks == 1
    assert report.out_size == SIZE and report.audio_streams == 1

    in_frames, in_times, in_info = decode(src)
    out_frames, out_times, out_info = decode(out)
    assert len(out_frames) == len(in_frames) == 20
    assert out_times == pytest.approx(in_times, abs=1e-6)  # variable frame rate kept frame for frame
    assert out_info["rate"] == pytest.approx(in_info["rate"], rel=0.1)
    assert (out_info["codec"], out_info["pix_fmt"]) == ("h264", "yuv420p")
    assert audio_packets(out) == audio_packets(src)  # copied packet for packet
    # faces restored: the (random) network changes the face region a lot ...
    changed = [np.abs(out_frames[t][face_box(t)].astype(float) - in_frames[t][face_box(t)]).mean() for t in range(13)]
    assert min(changed) > 10
    # ... and frames without faces pass through, up to the codec's error
    for t in range(15, 20):
        assert np.abs(out_frames[t].astype(float) - in_frames[t]).mean() < 2.0
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


@needs_shared_data
def test_rotation_aspect_upscale_and_odd_size(restorer, face, tmp_path):
    src = tmp_path / "rot.mp4"
    make_face_clip(src, face, frames=6, size=SIZE, face_size=FACE, motion="still", rotation=90, audio_hz=None)
    r = VideoRestorer(FaceRestorer(model=str(restorer.weights_path), device="cpu", upscale=1.5, detector="dlib-hog"))
    seen = []
    r.restore(src, tmp_path / "out.mkv", on_frame=lambda i, faces: seen.append(len(faces)))
    assert sum(seen) >= 5  # dlib only finds upright faces: the frames were turned upright for it
    frames, _, info = decode(tmp_path / "out.mkv")
    assert info["rotation"] == 90 and frames[0].shape[:2] == (180, 240)  # upright 240x180
    # odd upscaled sizes are padded to even for yuv420p
    odd = tmp_path / "odd.mp4"
    make_face_clip(odd, face, frames=3, size=(98, 66), face_size=60, audio_hz=None)
    r = VideoRestorer(FaceRestorer(model=str(restorer.weights_path), device="cpu", upscale=1.5, detector="dlib-hog"))
    report = r.restore(odd, tmp_path / "odd_out.mp4")
    assert report.out_size == (148, 100) and any("padded" in n for n in report.notes)
    assert decode(tmp_path / "odd_out.mp4")[2]["size"] == (148, 100)


@needs_shared_data
def test_sample_aspect_ratio_is_kept(restorer, clip, tmp_path):
    src = tmp_path / "sar.mp4"
    with av.open(str(clip[0])) as inp, av.open(str(src), "w") as out:  # remux with 4:3 pixels
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        s.codec_context.sample_aspect_ratio = Fraction(4, 3)
        for i, f in enumerate(inp.decode(video=0)):
            if i == 4:
                break
            f.pts = None
            for p in s.encode(f.reformat(format="yuv420p")):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    VideoRestorer(restorer).restore(src, tmp_path / "out.mp4")
    assert decode(tmp_path / "out.mp4")[2]["sar"] == Fraction(4, 3)


@needs_shared_data
def test_start_and_duration_restore_a_part(restorer, clip, tmp_path):
    src, _ = clip
    in_frames, in_times, _ = decode(src)
    out = tmp_path / "part.mp4"
    start, duration = in_times[6], in_times[12] - in_times[6]
    report = VideoRestorer(restorer).restore(src, out, start=start, duration=duration)
    frames, times, _ = decode(out)
    assert report.frames == len(frames) == 6
    assert times[0] == pytest.approx(0.0, abs=1e-6)
    assert times == pytest.approx([t - start for t in in_times[6:12]], abs=1e-6)
    audio = audio_packets(out)
    assert audio and -0.01 <= audio[0][0] <= 0.1 and audio[-1][0] < duration


@needs_shared_data
def test_cli_writes_the_video_and_reports(tiny_v2_checkpoint, clip, tmp_path, capsys):
    out = tmp_path / "sub" / "cli.mp4"
    rc = main(["video", "-i", str(clip[0]), "-o", str(out), "--model", str(tiny_v2_checkpoint), "--crf", "23"])
    assert rc == 0 and out.is_file()
    err = capsys.readouterr().err
    assert "20 frames" in err and "1 track(s)" in err and "written to" in err
    assert len(decode(out)[0]) == 20


def test_bad_inputs_and_outputs_are_one_line_errors_before_the_model_loads(clip, tmp_path, capsys, monkeypatch):
    src, _ = clip
    import vqfr.restore.pipeline as pipeline

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load for a bad command")

    monkeypatch.setattr(pipeline.FaceRestorer, "__init__", no_model)
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    tone = tmp_path / "tone.m4a"
    with av.open(str(tone), "w") as c:  # audio only: no video stream
        s = c.add_stream("aac", rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        for p in [*s.encode(f), *s.encode(None)]:
            c.mux(p)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = {
        (str(src), str(src)): "is the input",
        (str(src), str(tmp_path)): "is a folder",
        (str(src), str(tmp_path / "out.avi")): "unknown video extension",
        (str(src), str(blocker / "out.mp4")): "is a file",
        (str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4")): "does not exist",
        (str(text), str(tmp_path / "o.mp4")): "not a video FFmpeg can read",
        (str(image), str(tmp_path / "o.mp4")): "is an image",
        (str(tone), str(tmp_path / "o.mp4")): "without a video stream",
    }
    for (inp, out), message in cases.items():
        assert main(["video", "-i", inp, "-o", out]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, (inp, out, err)
    for extra, message in ((["--codec", "nope"], "unknown video encoder"), (["--start", "99"], "past the end")):
        assert main(["video", "-i", str(src), "-o", str(tmp_path / "o.mp4"), *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


@needs_shared_data
@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupt_or_failure_leaves_no_output_and_keeps_an_old_one(restorer, clip, tmp_path, monkeypatch, error):
    out = tmp_path / "out.mp4"
    out.write_bytes(b"an earlier result")
    calls = []
    real = restorer.restore_crops

    def failing(crops, fidelity=None):
        calls.append(len(crops))
        if len(calls) == 2:
            raise error("stop")
        return real(crops, fidelity)

    monkeypatch.setattr(restorer, "restore_crops", failing)
    with pytest.raises(error):
        VideoRestorer(restorer).restore(clip[0], out)
    assert out.read_bytes() == b"an earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # the temporary file is gone


@needs_shared_data
def test_frames_stream_through_a_bounded_buffer(restorer, clip, tmp_path):
    """The first frame is written long before the last one is decoded: memory does not grow with length."""
    detected, written_at = [], {}

    class Counting:
        def detect(self, image):
            detected.append(1)
            return restorer.detector.detect(image)

    r = FaceRestorer(model=str(restorer.weights_path), device="cpu", upscale=1, batch_size=2, detector=Counting())
    video = VideoRestorer(r)
    video.restore(clip[0], tmp_path / "o.mp4", on_frame=lambda i, f: written_at.setdefault(i, len(detected)))
    lookahead = FaceTracker().lookahead
    assert all(written_at[i] <= i + 1 + lookahead + 2 for i in written_at)


# ---------------------------------------------------------------- temporal stability
@needs_shared_data
@pytest.mark.parametrize("motion", ["still", "pan"])
def test_smoothing_reduces_jitter_and_flicker(face, tiny_v2_checkpoint, tmp_path, motion):
    n = 16
    src = tmp_path / f"{motion}.mp4"
    make_face_clip(src, face, frames=n, size=SIZE, face_size=FACE, motion=motion, audio_hz=None)
    figures = {}
    for smooth in (False, True):
        r = texture_restorer(tiny_v2_checkpoint, NoisyDetector(n, motion, 1.0))
        used = {}
        out = tmp_path / f"{motion}_{smooth}.mp4"
        record = lambda i, faces, used=used: used.update({i: faces[0][1]})  # noqa: E731
        VideoRestorer(r, smooth=smooth).restore(src, out, on_frame=record)
        lm = np.stack([used[i] for i in range(n)])
        error = np.linalg.norm(lm - np.stack([truth(t, n, motion) for t in range(n)]), axis=-1).mean()
        frames = np.stack(decode(out)[0])
        mask = np.zeros(frames.shape[1:3], bool)
        mask[face_box(0, n, motion)] = True
        figures[smooth] = (landmark_jitter(lm), error, flicker(frames, mask) if motion == "still" else None)
    (jit_raw, err_raw, fl_raw), (jit_s, err_s, fl_s) = figures[False], figures[True]
    assert jit_s < 0.4 * jit_raw
    assert err_s < err_raw
    if motion == "still":
        assert fl_s < 0.7 * fl_raw, (fl_s, fl_raw)


def _face(lm: np.ndarray) -> DetectedFace:
    lm = np.asarray(lm, np.float32)
    return DetectedFace((*(lm.min(0) - 10), *(lm.max(0) + 10)), 1.0, lm)


def _run_tracker(tracker: FaceTracker, per_frame: list[list[DetectedFace]]) -> list[list]:
    out = []
    for i, faces in enumerate(per_frame):
        tracker.add(i, faces)
        while len(out) < len(per_frame) and tracker.ready(len(out)):
            out.append(tracker.resolve(len(out)))
    tracker.finish()
    while len(out) < len(per_frame):
        out.append(tracker.resolve(len(out)))
    return out


def test_tracker_keeps_two_faces_apart_and_bridges_short_gaps():
    a, b = face_template(40) + (10, 10), face_template(40) + (100, 10)
    frames = [[_face(a + (t, 0)), _face(b - (t, 0))] for t in range(12)]
    frames[5] = [frames[5][1]]  # face a missed for one frame
    frames[8] = []  # and both for one more
    out = _run_tracker(FaceTracker(), frames)
    assert [len(f) for f in out] == [2] * 12  # gaps bridged
    ids = {tid for f in out for tid, _ in f}
    assert len(ids) == 2
    a_track = [dict(f)[min(ids)] for f in out]
    assert np.allclose(np.stack(a_track)[:, 0, 0], a[0, 0] + np.arange(12), atol=0.05)  # linear motion unchanged

    long_gap = [[_face(a)] if t < 3 or t > 8 else [] for t in range(12)]
    assert [len(f) for f in _run_tracker(FaceTracker(max_gap=3), long_gap)] == [1] * 3 + [0] * 6 + [1] * 3
    raw = _run_tracker(FaceTracker(smooth=False), frames)
    assert [len(f) for f in raw] == [len(f) for f in frames]  # --no-smooth: detections as they are
    assert np.array_equal(raw[3][0][1], frames[3][0].landmarks)


def test_still_face_keeps_a_still_alignment():
    rng = np.random.default_rng(1)
    lm = face_template(60) + 20
    frames = [[_face(lm + rng.normal(0, 0.15, (5, 2)))] for _ in range(30)]
    out = [f[0][1] for f in _run_tracker(FaceTracker(), frames)]
    same = sum(np.array_equal(out[i], out[i - 1]) for i in range(1, 30))
    assert same >= 20  # most frames reuse the previous alignment exactly
    assert landmark_jitter(np.stack(out)) < 0.2 * landmark_jitter(np.stack([f[0].landmarks for f in frames]))


def test_tracker_settings_are_checked():
    for kwargs in ({"sigma": 0}, {"max_gap": -1}, {"still_tolerance": -0.1}):
        with pytest.raises(VQFRError):
            FaceTracker(**kwargs)


def test_help_imports_neither_torch_nor_av():
    code = "import sys; from vqfr.cli import main\ntry: main(['video', '--help'])\nexcept SystemExit: pass\n"
    code += "print('torch' in sys.modules, 'av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"
