"""Faces across frames: tracks, landmark smoothing, gap bridging, and the stability figures.

Restoring each frame on its own makes faces flicker: the detector's landmarks wobble by a pixel or
two from frame to frame, so the aligned crop (and with it the network's output) shifts, rotates and
rescales a little every frame. :class:`FaceTracker` removes that wobble:

* detections are linked into tracks by box overlap (IoU) or landmark distance, with an optimal
  one-to-one assignment (Hungarian) between the live tracks and the new detections;
* a track missing for up to ``max_gap`` frames is bridged by linear interpolation of its landmarks
  (the detector misses a frame now and then: the face should not blink back to its unrestored self);
* each track's five landmarks are smoothed with a centred Gaussian over ``2 * radius + 1`` frames,
  which needs ``radius + max_gap`` frames of look-ahead (the caller buffers that many frames); the
  window stays symmetric (it shrinks near a track's ends), so steady motion is followed without lag;
* a face that has not moved by more than ``still_tolerance`` of its eye distance keeps the landmarks
  it used in the previous frame exactly, so a still face gets a still alignment.

Plain numpy and SciPy: no torch, no video library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vqfr.errors import VQFRError


@dataclass
class _Track:
    id: int
    # frame index -> (landmarks (5, 2) float64, box (4,) float64); old entries are pruned
    obs: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    last_frame: int = -1
    emitted: np.ndarray | None = None  # landmarks used at frame ``emitted_frame``
    emitted_frame: int = -10


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _eye_distance(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[1] - landmarks[0]))


class FaceTracker:
    """Link per-frame detections into tracks and give each frame its stabilised landmarks.

    Call :meth:`add` for frames 0, 1, 2, ... with that frame's detections; :meth:`resolve` for frame
    ``i`` is final once frames up to ``i + lookahead`` were added (or after :meth:`finish`).

    Args:
        smooth: False turns everything off: each frame gets its own detections as they are.
        sigma: standard deviation of the Gaussian, in frames.
        max_gap: bridge a track missing for at most this many frames.
        still_tolerance: keep the previous frame's landmarks while no point moved more than this
            fraction of the eye distance (0 disables).
        min_iou: boxes overlapping at least this much belong to the same track ...
        max_shift: ... or landmarks whose mean moved less than this many eye distances.
    """

    def __init__(
        self,
        smooth: bool = True,
        sigma: float = 1.5,
        max_gap: int = 3,
        still_tolerance: float = 0.01,
        min_iou: float = 0.3,
        max_shift: float = 0.5,
    ):
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise VQFRError(f"smoothing sigma must be a positive number of frames, got {sigma!r}")
        if not (isinstance(max_gap, int) and max_gap >= 0):
            raise VQFRError(f"max gap must be a whole number of frames >= 0, got {max_gap!r}")
        if not (isinstance(still_tolerance, (int, float)) and still_tolerance >= 0):
            raise VQFRError(f"still tolerance must be >= 0, got {still_tolerance!r}")
        self.smooth = bool(smooth)
        self.sigma = float(sigma)
        self.radius = int(math.ceil(2 * self.sigma)) if self.smooth else 0
        self.max_gap = int(max_gap) if self.smooth else 0
        self.still_tolerance = float(still_tolerance) if self.smooth else 0.0
        self.min_iou = float(min_iou)
        self.max_shift = float(max_shift)
        self.lookahead = self.radius + self.max_gap
        self._weights = np.exp(-0.5 * (np.arange(-self.radius, self.radius + 1) / self.sigma) ** 2)
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._added = -1
        self._finished = False
        self.tracks_started = 0

    # ------------------------------------------------------------------ feeding
    def add(self, frame: int, faces: list) -> None:
        """Record the detections (objects with ``box`` and ``landmarks``) of ``frame``, the next frame in order."""
        if frame != self._added + 1:
            raise ValueError(f"frames must be added in order: expected {self._added + 1}, got {frame}")
        self._added = frame
        dets = [(np.asarray(f.landmarks, np.float64).reshape(5, 2), np.asarray(f.box, np.float64)) for f in faces]
        live = [t for t in self._tracks if frame - t.last_frame <= self.max_gap + 1]
        pairs = self._assign(live, dets)
        matched = set()
        for ti, di in pairs:
            track = live[ti]
            track.obs[frame] = dets[di]
            track.last_frame = frame
            matched.add(di)
        for di, det in enumerate(dets):
            if di not in matched:
                track = _Track(self._next_id, {frame: det}, frame)
                self._next_id += 1
                self.tracks_started += 1
                self._tracks.append(track)

    def finish(self) -> None:
        """No more frames: the last ``lookahead`` frames can be resolved now."""
        self._finished = True

    def _assign(self, tracks: list[_Track], dets: list) -> list[tuple[int, int]]:
        if not tracks or not dets:
            return []
        from scipy.optimize import linear_sum_assignment

        cost = np.full((len(tracks), len(dets)), 1e6)
        for i, track in enumerate(tracks):
            lm_t, box_t = track.obs[track.last_frame]
            scale = max(_eye_distance(lm_t), 1.0)
            for j, (lm_d, box_d) in enumerate(dets):
                iou = box_iou(box_t, box_d)
                shift = float(np.linalg.norm(lm_t.mean(0) - lm_d.mean(0))) / scale
                if iou >= self.min_iou or shift <= self.max_shift:
                    cost[i, j] = (1.0 - iou) + shift
        rows, cols = linear_sum_assignment(cost)
        return [(r, c) for r, c in zip(rows, cols) if cost[r, c] < 1e6]

    # ------------------------------------------------------------------ reading
    def ready(self, frame: int) -> bool:
        """Whether :meth:`resolve` of ``frame`` is final."""
        return self._finished or frame + self.lookahead <= self._added

    def resolve(self, frame: int) -> list[tuple[int, np.ndarray]]:
        """``(track id, landmarks (5, 2))`` of every face shown in ``frame``; call once per frame, in order."""
        if not self.ready(frame):
            raise ValueError(f"frame {frame} needs frames up to {frame + self.lookahead} first")
        out = []
        for track in self._tracks:
            value = self._value(track, frame)
            if value is None:
                continue
            if self.radius:
                value = self._smoothed(track, frame, value)
            if (
                self.still_tolerance
                and track.emitted is not None
                and track.emitted_frame == frame - 1
                and np.abs(value - track.emitted).max() <= self.still_tolerance * _eye_distance(track.emitted)
            ):
                value = track.emitted
            track.emitted, track.emitted_frame = value, frame
            out.append((track.id, value.astype(np.float32)))
        self._prune(frame)
        return out

    def _smoothed(self, track: _Track, frame: int, value: np.ndarray) -> np.ndarray:
        """Gaussian average over a window that stays symmetric: near a track's ends (or a long gap) it
        shrinks to the frames available on both sides, so a moving face is not pulled behind or ahead."""
        before, after = [], []
        for k in range(1, self.radius + 1):
            v = self._value(track, frame - k)
            if v is None:
                break
            before.append(v)
        for k in range(1, self.radius + 1):
            v = self._value(track, frame + k)
            if v is None:
                break
            after.append(v)
        r = min(len(before), len(after))
        if r == 0:
            return value
        w = self._weights[self.radius - r : self.radius + r + 1]
        stack = np.stack([*before[:r][::-1], value, *after[:r]])
        return np.tensordot(w / w.sum(), stack, axes=1)

    def _value(self, track: _Track, frame: int) -> np.ndarray | None:
        """Observed landmarks at ``frame``, or interpolated across a gap of at most ``max_gap`` frames."""
        hit = track.obs.get(frame)
        if hit is not None:
            return hit[0]
        if not self.max_gap:
            return None
        before = [k for k in track.obs if k < frame]
        after = [k for k in track.obs if k > frame]
        if not before or not after:
            return None
        p, n = max(before), min(after)
        if n - p - 1 > self.max_gap:
            return None
        t = (frame - p) / (n - p)
        return (1 - t) * track.obs[p][0] + t * track.obs[n][0]

    def _prune(self, frame: int) -> None:
        # frame + 1 will look back to frame + 1 - radius, whose bridging looks back max_gap + 1 more
        keep_from = frame + 1 - self.radius - self.max_gap - 1
        for track in self._tracks:
            for k in [k for k in track.obs if k < keep_from]:
                del track.obs[k]
        self._tracks = [t for t in self._tracks if t.obs]


# ---------------------------------------------------------------------- stability figures
def landmark_jitter(landmarks: np.ndarray) -> float:
    """Jitter of one face's landmarks over time, in pixels: the mean length of the second difference.

    ``landmarks`` is (T, 5, 2). A still face or one moving at constant speed scores 0; independent
    noise of standard deviation s per coordinate scores about 2.2 s. Needs T >= 3.
    """
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 3 or lm.shape[0] < 3:
        raise ValueError("landmark_jitter needs (T >= 3, N, 2) landmarks")
    accel = lm[2:] - 2 * lm[1:-1] + lm[:-2]
    return float(np.linalg.norm(accel, axis=-1).mean())


def flicker(frames: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference between consecutive frames (0-255 scale), inside ``mask`` if given.

    ``frames`` is (T, H, W[, C]) uint8; on a static-camera clip with a still face this measures how
    much the restored face changes from frame to frame.
    """
    f = np.asarray(frames, np.float32)
    if f.shape[0] < 2:
        raise ValueError("flicker needs at least two frames")
    diff = np.abs(f[1:] - f[:-1])
    if mask is not None:
        m = np.asarray(mask, bool)
        return float(diff[:, m].mean())
    return float(diff.mean())


__all__ = ["FaceTracker", "box_iou", "flicker", "landmark_jitter"]
