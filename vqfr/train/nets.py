"""Building the networks of a run: the trained generator, its frozen stage-1 teacher, the parameter groups.

Which network, which stage-1 partner and which recipe come from :mod:`vqfr.nn.registry` (its
``stage1`` and ``family``). Stage 2 (restoration) follows the published recipes:
* family v2 (VQFRv2) is initialised from the stage-1 VQGANv2 (encoder, codebook, texture decoder).
  Trained: group ``enc`` = encoder + code predictor (``feat2index``); group ``main`` = main
  branch + input-feature conv. Everything else (codebook, texture decoder and the output
  conv it shares with the main branch) is frozen. The output conv's weight keeps
  ``requires_grad`` only so the adaptive GAN weight can be measured there; no optimizer
  holds it.
* family v1 (VQFRv1) is initialised from the stage-1 VQGANv1; only its codebook (``embedding``) is frozen.
"""

from __future__ import annotations

from torch import nn

from vqfr.errors import VQFRError


def build_generator(cfg: dict) -> nn.Module:
    from vqfr.nn.checkpoint import build_network

    return build_network(cfg["network"]["arch"], cfg["network"]["config"])


def load_stage1(cfg: dict) -> nn.Module:
    """The frozen stage-1 network that encodes HQ images into target codes (eval mode)."""
    from vqfr.nn.checkpoint import build_network, load_weights

    s1 = cfg["stage1"]
    if not s1.get("weights"):
        raise VQFRError("restoration training needs stage1.weights: a stage-1 checkpoint (ours or released)")
    net = build_network(s1["arch"], s1["config"])
    load_weights(net, s1["weights"], strict=True)
    return net.eval().requires_grad_(False)


def init_from_stage1(net: nn.Module, stage1: nn.Module) -> list[str]:
    """Copy every stage-1 tensor whose name and shape exist in ``net``; returns the copied names.

    Raises if the encoder, codebook or texture decoder would not be fully initialised.
    """
    src = stage1.state_dict()
    dst = net.state_dict()
    copied = [k for k, v in src.items() if k in dst and dst[k].shape == v.shape]
    needed = [k for k in dst if k.startswith(("encoder.", "decoder.", "quantizer.")) and "reservoir" not in k]
    missing = [k for k in needed if k not in copied]
    if missing:
        raise VQFRError(
            f"the stage-1 weights do not fit the restoration network ({len(missing)} tensors, e.g. {missing[0]}); "
            "check that network.config and stage1.config describe the same codebook"
        )
    net.load_state_dict({k: src[k] for k in copied}, strict=False)
    return copied


def zero_init_main_branch(net: nn.Module) -> None:
    """Zero the output convolutions of the VQFRv2 main branch's last fusion block.

    The main branch's contribution ``x`` then starts at 0, so ``main_dec`` starts equal to
    ``texture_dec`` at every fidelity and training moves it from there (instead of from the noise
    of a random branch, which a short CPU run would not train away). Gradients still reach both
    zeroed layers: their inputs are not zero.
    """
    block = net.main_branch.decoder_dict["Level_1"]
    for layer in (block.conv2, block.residual_func):
        if isinstance(layer, nn.Conv2d):
            nn.init.zeros_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def param_groups(cfg: dict, net: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by optimizer group; sets ``requires_grad`` to match (frozen parts off)."""
    from vqfr.nn.registry import architecture

    arch = architecture(cfg["network"]["arch"])
    if arch.stage == "restoration" and arch.family == "v2":
        enc, main = [], []
        last = net.get_last_layer()
        for name, p in net.named_parameters():
            if name.startswith(("encoder.", "feat2index.")):
                enc.append(p)
                p.requires_grad_(True)
            elif name.startswith(("main_branch.", "inpfeat_extraction.")):
                main.append(p)
                p.requires_grad_(True)
            else:
                p.requires_grad_(p is last)  # frozen; the last layer only measures gradients
        groups = {"enc": enc}
        if cfg["train"]["optim_g_main"]:
            groups["main"] = main
        else:
            groups["enc"] = enc + main
        return groups
    trainable = [p for p in net.parameters() if p.requires_grad]  # honours fix_keys
    return {"g": trainable}
