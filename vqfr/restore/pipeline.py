"""``FaceRestorer``: detect, align, restore and paste back every face in a photo.

The network sees each face as a 512x512 FFHQ-aligned RGB crop in [-1, 1]; everything else
(detection, alignment, background, paste-back, gray/alpha/16-bit handling) is plain image
processing around it. Images are handled one at a time; the network itself (weights, device,
precision, batch size, backend) is a :class:`~vqfr.restore.runtime.FaceRuntime`, which puts the
faces of an image through the network ``batch_size`` at a time.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vqfr.errors import VQFRError
from vqfr.face.align import align_face, face_template
from vqfr.face.detect import DetectedFace, center_face
from vqfr.face.detectors import DEFAULT_DETECTOR, Detector, make_detector
from vqfr.face.paste import paste_face
from vqfr.io import DEFAULT_MAX_PIXELS, LoadedImage, check_pixel_limit, read_image, to_uint8
from vqfr.restore.runtime import (
    DEFAULT_FIDELITY,
    FaceRuntime,
    check_batch_size,
    check_fidelity,
    check_number,
    resize_square,
)
from vqfr.restore.zoo import DEFAULT_MODEL
from vqfr.utils.device import select_device

if TYPE_CHECKING:
    import torch

CROP_SIZE = 512  # faces are aligned, saved and pasted at the FFHQ size
MAX_UPSCALE = 8.0

# (rgb uint8 H x W x 3, scale) -> upscaled rgb uint8. Real-ESRGAN fits through vqfr.restore.background.
BackgroundUpsampler = Callable[[np.ndarray, float], np.ndarray]


@dataclass
class RestoredFace:
    """One face: where it was found, the aligned input crop and the restored crop (512x512 RGB uint8)."""

    index: int
    box: tuple[float, float, float, float]
    score: float | None
    landmarks: np.ndarray
    affine: np.ndarray  # image pixels -> crop pixels
    cropped: np.ndarray
    restored: np.ndarray

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": None if self.score is None else round(float(self.score), 4),
        }


@dataclass
class RestoreResult:
    """``image`` has the input's layout (gray, RGB or RGBA; uint8 or uint16) at ``upscale`` times its size."""

    image: np.ndarray
    faces: list[RestoredFace]
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def is_gray(self) -> bool:
        return self.image.ndim == 2


def as_loaded_image(image) -> LoadedImage:
    """Accept a path, a :class:`LoadedImage`, or a numpy array (H x W gray, H x W x 3 RGB, H x W x 4 RGBA)."""
    if isinstance(image, LoadedImage):
        return image
    if isinstance(image, (str, os.PathLike)):
        raise TypeError("paths are read by FaceRestorer.restore")
    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16):
        if np.issubdtype(arr.dtype, np.floating) and arr.size and 0.0 <= arr.min() and arr.max() <= 1.0:
            arr = np.rint(arr * 255.0).astype(np.uint8)
        else:
            raise VQFRError(f"image array must be uint8, uint16 or float in [0, 1], got {arr.dtype}")
    if arr.size == 0:
        raise VQFRError(f"image array is empty (shape {arr.shape})")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        return LoadedImage(arr, None, "array")
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return LoadedImage(arr[..., :3], arr[..., 3] if arr.shape[2] == 4 else None, "array")
    raise VQFRError(f"image array must be H x W, H x W x 3 (RGB) or H x W x 4 (RGBA), got shape {arr.shape}")


