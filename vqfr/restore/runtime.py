"""``FaceRuntime``: a restoration network loaded once, turning aligned face crops into restored crops.

The runtime owns everything about running the network: which weights, the device, the numeric
precision, how many faces go through one forward pass, the backend (PyTorch or an ONNX file run
by onnxruntime) and warm-up. It knows nothing about photos: detection, alignment, paste-back and
outputs live in :class:`~vqfr.restore.pipeline.FaceRestorer` (and the video and web front ends),
which all use this class.

Precision: ``fp32``, ``bf16`` or ``fp16`` (``auto`` picks per device, see :func:`resolve_precision`).
Reduced precision applies to the texture decoder and the main branch only; the encoder and the
code selection always run in float32, so the chosen codes are exactly those of a float32 run and
only the decoding is rounded (see ``docs/restore.md`` for the measured effect).
"""

from __future__ import annotations

import numbers
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from vqfr import __version__
from vqfr.errors import VQFRError
from vqfr.nn.registry import Architecture, architecture, is_registered
from vqfr.restore.zoo import AUTO, DEFAULT_MODEL, ResolvedWeights, resolve_weights, vqfr_home
from vqfr.utils.device import cpu_has_native_bf16, select_device
from vqfr.utils.paths import shown

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("torch", "onnxruntime")
DEFAULT_FACE_SIZE = 512  # the FFHQ crop size, for a checkpoint whose network is not known before loading
DEFAULT_FIDELITY = 0.5
ONNX_OPSET = 17  # GridSample needs >= 16
ONNX_SUFFIX = ".onnx"

# Faces per forward pass when --batch-size is not given. Measured with benchmarks/bench_runtime.py
# (docs/restore.md): on a 2-core CPU, per-face time is flat or worse above batch 1 (bigger
# activations leave the cache), so the CPU runs one face at a time; GPUs keep the former default.
DEFAULT_BATCH_SIZE = {"cpu": 1, "cuda": 4, "mps": 4}


# ---------------------------------------------------------------- precision
def resolve_precision(precision: str, device: torch.device) -> tuple[str, list[str]]:
    """The precision to run (``fp32``/``bf16``/``fp16``) for a requested one on ``device``, with notes.

    ``auto``: bfloat16 on CUDA GPUs that support it (else float16) and on CPUs with native bfloat16,
    float32 elsewhere. An explicit choice the device cannot run is a one-line error.
    """
    import torch

    if precision not in PRECISIONS:
        raise VQFRError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    kind = device.type
    notes: list[str] = []
    if precision == "auto":
        if kind == "cuda":
            return ("bf16" if torch.cuda.is_bf16_supported() else "fp16"), notes
        if kind == "cpu" and cpu_has_native_bf16():
            return "bf16", notes
        return "fp32", notes
    if precision == "fp16" and kind == "cpu":
        raise VQFRError("precision fp16 needs a GPU; on the CPU use bf16 (where the CPU has it) or fp32")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise VQFRError(f"this GPU ({torch.cuda.get_device_name(device)}) has no bfloat16; use fp16 or fp32")
    if precision == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
        notes.append("this CPU has no native bfloat16 (AVX512-BF16/AMX): bf16 is emulated and may be slower than fp32")
    return precision, notes


def _torch_dtype(precision: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


def keep_freed_memory(enabled: bool = True) -> bool:
    """Let glibc keep freed memory for reuse (``False`` restores its defaults); whether it applied.

    A 512 px face allocates and frees maps of 16-128 MiB. glibc returns every block above 32 MiB
    to the system, and the next map is faulted in page by page, which takes about as long as the
    GroupNorm, SiLU or addition that fills it: measured on the whole network on a CPU, 1.12x
    (fidelity 0) to 1.16x (fidelity 0.5). With mmap off and trimming off, freed blocks are reused;
    the process keeps its peak memory until it exits. Process-wide; a no-op off glibc.
    """
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_MAX, 0 if enabled else 65536)
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1 if enabled else 128 * 1024)
    return bool(ok)


