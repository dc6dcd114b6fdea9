"""The training loop for both stages, single process or DDP under torchrun.

One step (the published recipe, generalised over the four configs):
1. generator forward (stage 1: VQGAN on the HQ image; stage 2: VQFR on the degraded image,
   the frozen stage-1 VQGAN encodes the HQ image into target codes/features);
2. generator loss = L1 + perceptual (+ style) + codebook / code losses + adversarial terms
   of every discriminator past its ``start_step`` (optionally with the adaptive weight);
3. each active discriminator: its GAN loss on real vs detached fake, plus lazy R1 every
   ``r1_every`` steps for those with ``r1: true``.
"""

from __future__ import annotations

import bisect
import contextlib
import inspect
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vqfr.errors import VQFRError
from vqfr.nn.quantize import L2VectorQuantizerKmeans
from vqfr.utils.dist import DistInfo, any_rank, barrier, cleanup, gather_objects, init_distributed, mean_over_ranks
from vqfr.utils.paths import unwritable_reason

from . import checkpointing as ckpt
from .codebook import DeadCodeRestarter
from .config import dump_config
from .discriminators import build_discriminator
from .ema import EMA
from .losses import (
    adaptive_weight,
    code_index_loss,
    discriminator_gan_loss,
    generator_gan_loss,
    l1_loss,
    mse_loss,
    r1_penalty,
)
from .nets import build_generator, init_from_stage1, load_stage1, param_groups, zero_init_main_branch
from .perceptual import build_perceptual


@dataclass
class Adversary:
    """One discriminator with its optimizer and the options of its loss terms."""

    name: str
    net: nn.Module  # the bare module (generator-side terms, checkpoints)
    wrapped: nn.Module  # DDP wrapper in distributed runs, else ``net`` (discriminator updates)
    opt: torch.optim.Optimizer
    opts: dict[str, Any]


