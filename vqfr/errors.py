"""The one exception type users see: its message is a complete, one-line explanation."""


class VQFRError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` on one line and exits non-zero, no traceback."""