def prepare_for_inference(net: torch.nn.Module, reduced_parts: tuple[str, ...], dtype: torch.dtype) -> torch.nn.Module:
    """``net`` (on its device) ready to run: ``reduced_parts`` cast to ``dtype``, channels-last weights on a CPU.

    Channels-last weights make every convolution's output channels last, so activations stay in the
    layout oneDNN computes in instead of being reordered around every convolution (the convolutions
    of a 512 px face run 1.2-1.3x faster in float32 and 2-2.5x in bfloat16), and the deformable
    convolution reads its samples as contiguous channel rows. Values are unchanged (to float rounding).
    (The commands also call :func:`keep_freed_memory`; a library call does not change how the
    caller's process allocates memory.)
    """
    import torch

    for name in reduced_parts if dtype != torch.float32 else ():
        net.get_submodule(name).to(dtype)
    if next(net.parameters()).device.type == "cpu":
        net.to(memory_format=torch.channels_last)
    return net


def default_batch_size(device: torch.device | str) -> int:
    """Faces per forward pass for ``device`` when none is given (:data:`DEFAULT_BATCH_SIZE`)."""
    kind = device if isinstance(device, str) else device.type
    return DEFAULT_BATCH_SIZE.get(kind.split(":")[0], 1)


# ---------------------------------------------------------------- argument checks
def check_number(value, name: str) -> float:
    """``value`` as a float when it is a real number (not a bool, string or None); else a one-line error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise VQFRError(f"{name} must be a number, got {value!r}")
    return float(value)


def check_fidelity(value: float) -> float:
    value = check_number(value, "fidelity")
    if not (0.0 <= value <= 1.0):
        raise VQFRError(f"fidelity must be in [0, 1], got {value:g}")
    return value


def check_batch_size(value) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise VQFRError(f"batch size must be a whole number of at least 1, got {value!r}")
    return int(value)


def check_crops(crops: list[np.ndarray]) -> None:
    for i, crop in enumerate(crops):
        if not (isinstance(crop, np.ndarray) and crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3):
            got = f"shape {crop.shape} {crop.dtype}" if isinstance(crop, np.ndarray) else type(crop).__name__
            raise VQFRError(f"restore_crops takes a list of H x W x 3 RGB uint8 arrays; crop {i} is {got}")
        if min(crop.shape[:2]) < 1:
            raise VQFRError(f"restore_crops: crop {i} is empty (shape {crop.shape})")


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """``img`` at ``size`` x ``size``: area filter to shrink, Lanczos to enlarge, untouched if already there."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    interp = cv2.INTER_AREA if size < img.shape[1] else cv2.INTER_LANCZOS4
    return cv2.resize(img, (size, size), interpolation=interp)


def peek_metadata(path: Path) -> dict:
    """Top-level non-tensor entries of a checkpoint (e.g. ``face_size``) without reading the weights."""
    from vqfr.nn.safe_load import safe_load

    try:
        obj = safe_load(path, mmap=True)
    except VQFRError:  # legacy (non-zip) files cannot be memory-mapped; they carry no metadata anyway
        return {}  # a damaged file is reported by the load that follows
    return {k: v for k, v in obj.items() if isinstance(v, (int, float, str))} if isinstance(obj, dict) else {}


def _check_face_size(size) -> int:
    size = int(size)
    if size % 32 or size < 32:
        raise VQFRError(f"face size must be a multiple of 32, got {size}")
    return size


def is_onnx_path(model: str | os.PathLike) -> bool:
    return str(model).lower().endswith(ONNX_SUFFIX)


