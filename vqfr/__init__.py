"""vqfr: blind face restoration with a vector-quantized dictionary and a parallel decoder."""

__version__ = "0.1.0"

__all__ = ["__version__", "FaceRestorer", "VideoRestorer"]


def __getattr__(name: str):
    # Lazy so that `import vqfr` (and `vqfr --help`) stays fast and torch-free.
    if name == "FaceRestorer":
        from vqfr.restore import FaceRestorer

        return FaceRestorer
    if name == "VideoRestorer":
        from vqfr.video import VideoRestorer

        return VideoRestorer
    raise AttributeError(f"module 'vqfr' has no attribute {name!r}")
