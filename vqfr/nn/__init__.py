"""The four VQFR networks and their parts, checkpoint-compatible with the released weights.

* :class:`VQGANv2` / :class:`VQGANv1` — stage 1: the codebook of HQ face detail.
* :class:`VQFRv2` / :class:`VQFRv1` — stage 2: restoration with the parallel decoder.

What each architecture is (class, configurations, checkpoint keys, stage-1 partner, what runs in
reduced precision) is one entry of :mod:`vqfr.nn.registry`.
"""

from vqfr.utils.lazy import lazy_exports

# Lazy: the registry and the configurations (vqfr.nn.registry, vqfr.nn.configs) are read without torch.
_EXPORTS = {
    "VQGANv1": "vqfr.nn.vqgan_v1",
    "VQGANv2": "vqfr.nn.vqgan_v2",
    "VQFRv1": "vqfr.nn.vqfr_v1",
    "VQFRv2": "vqfr.nn.vqfr_v2",
    "MainDecoder": "vqfr.nn.warping",
    "MainDecoderV1": "vqfr.nn.vqfr_v1",
    "TextureWarpingModule": "vqfr.nn.warping",
    "ModulatedDeformConv2d": "vqfr.nn.deform_conv",
    "deform_conv2d": "vqfr.nn.deform_conv",
    "L2VectorQuantizer": "vqfr.nn.quantize",
    "L2VectorQuantizerKmeans": "vqfr.nn.quantize",
    "GeneralizedQuantizer": "vqfr.nn.quantize",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
