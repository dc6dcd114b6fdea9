"""What the web page does, without the web page: load a model once, restore uploaded photos into a work folder.

No gradio here, so the request handling is tested directly; :mod:`vqfr.web.app` only wires it to widgets.
Errors are :class:`~vqfr.errors.VQFRError` with one-line messages that name the upload, never the
temporary path it was stored at.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vqfr.errors import VQFRError, one_line
from vqfr.io import DEFAULT_MAX_PIXELS, read_image, to_uint8, write_image
from vqfr.restore.zoo import AUTO, DEFAULT_MODEL, ZOO, zoo_model

DEFAULT_MAX_UPLOAD_MB = 25.0
REQUEST_MAX_AGE_S = 3600.0  # a request's files are kept this long (the page may still show them), then pruned


@dataclass
class PhotoResult:
    """One restored upload: PNGs for the before/after view and the download, and the restored face crops."""

    name: str
    before: Path
    after: Path
    size: tuple[int, int]  # (width, height) of ``after``
    faces: list[tuple[Path, str]]  # (restored crop PNG, caption)
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    """Every upload of one request: those restored, and one line per upload that failed."""

    photos: list[PhotoResult]
    failures: list[str]

    def summary(self) -> str:
        """Short Markdown for the page: counts, notes and failures, each on its own line."""
        faces = sum(len(p.faces) for p in self.photos)
        lines = [f"**{len(self.photos)} photo(s) restored, {faces} face(s).**"]
        for photo in self.photos:
            w, h = photo.size
            lines.append(f"- {_md(photo.name)}: {len(photo.faces)} face(s), {w}x{h}")
            lines += [f"  - note: {_md(note)}" for note in photo.notes]
        lines += [f"- failed: {_md(failure)}" for failure in self.failures]
        return "\n".join(lines)


def model_choices(
    model: str | None = None, weights: str | os.PathLike | None = None
) -> dict[str, tuple[str, str | None]]:
    """The page's model list: label -> (model, weights). ``model`` first, then ``auto`` and the zoo names.

    ``weights`` goes with ``model`` only. Users of the page pick from this list; they cannot name files.
    """
    model = os.fspath(model or DEFAULT_MODEL)
    zoo = zoo_model(model)
    label = zoo.name if zoo else (AUTO if model.strip().lower() == AUTO else model)
    weights = None if weights is None else os.fspath(weights)
    return {label: (label, weights), **{name: (name, None) for name in (AUTO, *ZOO) if name != label}}


class RestorerPool:
    """:class:`~vqfr.FaceRestorer` objects keyed by (model, weights), so a model is loaded once and shared.

    Keeps the ``keep`` most recently used (default 1: switching models frees the previous one, a small
    machine holds one network). A lock serialises loading and restoring, whatever the web server does.
    """

    def __init__(
        self,
        device: str = "auto",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        detector=None,
        keep: int = 1,
        factory: Callable[..., object] | None = None,
    ):
        self.device = device
        self.max_pixels = max_pixels
        self.detector = detector
        self.keep = max(1, int(keep))
        self._factory = factory
        self._restorers: OrderedDict[tuple[str, str | None], object] = OrderedDict()
        self.lock = threading.RLock()
        self.loads = 0  # how many networks were loaded (the tests check reuse)

    def get(self, model: str, weights: str | None = None):
        """The restorer for (model, weights), loading it (and dropping the least recently used) if needed."""
        key = (model, weights)
        with self.lock:
            if key in self._restorers:
                self._restorers.move_to_end(key)
                return self._restorers[key]
            while len(self._restorers) >= self.keep:  # free the old network before loading the new one
                self._restorers.popitem(last=False)
            restorer = self._make(model, weights)
            self.loads += 1
            self._restorers[key] = restorer
            return restorer

    def _make(self, model: str, weights: str | None):
        if self._factory is not None:
            return self._factory(model, weights)
        from vqfr.restore.pipeline import FaceRestorer

        return FaceRestorer(
            model=model,
            weights=weights,
            device=self.device,
            max_pixels=self.max_pixels,
            detector=self.detector,
            progress=False,
        )


class RestoreService:
    """Restores uploads with models from ``pool``; writes only inside ``workdir`` (one sub-folder per request)."""

    def __init__(
        self,
        pool: RestorerPool,
        workdir: str | os.PathLike,
        models: dict[str, tuple[str, str | None]],
        max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
        max_age_s: float = REQUEST_MAX_AGE_S,
    ):
        if not models:
            raise VQFRError("no models to offer")
        if not max_upload_mb > 0:
            raise VQFRError(f"the upload limit must be a positive number of MB, got {max_upload_mb}")
        self.pool = pool
        self.workdir = Path(workdir)
        self.models = dict(models)
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.max_age_s = max_age_s

    @property
    def default_model(self) -> str:
        return next(iter(self.models))

    def load(self, label: str):
        """The restorer for a model label of :attr:`models` (loaded on first use)."""
        if label not in self.models:
            raise VQFRError(f"unknown model {label!r} (choose one of: {', '.join(self.models)})")
        return self.pool.get(*self.models[label])

    def restore(
        self, files: list[str | os.PathLike] | None, label: str, fidelity: float, upscale: float, aligned: bool
    ) -> BatchResult:
        """Restore every upload; a bad file does not stop the others. Raises when nothing could be restored."""
        files = [f for f in (files or []) if f]
        if not files:
            raise VQFRError("choose one or more photos first")
        self._prune()
        folder = self.workdir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir(parents=True)
        photos: list[PhotoResult] = []
        failures: list[str] = []
        with self.pool.lock:  # one request at a time on the network, whatever the web layer allows
            restorer = self.load(label)
            used: set[str] = set()
            for path in files:
                name = Path(path).name
                try:
                    photos.append(self._restore_one(restorer, Path(path), folder, used, fidelity, upscale, aligned))
                except VQFRError as err:
                    failures.append(one_line(str(err).replace(os.fspath(path), name)))
        if not photos:
            raise VQFRError("; ".join(failures))
        return BatchResult(photos, failures)

    def _restore_one(self, restorer, path: Path, folder: Path, used: set[str], fidelity, upscale, aligned):
        name = path.name
        try:
            size = path.stat().st_size
        except OSError as err:
            raise VQFRError(f"{name}: cannot read the upload ({err.strerror or err})") from None
        if size > self.max_upload_bytes:
            limit = self.max_upload_bytes / 2**20
            raise VQFRError(f"{name}: {size / 2**20:.1f} MB, above the upload limit of {limit:g} MB")
        image = read_image(path, max_pixels=restorer.max_pixels)
        result = restorer.restore(image, aligned=aligned, fidelity=fidelity, upscale=upscale)
        stem = _unique_stem(path.stem, used)
        before = write_image(folder / f"{stem}_input.png", to_uint8(image.to_array()))
        after = write_image(folder / f"{stem}_restored.png", result.image)
        faces = [
            (write_image(folder / f"{stem}_face{face.index:02d}.png", face.restored), f"{name} · face {face.index + 1}")
            for face in result.faces
        ]
        h, w = result.image.shape[:2]
        return PhotoResult(name, before, after, (w, h), faces, list(result.notes))

    def _prune(self) -> None:
        """Remove request folders older than ``max_age_s``, so a long-running server does not fill the disk."""
        if not self.workdir.is_dir():
            return
        cutoff = time.time() - self.max_age_s
        for entry in self.workdir.iterdir():
            try:
                if entry.is_dir() and entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass


def _unique_stem(stem: str, used: set[str]) -> str:
    """``stem`` made safe as a file name part and unique within a request (two uploads may share a name)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem).strip(".") or "photo"
    candidate, n = safe, 1
    while candidate in used:
        n += 1
        candidate = f"{safe}_{n}"
    used.add(candidate)
    return candidate


def _md(text: str) -> str:
    """``text`` shown literally in Markdown (file names may hold markup characters)."""
    import html

    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>" else c for c in html.escape(one_line(text), quote=False))
