"""The ``vqfr serve`` page, built with Gradio: widgets wired to :class:`vqfr.web.handlers.RestoreService`."""

from __future__ import annotations

import html
import os
import sys
import tempfile
import traceback
from pathlib import Path

import gradio as gr

from vqfr.errors import VQFRError, one_line
from vqfr.io import DEFAULT_MAX_PIXELS
from vqfr.web.handlers import DEFAULT_MAX_UPLOAD_MB, RestorerPool, RestoreService, model_choices

QUEUE_MAX_SIZE = 16  # requests waiting beyond this are refused with a "queue full" message, not piled up

_CSS = "#vqfr-status p { margin: 0.2em 0; }"


def build_app(
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    workdir: str | os.PathLike | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    detector=None,
    preload: bool = True,
) -> gr.Blocks:
    """The page as a :class:`gradio.Blocks`, its queue set to run one restoration at a time.

    ``model``/``weights`` are the default model (a zoo name or a checkpoint path); the page also offers
    the zoo's other names. Results are written under ``workdir`` (default: a new temporary folder);
    Gradio's own files go to ``$GRADIO_TEMP_DIR``, which ``vqfr serve`` points into its temporary folder.
    With ``preload`` the default model is loaded now, so a missing weights file fails here, not on the page.
    Start it with :func:`launch` (it applies the upload limit).
    """
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="vqfr-serve-"))
    pool = RestorerPool(device=device, max_pixels=max_pixels, detector=detector)
    service = RestoreService(pool, workdir, model_choices(model, weights), max_upload_mb=max_upload_mb)
    if preload:
        service.load(service.default_model)

    with gr.Blocks(title="vqfr: restore faces", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            "## vqfr: restore the faces in photos\n"
            "Drop one or several photos, choose the settings and press **Restore**. "
            "Everything runs on this machine; requests are handled one at a time."
        )
        pairs = gr.State([])
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                files = gr.File(
                    label="Photos", file_count="multiple", file_types=["image"], type="filepath", elem_id="vqfr-files"
                )
                model_box = gr.Dropdown(
                    choices=list(service.models), value=service.default_model, label="Model", elem_id="vqfr-model"
                )
                fidelity = gr.Slider(
                    0.0, 1.0, value=0.5, step=0.05, label="Fidelity (0: most detail, 1: closest to the input; v2 only)"
                )
                upscale = gr.Slider(1.0, 4.0, value=2.0, step=0.5, label="Upscale (whole photo)")
                aligned = gr.Checkbox(
                    label="Photos are aligned 512x512 face crops (skip face detection)", elem_id="vqfr-aligned"
                )
                run = gr.Button("Restore", variant="primary", elem_id="vqfr-restore")
                status = gr.Markdown(elem_id="vqfr-status")
            with gr.Column(scale=2):
                slider = gr.ImageSlider(
                    label="Before / after", type="filepath", interactive=False, elem_id="vqfr-slider", max_height=520
                )
                photos = gr.Gallery(
                    label="Restored photos (click one to compare)",
                    columns=6,
                    height=160,
                    object_fit="contain",
                    elem_id="vqfr-photos",
                )
                faces = gr.Gallery(
                    label="Restored faces", columns=6, height=180, object_fit="contain", elem_id="vqfr-faces"
                )
                download = gr.File(
                    label="Download (PNG)", file_count="multiple", interactive=False, elem_id="vqfr-download"
                )

        def on_restore(file_paths, label, fid, scale, is_aligned):
            batch = _call(service.restore, file_paths, label, fid, scale, bool(is_aligned))
            comparisons = [(str(p.before), str(p.after)) for p in batch.photos]
            return (
                comparisons[0],
                [(str(p.after), p.name) for p in batch.photos],
                [(str(path), caption) for p in batch.photos for path, caption in p.faces],
                [str(p.after) for p in batch.photos],
                batch.summary(),
                comparisons,
            )

        def on_select(comparisons, evt: gr.SelectData):
            index = evt.index if isinstance(evt.index, int) else 0
            return comparisons[index] if 0 <= index < len(comparisons) else gr.skip()

        run.click(
            on_restore,
            inputs=[files, model_box, fidelity, upscale, aligned],
            outputs=[slider, photos, faces, download, status, pairs],
            concurrency_id="restore",
        )
        photos.select(on_select, inputs=[pairs], outputs=[slider])

    app.queue(default_concurrency_limit=1, max_size=QUEUE_MAX_SIZE)
    app.vqfr_service = service  # for launch() and the tests
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860) -> str:
    """Start serving ``app`` on ``host:port`` in the background (uploads above the service's limit are refused).

    Returns the page's URL at once; the caller stops the server with ``app.close()``.
    """
    service: RestoreService = app.vqfr_service
    # Offline-first: system fonts, so the page never waits for a font server.
    fonts = {"font": ["ui-sans-serif", "system-ui", "sans-serif"], "font_mono": ["ui-monospace", "monospace"]}
    theme = gr.themes.Default(**fonts)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            quiet=True,
            show_error=False,
            prevent_thread_lock=True,
            max_file_size=service.max_upload_bytes,
            allowed_paths=[str(service.workdir)],
            ssr_mode=False,
            mcp_server=False,
            theme=theme,
            css=_CSS,
        )
    except OSError:
        # Gradio's own text talks about its environment variables; say what to do with ours
        why = "in use, or not an address of this machine"
        raise VQFRError(f"cannot listen on {host}:{port} ({why}): choose another --port or --host") from None
    return f"http://{host}:{port}/"


def _call(fn, *args):
    """``fn(*args)``, its errors shown on the page as one readable line; a bug is logged here, not shown there."""
    try:
        return fn(*args)
    except VQFRError as err:
        raise gr.Error(html.escape(one_line(str(err))), title="Cannot restore", print_exception=False) from None
    except MemoryError:
        raise gr.Error("out of memory: try a smaller photo or a lower upscale", print_exception=False) from None
    except Exception:
        traceback.print_exc(file=sys.stderr)
        message = "internal error while restoring (the details are in the server's log)"
        raise gr.Error(message, print_exception=False) from None
