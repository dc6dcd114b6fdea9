"""The one exception type users see: its message is a complete, one-line explanation."""


class VQFRError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` on one line and exits non-zero, no traceback."""


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``), so a file name
    that holds them cannot split or forge a message line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