def _adam(params, opt_cfg: dict) -> torch.optim.Adam:
    return torch.optim.Adam(
        params,
        lr=float(opt_cfg["lr"]),
        betas=tuple(float(b) for b in opt_cfg.get("betas", (0.9, 0.999))),
        weight_decay=float(opt_cfg.get("weight_decay", 0.0)),
    )


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

        amp = cfg["train"]["amp"]
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
        if amp == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise VQFRError("train.amp bf16 is not supported on this GPU; set train.amp: off")
        self.amp_dtype = torch.bfloat16 if amp == "bf16" else None

        self.train_set = self._train_set()  # fail fast on a missing dataset, before building networks
        vcfg = cfg["data"]["val"]
        if vcfg and not (vcfg.get("gt") and Path(vcfg["gt"]).is_dir()):
            raise VQFRError(f"validation folder data.val.gt not found: {vcfg.get('gt')} (set data.val: null to skip)")

        torch.manual_seed(int(cfg["seed"]))  # identical initial weights on every rank
        self.g = build_generator(cfg).to(self.device)
        self.g1 = None
        if self.stage == "restoration":
            self.g1 = load_stage1(cfg).to(self.device)
            if cfg["network"]["init_from_stage1"]:
                init_from_stage1(self.g, self.g1)
            if cfg["network"]["zero_init_main_branch"]:
                zero_init_main_branch(self.g)
        groups = param_groups(cfg, self.g)
        optimized = {id(p) for group in groups.values() for p in group}
        # Parameters that need gradients but no optimizer updates (VQFRv2's shared output conv).
        self._measure_only = [p for p in self.g.parameters() if p.requires_grad and id(p) not in optimized]
        n_train = sum(p.numel() for p in self.g.parameters() if id(p) in optimized)
        n_all = sum(p.numel() for p in self.g.parameters())
        self.param_summary = f"{n_train / 1e6:.2f}M of {n_all / 1e6:.2f}M generator parameters trained"
        opt_cfgs = {"g": cfg["train"]["optim_g"], "enc": cfg["train"]["optim_g"], "main": cfg["train"]["optim_g_main"]}
        self.g_opts = {k: _adam(v, opt_cfgs[k]) for k, v in groups.items()}
        self.base_lrs = {k: float(opt_cfgs[k]["lr"]) for k in groups}
        self.ema = EMA(self.g, cfg["train"]["ema_decay"]) if cfg["train"]["ema_decay"] > 0 else None
        every = int(cfg["train"]["restart_dead_codes_every"])
        self.restarter = DeadCodeRestarter(self.g.quantizer.num_code, every, int(cfg["seed"])) if every else None

        self.perceptual = build_perceptual(cfg["losses"]["perceptual"])
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        self.perceptual_name = self.perceptual.name if self.perceptual is not None else "none"

        self.adversaries: list[Adversary] = []
        for d in cfg["discriminators"]:
            net = build_discriminator(d["arch"], d["config"]).to(self.device)
            if self.info.distributed and self.device.type == "cuda":
                net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
            self.adversaries.append(Adversary(d["name"], net, net, _adam(net.parameters(), cfg["train"]["optim_d"]), d))

        self.resumed_from = ckpt.resolve_resume(resume, self.ckpt_dir)
        if self.resumed_from is not None:
            self._load(self.resumed_from)
        else:
            torch.manual_seed(int(cfg["seed"]) * 1000 + self.info.rank)

        self.g_train = self.g
        if self.info.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # The generator's only buffers are the v1 quantizer's, kept in step by the quantizer itself.
            no_sync = (
                {"forward_sync_buffers": False}
                if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
                else {"broadcast_buffers": False}
            )
            self.g_train = DDP(
                self.g,
                device_ids=ids,
                find_unused_parameters=bool(cfg["train"]["find_unused_parameters"]),
                **no_sync,
            )
            for adv in self.adversaries:  # batch-norm statistics and spectral-norm vectors follow rank 0
                adv.wrapped = DDP(adv.net, device_ids=ids)
        self.g.train()
        for adv in self.adversaries:
            adv.net.train()

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        rngs = gather_objects(ckpt.rng_state(), self.info)
        return {
            "step": self.step,
            "arch": self.arch,
            "world_size": self.info.world_size,
            "nets": {"g": self.g.state_dict(), **{a.name: a.net.state_dict() for a in self.adversaries}},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optims": {
                **{f"g_{k}": o.state_dict() for k, o in self.g_opts.items()},
                **{f"d_{a.name}": a.opt.state_dict() for a in self.adversaries},
            },
            "rng": rngs,
            "quantizers": {name: m.training_state() for name, m in self._kmeans_quantizers()},
            "code_usage": self.restarter.state_dict() if self.restarter is not None else None,
            "config": self.cfg,
        }

    def _kmeans_quantizers(self) -> list[tuple[str, L2VectorQuantizerKmeans]]:
        """The v1 quantizers whose k-means reservoir is part of the training state."""
        return [(n, m) for n, m in self.g.named_modules() if isinstance(m, L2VectorQuantizerKmeans)]

    def _load(self, path: Path) -> None:
        state = ckpt.load_state(path)
        if state.get("arch") != self.arch:
            raise VQFRError(f"{path} was trained as {state.get('arch')}, this config trains {self.arch}")
        try:
            self.g.load_state_dict(state["nets"]["g"])
            for a in self.adversaries:
                a.net.load_state_dict(state["nets"][a.name])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["nets"]["g"])
            for k, o in self.g_opts.items():
                o.load_state_dict(state["optims"][f"g_{k}"])
            for a in self.adversaries:
                a.opt.load_state_dict(state["optims"][f"d_{a.name}"])
            saved_quantizers = state.get("quantizers") or {}
            for name, m in self._kmeans_quantizers():
                if name in saved_quantizers:
                    m.load_training_state(saved_quantizers[name])
            if self.restarter is not None and state.get("code_usage") is not None:
                self.restarter.load_state_dict(state["code_usage"])
        except (KeyError, RuntimeError, ValueError) as err:
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            raise VQFRError(f"{path} does not match this config ({first})") from None
        self.step = int(state["step"])
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

        net = self.ema.module if self.ema is not None else self.g
        extra = {
            "params": {k: v.detach().cpu() for k, v in self.g.state_dict().items()},
            "step": self.step,
            "face_size": int(self.cfg["data"]["train"]["size"]),  # the restorer runs the net at this size
        }
        save_checkpoint(path, net, arch=self.arch, config=self.cfg["network"]["config"], extra=extra)

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _last_layer(self, output: str) -> Tensor:
        if output == "main_dec" and self.arch == "VQFRv1":
            return self.g.get_main_last_layer()
        return self.g.get_last_layer()

    def _forward_g(self, gt: Tensor, lq: Tensor | None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Generator outputs and its non-image loss terms (codebook / code matching)."""
        losses = self.cfg["losses"]
        terms: dict[str, Tensor] = {}
        with self._autocast():
            if self.stage == "codebook":
                res, cb_loss = self.g_train(gt, iters=self.step, return_keys=("dec",))
                outputs = {"dec": res["dec"]}
                if self.restarter is not None:
                    self.restarter.update(res["quant_index"])
                if losses["codebook_weight"]:
                    terms["codebook"] = float(losses["codebook_weight"]) * cb_loss.float()
            elif self.arch == "VQFRv2":
                # Up to main_branch_start only the code predictor trains: at fidelity 0 the network skips
                # the main branch, main_dec is the (frozen) texture output and its image losses drop out.
                codes_only = self.step <= int(self.cfg["train"]["main_branch_start"])
                ratio = 0.0 if codes_only else float(self.cfg["train"]["fidelity_ratio"])
                res = self.g_train(lq, fidelity_ratio=ratio)
                outputs = {"main_dec": res["main_dec"], "texture_dec": res["texture_dec"]}
                with torch.no_grad():
                    hq, _ = self.g1(gt, return_keys=())
                if losses["quant_feature_weight"]:
                    w = float(losses["quant_feature_weight"])
                    terms["quant_feature"] = w * mse_loss(res["enc_feat"].float(), hq["quant_feat"].float())
                if losses["quant_index_weight"]:
                    if "quant_logit" not in res:
                        raise VQFRError("losses.quant_index_weight needs code_selection_mode: Predict")
                    w = float(losses["quant_index_weight"])
                    terms["quant_index"] = w * code_index_loss(res["quant_logit"], hq["quant_index"])
            else:  # VQFRv1
                res = self.g_train(lq, iters=self.step, return_keys=("dec", "feat_dict"))
                outputs = {"dec": res["dec"], "main_dec": res["main_dec"]}
                if losses["quant_feature_weight"]:
                    with torch.no_grad():
                        hq, _ = self.g1(gt, return_keys=("feat_dict",))
                    w = float(losses["quant_feature_weight"])
                    terms["quant_feature"] = w * sum(
                        mse_loss(
                            res["feat_dict"][lvl]["z_conv"].float(), hq["feat_dict"][lvl]["z_quant_before_conv"].float()
                        )
                        for lvl in res["feat_dict"]
                    )
        return {k: v.float() for k, v in outputs.items()}, terms

    def train_step(self, batch: dict) -> dict[str, Tensor]:
        """One generator update and one update of every active discriminator; returns detached logs."""
        losses = self.cfg["losses"]
        gt = batch["gt"].to(self.device, non_blocking=True)
        lq = batch["lq"].to(self.device, non_blocking=True) if "lq" in batch else None
        for a in self.adversaries:
            a.net.requires_grad_(False)

        outputs, terms = self._forward_g(gt, lq)
        # An output that carries no gradient (VQFRv2's frozen texture branch) gets no image losses
        # and no adversary: they could not change the generator.
        trained = {k for k, v in outputs.items() if v.requires_grad}
        active = [
            a for a in self.adversaries if self.step > int(a.opts["start_step"]) and a.opts["target"] in trained
        ]
        by_output: dict[str, dict[str, Tensor]] = {k: {} for k in outputs}
        for key, w in losses["pixel"].items():
            if w and key in trained:
                by_output[key]["pixel"] = float(w) * l1_loss(outputs[key], gt)
        if self.perceptual is not None:
            for key in losses["perceptual"].get("outputs", ["dec"]):
                if key not in trained:
                    continue
                p, s = self.perceptual(outputs[key], gt)
                by_output[key]["perceptual"] = p
                if s is not None:
                    by_output[key]["style"] = s
        for key, parts in by_output.items():
            for name, value in parts.items():
                terms[f"{name}_{key}"] = value
        for a in active:
            with self._autocast():
                pred = a.net(outputs[a.opts["target"]])
            g_loss = generator_gan_loss(pred.float(), a.opts["loss"])
            weight = float(a.opts["g_weight"])
            if a.opts["adaptive"]:
                recon = [by_output[a.opts["target"]][t] for t in a.opts["adaptive"] if t in by_output[a.opts["target"]]]
                if not recon:
                    raise VQFRError(f"discriminator {a.name}: none of its adaptive terms is computed")
                aw = adaptive_weight(sum(recon), g_loss, self._last_layer(a.opts["target"]))
                terms[f"adaptive_w_{a.name}"] = aw
                weight = weight * aw
            terms[f"g_gan_{a.name}"] = weight * g_loss

        total = sum(v for k, v in terms.items() if not k.startswith("adaptive_w_"))
        for o in self.g_opts.values():
            o.zero_grad(set_to_none=True)
        total.backward()
        for o in self.g_opts.values():
            o.step()
        for p in self._measure_only:
            p.grad = None
        logs = {k: v.detach() for k, v in terms.items()}
        logs["g_total"] = total.detach()
        if self.restarter is not None:
            emb = self.g.quantizer.embedding.weight
            ema_emb = self.ema.module.quantizer.embedding.weight.data if self.ema is not None else None
            moved = self.restarter.restart(self.step, self.g.encoder, gt, emb, self.g_opts["g"], ema_emb)
            if moved is not None:
                logs["codes_restarted"] = torch.tensor(float(moved))

        for a in active:
            a.net.requires_grad_(True)
            a.opt.zero_grad(set_to_none=True)
            fake = outputs[a.opts["target"]].detach()
            with self._autocast():
                fake_pred = a.wrapped(fake)
                real_pred = a.wrapped(gt)
            d_loss = float(a.opts["d_loss_scale"]) * discriminator_gan_loss(
                real_pred.float(), fake_pred.float(), a.opts["loss"]
            )
            d_loss.backward()
            logs[f"d_{a.name}"] = d_loss.detach()
            logs[f"real_score_{a.name}"] = real_pred.detach().float().mean()
            logs[f"fake_score_{a.name}"] = fake_pred.detach().float().mean()
            every = int(losses["r1_every"])
            if a.opts["r1"] and self.step % every == 0:
                real = gt.detach().requires_grad_(True)
                pred = a.wrapped(real)
                r1 = r1_penalty(pred.float(), real)
                # 0 * pred keeps every parameter in the graph, which DDP's reducer requires.
                (float(losses["r1_weight"]) / 2 * r1 * every + 0.0 * pred.float().mean()).backward()
                logs[f"r1_{a.name}"] = r1.detach()
            a.opt.step()
        for a in self.adversaries:
            a.net.requires_grad_(False)
        if self.ema is not None:
            self.ema.update(self.g)
        self._last = {"gt": gt, "lq": lq, **{k: v.detach() for k, v in outputs.items()}}
        return logs

    def _set_lr(self) -> None:
        sch = self.cfg["train"]["scheduler"]
        factor = float(sch["gamma"]) ** bisect.bisect_right(sorted(sch["milestones"] or []), self.step - 1)
        for k, o in self.g_opts.items():
            for group in o.param_groups:
                group["lr"] = self.base_lrs[k] * factor
        d_lr = float(self.cfg["train"]["optim_d"]["lr"]) * factor
        for a in self.adversaries:
            for group in a.opt.param_groups:
                group["lr"] = d_lr

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

    def _restore_fn(self, net: nn.Module):
        vcfg = self.cfg["data"]["val"] or {}
        ratio = float(vcfg.get("fidelity_ratio", 1.0))
        if self.stage == "codebook":
            return lambda lq, gt: net(gt)[0]["dec"]
        if self.arch == "VQFRv2":
            return lambda lq, gt: net(lq, fidelity_ratio=ratio)["main_dec"]
        return lambda lq, gt: net(lq, return_keys=("dec",))["main_dec"]

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
        deg = DegradationConfig.from_dict(deg) if (deg is not None and self.stage == "restoration") else None
        ds = PairedFaceDataset(
            vcfg["gt"],
            int(vcfg.get("size") or self.cfg["data"]["train"]["size"]),
            lq_root=vcfg.get("lq"),
            degradation=deg,
            seed=int(vcfg.get("seed", 0)),
            include=vcfg.get("include"),
            exclude=vcfg.get("exclude"),
        )
        net = self.ema.module if self.ema is not None else self.g
        was_training = net.training
        net.eval()
        restore = self._restore_fn(net)
        n = len(ds) if vcfg.get("max_images") is None else min(len(ds), int(vcfg["max_images"]))
        psnr, ssim = [], []
        for i in range(n):
            s = ds[i]
            lq, gt = s["lq"][None].to(self.device), s["gt"][None].to(self.device)
            with self._autocast():
                out = restore(lq, gt)
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
        last = self._last
        if self.stage == "codebook":
            cols = [last["gt"], last["dec"]]
        else:
            texture = last["texture_dec"] if "texture_dec" in last else last["dec"]
            cols = [last["lq"], texture, last["main_dec"], last["gt"]]
        cols = [c[:max_rows].float().clamp(-1, 1).add(1).div(2).cpu() for c in cols]
        rows = torch.cat(cols, dim=3)  # side by side
        return torch.cat(list(rows), dim=1)  # stack samples vertically -> (3, H*n, W*k)

    # ------------------------------------------------------------------ the loop

    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self._stop_signal = signal.Signals(signum).name

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
        cfg, log_cfg = self.cfg, self.cfg["logging"]
        total = int(cfg["train"]["total_steps"])
        end = min(total, self.stop_at) if self.stop_at else total
        writer = log_file = bar = None
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            from vqfr.utils.atomic import atomic_write_text

            resolved = dict(cfg)
            resolved["losses"] = {
                **cfg["losses"],
                "perceptual": {**cfg["losses"]["perceptual"], "ran": self.perceptual_name},
            }
            atomic_write_text(self.out / "config.yml", dump_config(resolved))
            log_file = open(self.out / "train.log", "a", buffering=1)  # noqa: SIM115 - closed in finally
            if log_cfg["tensorboard"]:
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(str(self.out / "tb"))
        self._log(
            log_file,
            f"{'resuming ' + str(self.resumed_from) + ' at' if self.resumed_from else 'starting'} step {self.step}"
            f" | {self.arch} {self.stage} | {self.info.world_size} process(es) on {self.device.type}"
            f" | perceptual: {self.perceptual_name} | amp: {'bf16' if self.amp_dtype else 'off'}"
            f" | {self.param_summary}",
        )
        handlers = {}
        if sys.platform != "win32":
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                for sig in (signal.SIGINT, signal.SIGTERM):
                    handlers[sig] = signal.signal(sig, self._on_signal)
        stopped_by = None
        last_logs: dict[str, float] = {}
        start_step, t0 = self.step, time.time()
        try:
            if self.info.is_main and self.show_progress:
                from tqdm import tqdm

                bar = tqdm(total=end, initial=self.step, desc=cfg.get("name") or self.arch, dynamic_ncols=True)
            if self.step < end:
                for batch in _unwrap_worker_errors(self._train_loader()):
                    self.step += 1
                    self._set_lr()
                    logs = self.train_step(batch)
                    if not torch.isfinite(torch.stack([v.float().reshape(()) for v in logs.values()])).all():
                        bad = [k for k, v in logs.items() if not torch.isfinite(v).all()]
                        raise VQFRError(f"loss {', '.join(bad)} became non-finite at step {self.step}; lower the lr")
                    if callback is not None:
                        callback(self.step, logs)
                    if bar is not None:
                        bar.update(1)
                    if self.step % int(log_cfg["print_every"]) == 0 or self.step == end:
                        last_logs = mean_over_ranks({k: float(v) for k, v in logs.items()}, self.info)
                        self._write_scalars(writer, log_file, bar, last_logs)
                    if self.info.is_main and self.step % int(log_cfg["image_every"]) == 0:
                        self._write_images(writer)
                    if self.step % int(log_cfg["val_every"]) == 0:
                        self._write_val(writer, log_file, self.validate())
                    stop = any_rank(self._stop_signal is not None, self.info)
                    if self.step % int(log_cfg["checkpoint_every"]) == 0 or self.step >= end or stop:
                        path = self.save()
                        if path is not None:
                            self._log(log_file, f"step {self.step}: saved {path}")
                    if stop:
                        stopped_by = self._stop_signal or "another rank"
                        break
                    if self.step >= end:
                        break
            if self.step >= total and self.info.is_main:
                self.export(self.out / "weights" / "net_g_final.pth")
                self._log(log_file, f"finished: weights in {self.out / 'weights' / 'net_g_final.pth'}")
            if stopped_by:
                self._log(log_file, f"stopped by {stopped_by} at step {self.step}; resume with --resume auto")
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            if log_file is not None:
                log_file.close()
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

    def _log(self, log_file, line: str) -> None:
        if not self.info.is_main:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        if log_file is not None:
            log_file.write(f"{stamp} {line}\n")
        if self.show_progress:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)  # above the progress bar
        else:
            print(f"{stamp} {line}", file=sys.stderr, flush=True)

    def _write_scalars(self, writer, log_file, bar, logs: dict[str, float]) -> None:
        if not self.info.is_main:
            return
        if writer is not None:
            for k, v in logs.items():
                writer.add_scalar(f"train/{k}", v, self.step)
            for k, o in self.g_opts.items():
                writer.add_scalar(f"lr/g_{k}", o.param_groups[0]["lr"], self.step)
        short = {k: f"{v:.4g}" for k, v in logs.items() if not k.startswith(("real_score", "fake_score"))}
        line = f"step {self.step} " + " ".join(f"{k}={v}" for k, v in short.items())
        if bar is not None:
            bar.set_postfix(short, refresh=False)
        else:
            print(line, file=sys.stderr, flush=True)
        if log_file is not None:
            log_file.write(line + "\n")

    def _write_images(self, writer) -> None:
        """The current batch as a grid, to TensorBoard and to ``{out}/images/step_N.png``."""
        from vqfr.data.images import write_png

        grid = self.image_grid()
        if writer is not None:
            writer.add_image("train/lq_texture_main_gt", grid, self.step)
        img = (grid.permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype("uint8")
        write_png(self.out / "images" / f"step_{self.step:08d}.png", img)

    def _write_val(self, writer, log_file, res: dict[str, float] | None) -> None:
        if res is None or not self.info.is_main:
            return
        if writer is not None:
            for k, v in res.items():
                writer.add_scalar(f"val/{k}", v, self.step)
        self._log(log_file, f"step {self.step}: validation psnr {res['psnr']:.3f} dB, ssim {res['ssim']:.4f}")


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
