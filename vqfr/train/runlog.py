"""Where a training run reports: ``train.log``, stderr or the progress bar, TensorBoard, image grids."""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from torch import Tensor


class RunLog:
    """The reports of rank 0 (on other ranks every method does nothing); a context manager that closes its files."""

    def __init__(self, out: Path, is_main: bool, progress: bool, tensorboard: bool) -> None:
        self.out = out
        self.is_main = is_main
        self.progress = progress
        self.file = self.writer = self.bar = None
        self._stack = ExitStack()
        if not is_main:
            return
        with ExitStack() as opening:  # closes what was opened if a later part fails
            self.file = opening.enter_context(open(out / "train.log", "a", buffering=1))
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(out / "tb"))
                opening.callback(self.writer.close)
            self._stack = opening.pop_all()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def start_progress(self, total: int, initial: int, desc: str) -> None:
        """A progress bar (with ``progress``) from ``initial`` to ``total`` steps."""
        if self.is_main and self.progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)
            self._stack.callback(self.bar.close)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def line(self, text: str) -> None:
        """A time-stamped line in ``train.log`` and on stderr (above the progress bar)."""
        if not self.is_main:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if self.file is not None:
            self.file.write(f"{stamp} {text}\n")
        if self.progress:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            print(f"{stamp} {text}", file=sys.stderr, flush=True)

    def scalars(self, step: int, logs: dict[str, float], lrs: dict[str, float]) -> None:
        """The loss terms of ``step`` (to TensorBoard with the learning rates ``lrs``) and a short line."""
        if not self.is_main:
            return
        if self.writer is not None:
            for k, v in logs.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            for k, v in lrs.items():
                self.writer.add_scalar(f"lr/{k}", v, step)
        short = {k: f"{v:.4g}" for k, v in logs.items() if not k.startswith(("real_score", "fake_score"))}
        text = f"step {step} " + " ".join(f"{k}={v}" for k, v in short.items())
        if self.bar is not None:
            self.bar.set_postfix(short, refresh=False)
        else:
            print(text, file=sys.stderr, flush=True)
        if self.file is not None:
            self.file.write(text + "\n")

    def images(self, step: int, grid: Tensor) -> None:
        """An image grid ((3, H, W) in [0, 1]) to TensorBoard and to ``{out}/images/step_N.png``."""
        if not self.is_main:
            return
        from vqfr.data.images import write_png

        if self.writer is not None:
            self.writer.add_image("train/lq_texture_main_gt", grid, step)
        img = (grid.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype("uint8")
        write_png(self.out / "images" / f"step_{step:08d}.png", img)

    def validation(self, step: int, res: dict[str, float] | None) -> None:
        if res is None or not self.is_main:
            return
        if self.writer is not None:
            for k, v in res.items():
                self.writer.add_scalar(f"val/{k}", v, step)
        self.line(f"step {step}: validation psnr {res['psnr']:.3f} dB, ssim {res['ssim']:.4f}")
