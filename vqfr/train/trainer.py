"""The training loop for every network, single process or DDP under torchrun.

What one step of a network does (its losses, optimizers, validation) is its task's business:
``vqfr/train/tasks`` (the network's entry in ``vqfr.nn.registry`` names its task). The trainer runs the
loop around it: data, learning-rate schedule, logging, validation, checkpoints and exact resume,
processes and signals.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vqfr.errors import VQFRError
from vqfr.utils.device import cpu_has_native_bf16
from vqfr.utils.dist import DistInfo, any_rank, barrier, cleanup, gather_objects, init_distributed, mean_over_ranks
from vqfr.utils.paths import unwritable_reason

from . import checkpointing as ckpt
from .config import dump_config
from .nets import build_generator
from .runlog import RunLog
from .tasks import build_task


def _check_out_dir(out: Path) -> None:
    """The output folder must be writable, or creatable as such (checked before anything is built)."""
    problem = unwritable_reason(out)
    if problem is not None:
        raise VQFRError(f"output folder {out}: {problem}")


def _unwrap_worker_errors(loader) -> Iterator[dict]:
    """Iterate ``loader``; a VQFRError from a loader worker is re-raised as its own one-line message.

    PyTorch re-raises worker exceptions with the worker's whole traceback in the message;
    a bad training image must still read as one line naming the file.
    """
    it = iter(loader)
    prefix = f"{VQFRError.__module__}.{VQFRError.__qualname__}: "
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except VQFRError as err:
            lines = [line for line in str(err).splitlines() if line.strip()] or [""]
            raise VQFRError(f"training data: {lines[-1].removeprefix(prefix)}") from None
        yield batch


def _check_finite(logs: dict[str, Tensor], step: int) -> None:
    if not torch.isfinite(torch.stack([v.float().reshape(()) for v in logs.values()])).all():
        bad = [k for k, v in logs.items() if not torch.isfinite(v).all()]
        raise VQFRError(f"loss {', '.join(bad)} became non-finite at step {step}; lower the lr")


class Trainer:
    """Build everything a run needs from a merged config; :meth:`fit` trains until done or stopped."""

    def __init__(
        self,
        cfg: dict,
        out_dir: str | Path,
        resume: str | None = None,
        device: str = "auto",
        stop_at: int | None = None,
        progress: bool = True,
        dist_info: DistInfo | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        _check_out_dir(self.out)
        if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at <= 0):
            raise VQFRError(f"--stop-at must be a positive step number, got {stop_at}")
        self.info = dist_info or init_distributed(device)
        self.device = self.info.device
        self.stop_at = stop_at
        self.show_progress = progress
        self.stage = cfg["stage"]
        self.arch = cfg["network"]["arch"]
        self.step = 0
        self._stop_signal: str | None = None
        self.ckpt_dir = self.out / "checkpoints"
        self.amp, self.amp_why = self._resolve_amp(cfg["train"]["amp"])
        self.amp_dtype = torch.bfloat16 if self.amp == "bf16" else None

        self.train_set = self._train_set()  # fail fast on a missing dataset, before building networks
        vcfg = cfg["data"]["val"]
        if vcfg and not (vcfg.get("gt") and Path(vcfg["gt"]).is_dir()):
            raise VQFRError(f"validation folder data.val.gt not found: {vcfg.get('gt')} (set data.val: null to skip)")

        torch.manual_seed(int(cfg["seed"]))  # identical initial weights on every rank
        self.task = build_task(
            cfg,
            build_generator(cfg).to(self.device),
            device=self.device,
            amp_dtype=self.amp_dtype,
            sync_batchnorm=self.info.distributed and self.device.type == "cuda",
        )
        self.resumed_from = ckpt.resolve_resume(resume, self.ckpt_dir)
        if self.resumed_from is not None:
            self._load(self.resumed_from)
        else:
            torch.manual_seed(int(cfg["seed"]) * 1000 + self.info.rank)
        if self.info.distributed:
            self._wrap_ddp()
        self.task.g.train()
        for adv in self.task.adversaries:
            adv.net.train()

    def _resolve_amp(self, amp: str) -> tuple[str, str]:
        """``train.amp`` as this run uses it (``bf16`` or ``off``) and why, for the start line.

        ``auto``: bf16 autocast on GPUs that support it and on CPUs with native bf16 (AVX512-BF16,
        AMX, Arm BF16; measured 1.3-1.8x faster per step on VQFR-lite, docs/train.md), else off.
        """
        kind = self.device.type
        if amp == "auto":
            if kind == "cuda" and torch.cuda.is_bf16_supported():
                return "bf16", "auto: a GPU with bf16"
            if kind == "cpu" and cpu_has_native_bf16():
                return "bf16", "auto: a CPU with native bf16"
            return "off", "auto"
        if amp == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise VQFRError("train.amp bf16 is not supported on this GPU; set train.amp: off")
        if amp == "bf16" and kind == "cpu" and not cpu_has_native_bf16():
            return "bf16", "emulated on this CPU, likely slower than off"
        return amp, ""

    def _keep_amp_of_resumed_run(self, state: dict[str, Any]) -> None:
        """Under ``auto``, a run that started in float32 continues in float32.

        Checkpoints without the field were written when ``auto`` meant float32 on every CPU. An
        explicit ``train.amp`` switches a resumed run either way.
        """
        saved = state.get("amp", "off" if self.device.type == "cpu" else None)
        if self.cfg["train"]["amp"] == "auto" and saved == "off" and self.amp != "off":
            self.amp, self.amp_why = "off", "auto: the resumed run started in fp32; train.amp: bf16 switches"
            self.amp_dtype = self.task.amp_dtype = None

    def _wrap_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        # The generator's only buffers are the v1 quantizer's, kept in step by the quantizer itself.
        no_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
            else {"broadcast_buffers": False}
        )
        self.task.g_train = DDP(
            self.task.g,
            device_ids=ids,
            find_unused_parameters=bool(self.cfg["train"]["find_unused_parameters"]),
            **no_sync,
        )
        for adv in self.task.adversaries:  # batch-norm statistics and spectral-norm vectors follow rank 0
            adv.wrapped = DDP(adv.net, device_ids=ids)

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        rngs = gather_objects(ckpt.rng_state(), self.info)
        return {
            "step": self.step,
            "arch": self.arch,
            "world_size": self.info.world_size,
            **self.task.state_dict(),  # nets, ema, optims, quantizers, code_usage
            "rng": rngs,
            "config": self.cfg,
            "amp": self.amp,  # what auto chose: a resumed run keeps float32 (see _keep_amp_of_resumed_run)
        }

    def _load(self, path: Path) -> None:
        state = ckpt.load_state(path)
        if state.get("arch") != self.arch:
            raise VQFRError(f"{path} was trained as {state.get('arch')}, this config trains {self.arch}")
        try:
            self.task.load_state_dict(state)
        except (KeyError, RuntimeError, ValueError) as err:
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise VQFRError(f"{path} does not match this config ({first})") from None
        self.step = int(state["step"])
        self._keep_amp_of_resumed_run(state)
        rngs = state.get("rng") or []
        if len(rngs) == self.info.world_size:
            ckpt.set_rng_state(rngs[self.info.rank])
        else:  # a different number of processes: reseed deterministically
            torch.manual_seed(int(self.cfg["seed"]) * 1000 + self.info.rank + self.step)

    def save(self) -> Path | None:
        """Write the training state and the exported weights (rank 0); every rank must call it."""
        state = self._state()
        path = None
        if self.info.is_main:
            path = ckpt.checkpoint_path(self.ckpt_dir, self.step)
            ckpt.save_state(path, state)
            self.export(self.out / "weights" / "net_g_latest.pth")
            ckpt.prune_checkpoints(self.ckpt_dir, int(self.cfg["logging"]["keep_last"]))
        barrier(self.info)
        return path

    def export(self, path: str | Path) -> None:
        """Weights in the released format + arch/config: ``vqfr restore --model PATH`` loads them."""
        from vqfr.nn.checkpoint import save_checkpoint

        extra = {
            "params": {k: v.detach().cpu() for k, v in self.task.g.state_dict().items()},
            "step": self.step,
            "face_size": int(self.cfg["data"]["train"]["size"]),  # the restorer runs the net at this size
        }
        save_checkpoint(path, self.task.eval_net, arch=self.arch, config=self.cfg["network"]["config"], extra=extra)

    # ------------------------------------------------------------------ data

    def _train_set(self):
        from vqfr.data import DegradationConfig, HQFaceDataset
        from vqfr.data.datasets import AugmentConfig

        tr = self.cfg["data"]["train"]
        deg = DegradationConfig.from_dict(tr["degradation"]) if tr["degradation"] is not None else None
        return HQFaceDataset(
            tr["root"],
            tr["size"],
            tr["hflip"],
            deg,
            seed=int(self.cfg["seed"]),
            include=tr["include"],
            exclude=tr["exclude"],
            augment=AugmentConfig.from_dict(tr["augment"]),
        )

    def _train_loader(self):
        from torch.utils.data import DataLoader

        from vqfr.data import InfiniteBatchSampler

        dcfg = self.cfg["data"]
        ds = self.train_set
        sampler = InfiniteBatchSampler(
            len(ds),
            int(dcfg["batch_size_per_gpu"]),
            rank=self.info.rank,
            world_size=self.info.world_size,
            seed=int(self.cfg["seed"]),
            start_batch=self.step,
        )
        workers = int(dcfg["num_workers"])
        return DataLoader(
            ds,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=2 if workers > 0 else None,
        )

    # ------------------------------------------------------------------ validation & images

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """PSNR / SSIM on the held-out set with the EMA network (rank 0; other ranks wait)."""
        vcfg = self.cfg["data"]["val"]
        result = None
        if vcfg and self.info.is_main:
            result = self._validate(vcfg)
        barrier(self.info)
        return result

    def _validate(self, vcfg: dict) -> dict[str, float]:
        from vqfr.data import DegradationConfig, PairedFaceDataset
        from vqfr.data.images import to_image, write_png
        from vqfr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

        deg = vcfg.get("degradation", "train")
        if deg == "train":
            deg = self.cfg["data"]["train"]["degradation"]
        deg = DegradationConfig.from_dict(deg) if (deg is not None and self.task.restores_lq) else None
        ds = PairedFaceDataset(
            vcfg["gt"],
            int(vcfg.get("size") or self.cfg["data"]["train"]["size"]),
            lq_root=vcfg.get("lq"),
            degradation=deg,
            seed=int(vcfg.get("seed", 0)),
            include=vcfg.get("include"),
            exclude=vcfg.get("exclude"),
        )
        net = self.task.eval_net
        was_training = net.training
        net.eval()
        n = len(ds) if vcfg.get("max_images") is None else min(len(ds), int(vcfg["max_images"]))
        psnr, ssim = [], []
        for i in range(n):
            s = ds[i]
            lq, gt = s["lq"][None].to(self.device), s["gt"][None].to(self.device)
            with self.task.autocast():
                out = self.task.restore(net, lq, gt)
            out_img, gt_img = to_image(out[0].float()), to_image(gt[0])
            psnr.append(calculate_psnr(out_img, gt_img, crop_border=0))
            ssim.append(calculate_ssim(out_img, gt_img, crop_border=0))
            if vcfg.get("save_images"):
                write_png(self.out / "val" / f"step_{self.step:08d}" / f"{s['name']}.png", out_img)
        net.train(was_training)
        finite = [p for p in psnr if math.isfinite(p)]
        return {"psnr": sum(finite) / max(1, len(finite)), "ssim": sum(ssim) / max(1, len(ssim))}

    def image_grid(self, max_rows: int = 4) -> Tensor:
        """Rows of samples, columns LQ | texture | main | GT (stage 1: GT | reconstruction); [0, 1]."""
        cols = [c[:max_rows].float().clamp(-1, 1).add(1).div(2).cpu() for c in self.task.grid_columns()]
        rows = torch.cat(cols, dim=3)  # side by side
        return torch.cat(list(rows), dim=1)  # stack samples vertically -> (3, H*n, W*k)

    # ------------------------------------------------------------------ the loop

    def fit(self, callback: Callable[[int, dict[str, Tensor]], None] | None = None) -> dict[str, Any]:
        """Train until ``total_steps`` (or ``stop_at``), a signal, or an error; returns a summary.

        ``callback(step, logs)`` is called after every step with the detached loss terms. A write
        that fails (full or read-only disk) stops the run with a one-line VQFRError; checkpoints
        and weights are written atomically, so the last complete ones stay usable.
        """
        try:
            return self._fit(callback)
        except OSError as err:
            what = err.filename or self.out
            raise VQFRError(f"step {self.step}: cannot write {what}: {err.strerror or err}") from None

    def _fit(self, callback: Callable[[int, dict[str, Tensor]], None] | None) -> dict[str, Any]:
        total = int(self.cfg["train"]["total_steps"])
        end = min(total, self.stop_at) if self.stop_at else total
        start_step, t0 = self.step, time.time()
        if self.info.is_main:
            self._write_config()
        log = RunLog(self.out, self.info.is_main, self.show_progress, bool(self.cfg["logging"]["tensorboard"]))
        with log:
            log.line(self._start_line())
            with self._stop_on_signals():
                log.start_progress(end, self.step, self.cfg.get("name") or self.arch)
                stopped_by, last_logs = self._train_until(end, log, callback)
                if self.step >= total and self.info.is_main:
                    self.export(self.out / "weights" / "net_g_final.pth")
                    log.line(f"finished: weights in {self.out / 'weights' / 'net_g_final.pth'}")
                if stopped_by:
                    log.line(f"stopped by {stopped_by} at step {self.step}; resume with --resume auto")
        elapsed = time.time() - t0
        steps = self.step - start_step
        return {
            "step": self.step,
            "steps_run": steps,
            "seconds": elapsed,
            "steps_per_s": steps / elapsed if elapsed > 0 else 0.0,
            "stopped_by": stopped_by,
            "logs": last_logs,
            "out": str(self.out),
        }

    def _train_until(
        self, end: int, log: RunLog, callback: Callable[[int, dict[str, Tensor]], None] | None
    ) -> tuple[str | None, dict[str, float]]:
        """Steps until ``end`` or a stop request; returns who stopped the run (None) and the last logged scalars."""
        log_cfg = self.cfg["logging"]
        last_logs: dict[str, float] = {}
        if self.step >= end:
            return None, last_logs
        for batch in _unwrap_worker_errors(self._train_loader()):
            self.step += 1
            self.task.set_lr(self.step)
            logs = self.task.train_step(batch, self.step)
            _check_finite(logs, self.step)
            if callback is not None:
                callback(self.step, logs)
            log.advance()
            if self.step % int(log_cfg["print_every"]) == 0 or self.step == end:
                last_logs = mean_over_ranks({k: float(v) for k, v in logs.items()}, self.info)
                log.scalars(self.step, last_logs, self.task.learning_rates())
            if self.info.is_main and self.step % int(log_cfg["image_every"]) == 0:
                log.images(self.step, self.image_grid())
            if self.step % int(log_cfg["val_every"]) == 0:
                log.validation(self.step, self.validate())
            stop = any_rank(self._stop_signal is not None, self.info)
            if self.step % int(log_cfg["checkpoint_every"]) == 0 or self.step >= end or stop:
                path = self.save()
                if path is not None:
                    log.line(f"step {self.step}: saved {path}")
            if stop:
                return self._stop_signal or "another rank", last_logs
            if self.step >= end:
                break
        return None, last_logs

    def _write_config(self) -> None:
        """``{out}/config.yml``: the merged config, with the perceptual network that actually ran."""
        from vqfr.utils.atomic import atomic_write_text

        self.out.mkdir(parents=True, exist_ok=True)
        losses = self.cfg["losses"]
        perceptual = {**(losses["perceptual"] or {}), "ran": self.task.perceptual_name}  # null: none
        resolved = {**self.cfg, "losses": {**losses, "perceptual": perceptual}}
        atomic_write_text(self.out / "config.yml", dump_config(resolved))

    def _start_line(self) -> str:
        begin = f"resuming {self.resumed_from} at" if self.resumed_from else "starting"
        amp = f"{self.amp} ({self.amp_why})" if self.amp_why else self.amp
        return (
            f"{begin} step {self.step} | {self.arch} {self.stage}"
            f" | {self.info.world_size} process(es) on {self.device.type}"
            f" | perceptual: {self.task.perceptual_name} | amp: {amp}"
            f" | {self.task.param_summary}"
        )

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        """SIGINT / SIGTERM ask the loop to save and stop after the current step; a second one stops at once."""
        handlers = {}
        if sys.platform != "win32":
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                for sig in (signal.SIGINT, signal.SIGTERM):
                    handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signal.Signals(signum).name


def run_training(
    cfg: dict,
    out_dir: str | Path,
    resume: str | None = None,
    device: str = "auto",
    stop_at: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train one run (this process's share under torchrun) and leave the process group."""
    try:
        trainer = Trainer(cfg, out_dir, resume=resume, device=device, stop_at=stop_at, progress=progress)
        return trainer.fit()
    finally:
        cleanup()