class FaceRestorer:
    """Restore the faces in photos with a VQFR network.

    Args:
        model: ``auto`` (default: the published VQFR_v2 when it is here or downloadable, else the
            bundled VQFR_lite, saying why), a zoo name (``VQFR_v2``, ``VQFR_v1``, ``VQFR_lite``) or a
            checkpoint path (ours store arch + config).
        weights: explicit checkpoint file for a zoo model (skips the lookup and the download).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (or a ``torch.device``).
        half: deprecated, use ``precision="fp16"``: float16 on CUDA (ignored elsewhere, with a note).
        upscale: final scale of the whole image (the background is resized with Lanczos, or by
            ``bg_upsampler``); faces are pasted back at that scale.
        fidelity: VQFR v2's fidelity ratio, 0 = most detail from the codebook, 1 = closest to the input
            (default 0.5); a network without this control (VQFR v1: see :attr:`has_fidelity`) ignores it.
        batch_size: faces per forward pass; None: the device's default (1 on a CPU, see
            :data:`vqfr.restore.runtime.DEFAULT_BATCH_SIZE`).
        only_center_face: restore just the face nearest the image centre.
        min_eye_distance: faces whose eyes are closer than this (input pixels) are skipped and reported.
        detector: a name from ``vqfr.face.detectors.DETECTORS`` (``dlib-hog``, ``dlib-cnn``, ``mtcnn``; built
            now), any object with ``detect(rgb_uint8) -> list[DetectedFace]``, or None for the default
            detector, built on first use.
        bg_upsampler: ``(rgb_uint8, scale) -> rgb_uint8`` used for the background instead of Lanczos.
        max_pixels: refuse inputs (and outputs) larger than this many pixels; None disables the check.
        face_size: network input size; default: ``face_size`` stored in the checkpoint, else 512.
        download: allow downloading released weights that are not on this machine.
        precision: ``auto`` (default), ``fp32``, ``bf16`` or ``fp16`` (see :class:`FaceRuntime`).
        backend: ``torch`` (default) or ``onnxruntime`` (``model`` may then be an ``.onnx`` file).
        runtime: an existing :class:`FaceRuntime` to share (e.g. with a video or web front end);
            ``model``, ``weights``, ``device``, ``half``, ``precision``, ``batch_size``, ``backend``,
            ``face_size`` and ``download`` are then not used.
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        half: bool = False,
        upscale: float = 2.0,
        fidelity: float | None = None,
        batch_size: int | None = None,
        only_center_face: bool = False,
        min_eye_distance: float = 8.0,
        detector: Detector | str | None = None,
        bg_upsampler: BackgroundUpsampler | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        face_size: int | None = None,
        download: bool = True,
        progress: bool = True,
        precision: str = "auto",
        backend: str = "torch",
        runtime: FaceRuntime | None = None,
    ):
        self.upscale = _check_upscale(upscale)
        self.fidelity = DEFAULT_FIDELITY if fidelity is None else check_fidelity(fidelity)
        self._fidelity_given = fidelity is not None
        if batch_size is not None:
            check_batch_size(batch_size)
        self.only_center_face = bool(only_center_face)
        if not check_number(min_eye_distance, "minimum eye distance") >= 0:  # also rejects NaN
            raise VQFRError(f"minimum eye distance must be >= 0 pixels, got {min_eye_distance}")
        self.min_eye_distance = float(min_eye_distance)
        self.bg_upsampler = bg_upsampler
        self.max_pixels = max_pixels
        self.notes: list[str] = []

        # the detector first: a missing detector model fails before the slow network load
        if isinstance(detector, str):
            detector = make_detector(detector)
        elif detector is not None and not callable(getattr(detector, "detect", None)):
            kind = type(detector).__name__
            raise VQFRError(f"detector must be a detector name or have a detect(image) method, got {kind}")
        if runtime is None:
            if half:
                warnings.warn("FaceRestorer(half=True) is deprecated: use precision='fp16'", DeprecationWarning, 2)
                device = select_device(device)
                if device.type == "cuda":
                    precision = "fp16"
                else:
                    self.notes.append(f"--half ignored: float16 is only used on CUDA (running on {device.type})")
            runtime = FaceRuntime(
                model,
                weights,
                device=device,
                precision=precision,
                batch_size=batch_size,
                backend=backend,
                face_size=face_size,
                download=download,
                progress=progress,
            )
        elif batch_size is not None:
            runtime.batch_size = check_batch_size(batch_size)
        self.runtime = runtime
        self.notes += runtime.notes
        self._detector = detector

    # ------------------------------------------------------------------ the runtime's settings
    net = property(lambda self: self.runtime.net, doc="the PyTorch network (None with the onnxruntime backend)")
    arch = property(lambda self: self.runtime.arch, doc="the network's name in vqfr.nn.registry, e.g. ``VQFRv2``")
    has_fidelity = property(lambda self: self.runtime.has_fidelity, doc="whether ``fidelity`` changes the result")
    config = property(lambda self: self.runtime.config)
    device = property(lambda self: self.runtime.device)
    precision = property(lambda self: self.runtime.precision, doc="``fp32``, ``bf16`` or ``fp16`` as run")
    backend = property(lambda self: self.runtime.backend)
    face_size = property(lambda self: self.runtime.face_size, doc="the network's input size")
    model_name = property(lambda self: self.runtime.model_name)
    weights_path = property(lambda self: self.runtime.weights_path)
    model_reason = property(lambda self: self.runtime.model_reason, doc="with model ``auto``: which model ran and why")
    half = property(lambda self: self.runtime.precision == "fp16", doc="deprecated: ``precision == 'fp16'``")

    @property
    def batch_size(self) -> int:
        return self.runtime.batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.runtime.batch_size = check_batch_size(value)

    # ------------------------------------------------------------------ public API
    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = make_detector(DEFAULT_DETECTOR)
        return self._detector

    def restore(
        self,
        image,
        aligned: bool = False,
        fidelity: float | None = None,
        upscale: float | None = None,
        only_center_face: bool | None = None,
    ) -> RestoreResult:
        """Restore ``image`` (path, numpy array or :class:`~vqfr.io.LoadedImage`).

        With ``aligned=True`` the image is taken as one FFHQ-aligned face (resized to 512 if needed).
        """
        start = time.perf_counter()
        timings: dict[str, float] = {}
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image, max_pixels=self.max_pixels)
            timings["read"] = time.perf_counter() - start
        img = as_loaded_image(image)
        fidelity = self.fidelity if fidelity is None else check_fidelity(fidelity)
        scale = self.upscale if upscale is None else _check_upscale(upscale)
        center = self.only_center_face if only_center_face is None else bool(only_center_face)
        w, h = img.size
        check_pixel_limit(w, h, self.max_pixels, what="input image")
        out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
        check_pixel_limit(out_w, out_h, self.max_pixels, what=f"output at --upscale {scale:g}")
        notes = list(self.notes)
        if not self.has_fidelity and (self._fidelity_given or fidelity != self.fidelity):
            notes.append(f"fidelity is ignored: {self.arch} has no fidelity control")
        rgb8 = to_uint8(img.pixels)
        if img.is_gray:
            rgb8 = np.repeat(rgb8[..., None], 3, axis=2)
        result = (
            self._restore_aligned(img, rgb8, fidelity, (out_w, out_h), notes, timings)
            if aligned
            else self._restore_whole(img, rgb8, fidelity, scale, (out_w, out_h), center, notes, timings)
        )
        timings["total"] = time.perf_counter() - start
        result.timings = {k: round(v, 4) for k, v in timings.items()}
        return result

    def restore_crops(self, crops: list[np.ndarray], fidelity: float | None = None) -> list[np.ndarray]:
        """Run the network on aligned RGB uint8 crops (512x512); returns restored 512x512 crops."""
        fidelity = self.fidelity if fidelity is None else fidelity
        return self.runtime.restore_crops(crops, fidelity, out_size=CROP_SIZE)

    # ------------------------------------------------------------------ internals
    def _restore_whole(self, img, rgb8, fidelity, scale, out_size, center, notes, timings) -> RestoreResult:
        t = time.perf_counter()
        found = self.detector.detect(rgb8)
        timings["detect"] = time.perf_counter() - t
        kept: list[DetectedFace] = []
        skipped: list[dict] = []
        for face in found:
            if face.eye_distance < self.min_eye_distance:
                skipped.append({**face.to_dict(), "reason": f"too small (eyes {face.eye_distance:.1f} px apart)"})
            else:
                kept.append(face)
        if center and len(kept) > 1:
            chosen = center_face(kept, img.size[0], img.size[1])[0]
            skipped += [{**f.to_dict(), "reason": "not the centre face"} for f in kept if f is not chosen]
            kept = [chosen]

        t = time.perf_counter()
        aligned = [align_face(rgb8, face.landmarks, CROP_SIZE) for face in kept]
        restored = self.restore_crops([crop for crop, _ in aligned], fidelity) if aligned else []
        timings["restore"] = time.perf_counter() - t

        t = time.perf_counter()
        canvas = self._background(img, rgb8, scale, out_size, notes)
        if canvas.ndim == 2:
            canvas = np.repeat(canvas[..., None], 3, axis=2)
        # smallest first, so where faces overlap the larger (main) face ends on top
        by_size = sorted(zip(aligned, restored), key=lambda p: -abs(np.linalg.det(p[0][1][:, :2])))
        for (_, affine), face in by_size:
            paste_face(canvas, face, affine, scale)
        image = self._finish(img, canvas, out_size)
        timings["paste"] = time.perf_counter() - t
        faces = [
            RestoredFace(i, f.box, f.score, f.landmarks, affine, crop, res)
            for i, (f, (crop, affine), res) in enumerate(zip(kept, aligned, restored))
        ]
        if not found:
            notes.append("no face found: the image was only resized")
        return RestoreResult(image, faces, skipped, notes)

    def _restore_aligned(self, img, rgb8, fidelity, out_size, notes, timings) -> RestoreResult:
        w, h = img.size
        if (w, h) != (CROP_SIZE, CROP_SIZE):
            notes.append(f"aligned input is {w}x{h}; resized to {CROP_SIZE}x{CROP_SIZE} for the network")
        crop = resize_square(rgb8, CROP_SIZE)
        t = time.perf_counter()
        restored = self.restore_crops([crop], fidelity)[0]
        timings["restore"] = time.perf_counter() - t
        full = cv2.resize(restored, out_size, interpolation=_interp(CROP_SIZE, out_size))
        if img.bit_depth == 16:
            full = full.astype(np.uint16) * 257
        image = self._finish(img, full, out_size)
        sx, sy = CROP_SIZE / w, CROP_SIZE / h
        affine = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
        landmarks = (face_template(CROP_SIZE) - affine[:, 2]) / (sx, sy)
        face = RestoredFace(0, (0.0, 0.0, w - 1.0, h - 1.0), None, landmarks.astype(np.float32), affine, crop, restored)
        return RestoreResult(image, [face], [], notes)

    def _background(self, img: LoadedImage, rgb8: np.ndarray, scale: float, out_size, notes) -> np.ndarray:
        """The whole image at the output size, in the input's depth (gray stays 2-D)."""
        if self.bg_upsampler is not None:
            up = np.asarray(self.bg_upsampler(rgb8, scale))
            if up.ndim != 3 or up.shape[2] != 3 or up.dtype != np.uint8:
                raise VQFRError("the background upsampler must return an RGB uint8 image")
            if (up.shape[1], up.shape[0]) != out_size:
                up = cv2.resize(up, out_size, interpolation=cv2.INTER_LANCZOS4)
            if img.bit_depth == 16:
                notes.append("background upsampler works in 8 bit; the background lost its 16-bit precision")
                up = up.astype(np.uint16) * 257
            return up.copy()
        if out_size == img.size:
            return img.pixels.copy()
        return cv2.resize(img.pixels, out_size, interpolation=_interp(img.size[0], out_size))

    @staticmethod
    def _finish(img: LoadedImage, rgb: np.ndarray, out_size) -> np.ndarray:
        """Back to the input's layout: gray if it was gray, alpha (resized) appended if it had one."""
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if img.is_gray else rgb
        if img.alpha is None:
            return out
        alpha = img.alpha if out_size == img.size else cv2.resize(img.alpha, out_size, interpolation=cv2.INTER_LANCZOS4)
        if img.is_gray:
            out = np.repeat(out[..., None], 3, axis=2)
        return np.concatenate([out, alpha[..., None]], axis=2)


def _interp(src_w: int, out_size) -> int:
    return cv2.INTER_AREA if out_size[0] < src_w else cv2.INTER_LANCZOS4


def _check_upscale(value: float) -> float:
    value = check_number(value, "upscale")
    if not (math.isfinite(value) and 0 < value <= MAX_UPSCALE):
        raise VQFRError(f"upscale must be in (0, {MAX_UPSCALE:g}], got {value:g}")
    return value