# ---------------------------------------------------------------- the runtime
class FaceRuntime:
    """A VQFR network ready to restore aligned faces.

    Args:
        model: ``auto`` (the published VQFR_v2 when it is here or downloadable, else the bundled
            VQFR_lite; :attr:`model_reason` says which and why), a zoo name (``VQFR_v2``,
            ``VQFR_v1``, ``VQFR_lite``), a checkpoint path, or (backend ``onnxruntime``) an
            ``.onnx`` file written by ``vqfr export``.
        weights: explicit checkpoint file for a zoo model (skips the lookup and the download).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (or a ``torch.device``).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see :func:`resolve_precision`).
        batch_size: faces per forward pass; None for the device's default (:func:`default_batch_size`).
        backend: ``torch``, or ``onnxruntime`` (CPU, float32): a checkpoint or zoo model is exported
            once to ``$VQFR_HOME/onnx`` and the file reused.
        face_size: network input size; default: the size stored in the checkpoint, else 512.
        warmup: run one batch now, so the first real call is not slowed by one-time set-up.
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        backend: str = "torch",
        face_size: int | None = None,
        download: bool = True,
        progress: bool = True,
        warmup: bool = False,
    ):
        import torch

        if backend not in BACKENDS:
            raise VQFRError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
        if not isinstance(precision, str):
            raise VQFRError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.backend = backend
        self.notes: list[str] = []
        self.model_reason: str | None = None  # with model `auto`: which model it chose and why
        self._torch = torch
        self.net = None
        self._session = None
        if backend == "onnxruntime":
            self._init_onnx(model, weights, device, precision, face_size, download, progress)
        else:
            if is_onnx_path(model):
                raise VQFRError(f"{shown(model)} is an ONNX file: run it with --backend onnxruntime")
            self._init_torch(model, weights, device, precision, face_size, download, progress)
        self.batch_size = default_batch_size(self.device) if batch_size is None else check_batch_size(batch_size)
        if warmup:
            self.warm_up()

    # ------------------------------------------------------------ set-up
    def _init_torch(self, model, weights, device, precision, face_size, download, progress) -> None:
        from vqfr.nn.checkpoint import load_network

        self.device = select_device(device)
        self.precision, notes = resolve_precision(precision, self.device)
        self.notes += notes
        resolved = resolve_weights(str(model), weights, download=download, progress=progress)
        self.weights_path: Path = resolved.path
        self.model_name = resolved.model.name if resolved.model else Path(resolved.path).name
        self._note_choice(resolved)
        meta = peek_metadata(resolved.path)
        net, self.arch, self.config = load_network(
            resolved.path, arch=resolved.model.arch if resolved.model else None, device=self.device
        )
        self._spec = _arch_spec(self.arch, resolved.path)
        self.face_size = _check_face_size(face_size or meta.get("face_size") or self._spec.face_size)
        self.net = prepare_for_inference(net, self._spec.reduced_parts, _torch_dtype(self.precision))

    def _init_onnx(self, model, weights, device, precision, face_size, download, progress) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise VQFRError(
                "--backend onnxruntime needs the onnxruntime package: pip install 'vqfr[onnx]'"
            ) from None
        self.device = select_device("cpu" if str(device) == "auto" else device)
        if self.device.type != "cpu":
            raise VQFRError(f"--backend onnxruntime runs on the CPU only, not on {self.device}")
        if precision not in PRECISIONS:
            raise VQFRError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if precision not in ("auto", "fp32"):
            raise VQFRError(f"--backend onnxruntime runs in fp32 only, not {precision}")
        self.precision = "fp32"
        if str(model).strip().lower() == AUTO and weights is None:  # settle `auto` once, keeping its reason
            resolved = resolve_weights(AUTO, download=download, progress=progress)
            self._note_choice(resolved)
            model = resolved.model.name
        if is_onnx_path(model) and weights is None:
            path = Path(model).expanduser()
            if not path.is_file():
                raise VQFRError(f"ONNX file not found: {shown(path)}")
            self.weights_path = path
            self.model_name = path.name
        else:
            self.weights_path = cached_onnx_export(model, weights, face_size, download=download, progress=progress)
            self.model_name = Path(str(model)).name if weights is None else Path(weights).name
        options = ort.SessionOptions()
        options.intra_op_num_threads = self._torch.get_num_threads()
        try:
            self._session = ort.InferenceSession(
                str(self.weights_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own exception types for foreign or damaged files
            first = " ".join(str(err).split())[:200]
            raise VQFRError(f"{shown(self.weights_path)} is not a usable ONNX model ({first})") from None
        meta = self._session.get_modelmeta().custom_metadata_map
        self.arch = meta.get("arch", "")
        self._spec = _arch_spec(self.arch, self.weights_path)
        self.config = None
        self._input_names = {i.name for i in self._session.get_inputs()}
        if "image" not in self._input_names:
            raise VQFRError(f"{shown(self.weights_path)} was not written by vqfr export (no 'image' input)")
        stored = int(meta.get("face_size", 0) or 0)
        if face_size and stored and int(face_size) != stored:
            raise VQFRError(f"{shown(self.weights_path)} was exported for {stored} px faces, not {face_size}")
        self.face_size = _check_face_size(face_size or stored or self._spec.face_size)

    def _note_choice(self, resolved: ResolvedWeights) -> None:
        """Keep why ``auto`` chose its model: one line the front ends print once (not a per-photo note)."""
        self.model_reason = resolved.reason

    # ------------------------------------------------------------ running
    @property
    def has_fidelity(self) -> bool:
        return self._spec.has_fidelity

    def forward(self, x: torch.Tensor, fidelity: float) -> torch.Tensor:
        """The restored batch (N, 3, S, S) in [-1, 1] float32, on the runtime's device, for ``x`` likewise."""
        torch = self._torch
        if self._session is not None:
            feed = {"image": x.detach().float().cpu().numpy()}
            if "fidelity" in self._input_names:
                feed["fidelity"] = np.asarray(fidelity, dtype=np.float32)
            return torch.from_numpy(self._session.run(["restored"], feed)[0])
        with torch.inference_mode():  # one call for every restoration network (see vqfr.nn.registry)
            return self.net(x, fidelity_ratio=fidelity)["main_dec"].float().contiguous()

    def restore_crops(
        self, crops: list[np.ndarray], fidelity: float = DEFAULT_FIDELITY, out_size: int | None = None
    ) -> list[np.ndarray]:
        """Restore aligned RGB uint8 crops (any square-ish size; resized to the network's size).

        Returns one RGB uint8 crop each, at ``out_size`` x ``out_size`` (default: the crop's own size).
        The crops go through the network ``batch_size`` at a time.
        """
        from vqfr.utils.image_tensor import tensor_to_uint8

        fidelity = check_fidelity(fidelity)
        check_crops(crops)
        torch = self._torch
        size = self.face_size
        out: list[np.ndarray] = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start : start + self.batch_size]
            x = torch.from_numpy(np.stack([resize_square(c, size) for c in chunk])).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()
            restored = tensor_to_uint8(self.forward(x, fidelity))
            for crop, face in zip(chunk, restored):
                out.append(resize_square(face, out_size or crop.shape[0]))
        return out

    def warm_up(self) -> None:
        """One forward pass on a full batch of gray faces (allocations, kernel choices, lazy set-up)."""
        gray = np.full((self.face_size, self.face_size, 3), 128, np.uint8)
        self.restore_crops([gray] * self.batch_size, fidelity=DEFAULT_FIDELITY)

    def describe(self) -> str:
        """One line for logs: model, backend, device, precision and batch size."""
        return (
            f"model {self.model_name} ({self.arch}) with {self.backend} on {self.device}, {self.precision}, "
            f"batch {self.batch_size}"
        )


