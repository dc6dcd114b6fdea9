"""``vqfr serve``: a local web page to restore photos (needs the ``vqfr[web]`` extra)."""

from __future__ import annotations

import argparse
import sys

from vqfr.cli.options import MODEL_NAMES_HELP


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page to restore photos (pip install 'vqfr[web]')",
        description=(
            "Serve a page to restore photos in the browser: before/after view, face crops, model, fidelity and "
            "upscale, PNG download. One model is loaded once and requests run one at a time. Listens on "
            "127.0.0.1 (this machine only) unless --host says otherwise; everything it writes goes to a "
            "temporary folder removed on exit."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME|PATH",
        help=f"the page's default model: {MODEL_NAMES_HELP}, or a checkpoint path; the page also offers the others",
    )
    p.add_argument("--weights", default=None, metavar="PATH", help="weights file for --model (no lookup, no download)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument(
        "--max-upload-mb", type=float, default=25.0, metavar="N", help="refuse uploaded files above N MB (default 25)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    import shutil
    import signal
    import tempfile
    import time
    from pathlib import Path

    from vqfr.errors import VQFRError

    if not 0 < args.port < 65536:
        raise VQFRError(f"--port must be in 1..65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise VQFRError(f"--max-upload-mb must be positive, got {args.max_upload_mb:g}")
    if importlib.util.find_spec("gradio") is None:
        raise VQFRError('the web page needs Gradio: pip install "vqfr[web]"')

    root = Path(tempfile.mkdtemp(prefix="vqfr-serve-"))
    # Gradio keeps uploads and served copies under GRADIO_TEMP_DIR, and loading a network makes torch
    # create its inductor cache folder: point both into our folder (before their modules read the
    # variables) so that removing it on exit removes everything the server wrote.
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "torch"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = None

    def stop(signum, frame):  # SIGTERM ends the server like Ctrl-C does, through the cleanup below
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        from vqfr.web.app import build_app, launch

        app = build_app(
            model=args.model,
            weights=args.weights,
            device=args.device,
            max_upload_mb=args.max_upload_mb,
            workdir=root / "requests",
        )
        service = app.vqfr_service
        restorer = service.load(service.default_model)
        if getattr(restorer, "model_reason", None):
            print(restorer.model_reason, file=sys.stderr)
        print(f"model {restorer.model_name} ({restorer.arch}) on {restorer.device}", file=sys.stderr, flush=True)
        url = launch(app, host=args.host, port=args.port)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"note: listening on {args.host}: other machines can use this page", file=sys.stderr)
        print(f"vqfr serve: open {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("vqfr serve: stopped", file=sys.stderr)
        return 0
    finally:
        if app is not None:
            app.close()
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)
