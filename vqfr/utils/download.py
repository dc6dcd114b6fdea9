"""Fetch a file over HTTP(S) (or file://) safely, and check SHA-256 sums.

A download streams into a temporary file beside the target, hashing as it goes; the
caller's check sees the sum before the file is renamed into place, so a failed,
interrupted or corrupt download never leaves a file at the target path.
:func:`vqfr.utils.known_files.fetch` words the errors, for every known file alike.

Not ``torch.hub.download_url_to_file``: it has no timeout (a stalled server hangs the command),
binds ``urlopen`` at import (the network cannot be cut in tests), reports a wrong sum in its own
wording and returns no sum for files without a published one (we print it so it can be pinned).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from vqfr.utils.atomic import create_temp

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_matches(digest: str, expected: str) -> bool:
    """Whether ``digest`` is the full sum ``expected`` or starts with it (the prefix a release names a file by)."""
    return digest.lower().startswith(expected.lower())


def download_url(
    url: str,
    target: str | os.PathLike,
    check: Callable[[Path, str], None] | None = None,
    progress: bool = True,
    timeout: float = 30,
) -> str:
    """Stream ``url`` to ``target`` atomically; return the file's hex SHA-256.

    ``check(temp_path, sha256)`` runs before the rename: raising there discards the download.
    The progress bar shows on an interactive stderr only. Network errors propagate
    (``urllib.error.URLError`` / ``OSError`` / ``TimeoutError``) for the caller to word.
    """
    from tqdm import tqdm

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(target, suffix=".part")  # normal permissions, not mkstemp's 0600
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc=f"downloading {target.name}",
                disable=not progress or not sys.stderr.isatty(),
            )
            with bar:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if check is not None:
            check(Path(tmp), digest.hexdigest())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return digest.hexdigest()
