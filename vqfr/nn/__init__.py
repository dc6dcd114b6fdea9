"""The four VQFR networks and their parts, checkpoint-compatible with the released weights.

* :class:`VQGANv2` / :class:`VQGANv1` — stage 1: the codebook of HQ face detail.
* :class:`VQFRv2` / :class:`VQFRv1` — stage 2: restoration with the parallel decoder.
"""

from vqfr.nn.deform_conv import ModulatedDeformConv2d, deform_conv2d
from vqfr.nn.quantize import GeneralizedQuantizer, L2VectorQuantizer, L2VectorQuantizerKmeans
from vqfr.nn.vqfr_v1 import MainDecoderV1, VQFRv1
from vqfr.nn.vqfr_v2 import VQFRv2
from vqfr.nn.vqgan_v1 import VQGANv1
from vqfr.nn.vqgan_v2 import VQGANv2
from vqfr.nn.warping import MainDecoder, TextureWarpingModule

__all__ = [
    "VQGANv1",
    "VQGANv2",
    "VQFRv1",
    "VQFRv2",
    "MainDecoder",
    "MainDecoderV1",
    "TextureWarpingModule",
    "ModulatedDeformConv2d",
    "deform_conv2d",
    "L2VectorQuantizer",
    "L2VectorQuantizerKmeans",
    "GeneralizedQuantizer",
]