def _arch_spec(arch: str, path) -> Architecture:
    """The registry entry of a restoration network; anything else is a one-line error naming ``path``."""
    if not (is_registered(arch) and architecture(arch).stage == "restoration"):
        what = f"a {arch}" if arch else "an unknown network"
        raise VQFRError(f"{shown(path)} holds {what}, not a VQFR restoration network")
    return architecture(arch)


def default_face_size(arch: str | None) -> int:
    """The input size of ``arch`` when a checkpoint states none (:data:`DEFAULT_FACE_SIZE` if unknown)."""
    return architecture(arch).face_size if is_registered(arch) else DEFAULT_FACE_SIZE


# ---------------------------------------------------------------- ONNX export
def _export_graph(net):
    """``net`` as ``(image, fidelity) -> restored`` (``image -> restored`` without fidelity), for export."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, image, fidelity=None):
            # A tensor fidelity makes VQFRv2 always run its main branch (times the fidelity),
            # so the graph holds no branch on its value.
            return self.net(image, fidelity_ratio=fidelity)["main_dec"]

    return Graph().eval()


def export_half(net: torch.nn.Module, arch: str, config: dict, out: Path, face_size: int) -> Path:
    """Save ``net`` with float16 weights (half the file; loading casts them back to float32).

    Rounding to float16 moves the weights by at most 2**-11 of their size; ``vqfr export --format
    fp16`` is how the bundled VQFR_lite was written, and docs/models.md gives the PSNR it kept.
    """
    import torch

    from vqfr.nn.checkpoint import save_checkpoint

    _arch_spec(arch, out)
    sd = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    if any(not bool(torch.isfinite(v).all()) for v in sd.values() if v.is_floating_point()):
        raise VQFRError("some weights exceed the float16 range (65504); keep this model in float32")
    save_checkpoint(out, sd, arch, config, extra={"face_size": _check_face_size(face_size)})
    return out


def export_onnx(
    net,
    arch: str,
    path: str | os.PathLike,
    face_size: int = DEFAULT_FACE_SIZE,
    opset: int = ONNX_OPSET,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``net`` (float32, any device) as an ONNX model to ``path``, atomically.

    Inputs: ``image`` (N, 3, S, S) float32 in [-1, 1] with a dynamic batch axis N, and for VQFRv2
    ``fidelity`` (a float32 scalar in [0, 1]). Output: ``restored`` (N, 3, S, S), float32, about
    [-1, 1] (not clamped). Metadata: ``arch``, ``face_size``, ``vqfr_version`` and ``metadata``.
    """
    import warnings

    import torch

    try:
        import onnx
    except ImportError:
        raise VQFRError("ONNX export needs the onnx package: pip install 'vqfr[onnx]'") from None

    from vqfr.utils.atomic import atomic_write_bytes

    spec = _arch_spec(arch, path)
    if opset < 16:
        raise VQFRError(f"ONNX opset {opset} has no GridSample (the deformable convolution needs it): use >= 16")
    face_size = _check_face_size(face_size)
    net = net.float().cpu().eval()
    graph = _export_graph(net)
    image = torch.zeros(1, 3, face_size, face_size)
    args = (image, torch.tensor(0.5)) if spec.has_fidelity else (image,)
    names = ["image", "fidelity"] if spec.has_fidelity else ["image"]
    path = Path(path)
    tmp = path.parent / f".{path.name}.export"
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic: shapes are fixed but the batch
            torch.onnx.export(
                graph,
                args,
                str(tmp),
                dynamo=False,  # the TorchScript exporter: no onnxscript dependency, handles grid_sample
                opset_version=opset,
                input_names=names,
                output_names=["restored"],
                dynamic_axes={"image": {0: "batch"}, "restored": {0: "batch"}},
            )
        model = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    info = {"arch": arch, "face_size": str(face_size), "vqfr_version": __version__, **(metadata or {})}
    for key, value in info.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    atomic_write_bytes(path, model.SerializeToString())
    return path


