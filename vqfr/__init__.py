"""vqfr: blind face restoration with a vector-quantized dictionary and a parallel decoder."""

from vqfr.utils.lazy import lazy_exports

__version__ = "0.1.0"

__all__ = ["__version__", "FaceRestorer", "VideoRestorer"]


# Lazy so that `import vqfr` (and `vqfr --help`) stays fast and torch-free.
__getattr__, __dir__ = lazy_exports(__name__, {"FaceRestorer": "vqfr.restore", "VideoRestorer": "vqfr.video"})