def cached_onnx_export(
    model: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    face_size: int | None = None,
    download: bool = True,
    progress: bool = True,
) -> Path:
    """The ONNX export of a zoo model or checkpoint, written once to ``$VQFR_HOME/onnx`` and reused.

    The cache file is named by the checkpoint's SHA-256, the face size, the opset and the vqfr
    version, so new weights or a new vqfr never reuse a stale graph.
    """
    from vqfr.nn.checkpoint import load_network
    from vqfr.utils.download import sha256_file

    resolved = resolve_weights(str(model), weights, download=download, progress=progress)
    meta = peek_metadata(resolved.path)
    arch = meta.get("arch") or (resolved.model.arch if resolved.model else None)
    size = _check_face_size(face_size or meta.get("face_size") or default_face_size(arch))
    digest = sha256_file(resolved.path)[:16]
    target = vqfr_home() / "onnx" / f"{resolved.path.stem}-{digest}-{size}px-opset{ONNX_OPSET}-v{__version__}.onnx"
    if target.is_file():
        return target
    net, arch, _ = load_network(resolved.path, arch=resolved.model.arch if resolved.model else None)
    _arch_spec(arch, resolved.path)
    if progress:
        print(f"vqfr: exporting {shown(resolved.path)} to {shown(target)} (once)", file=sys.stderr)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VQFRError(f"cannot create the ONNX cache folder {shown(target.parent)} ({err.strerror})") from None
    return export_onnx(net, arch, target, size, metadata={"source": resolved.path.name})
