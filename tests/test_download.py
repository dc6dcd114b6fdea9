"""vqfr.utils.download: atomic downloads (file:// URLs, no network) and SHA-256 checks."""

import hashlib

import pytest

from vqfr.errors import VQFRError
from vqfr.utils.download import download_url, sha256_file, sha256_matches


def test_sha256_file_reads_in_chunks(tmp_path):
    payload = bytes(range(256)) * 5000  # over one 1 MiB chunk
    (tmp_path / "f.bin").write_bytes(payload)
    assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(payload).hexdigest()


def test_sha256_matches_full_sums_and_name_prefixes():
    digest = hashlib.sha256(b"weights").hexdigest()
    assert sha256_matches(digest, digest) and sha256_matches(digest, digest[:8].upper())
    assert not sha256_matches(digest, "0" * 8)
    assert not sha256_matches(digest, digest[:63] + ("0" if digest[63] != "0" else "1"))


def test_download_url_moves_a_checked_file_into_place(tmp_path):
    payload = b"pretend weights" * 100
    source = tmp_path / "remote.bin"
    source.write_bytes(payload)
    seen = []
    target = tmp_path / "cache" / "w.pth"
    digest = download_url(source.as_uri(), target, check=lambda tmp, d: seen.append((tmp, d)), progress=False)
    assert target.read_bytes() == payload and digest == hashlib.sha256(payload).hexdigest()
    assert seen[0][1] == digest and seen[0][0].parent == target.parent and seen[0][0] != target
    assert sorted(p.name for p in target.parent.iterdir()) == ["w.pth"]  # no temp file left


def test_download_url_discards_a_file_that_fails_its_check(tmp_path):
    source = tmp_path / "remote.bin"
    source.write_bytes(b"not the published file")

    def expect_zeros(tmp, digest):
        if not sha256_matches(digest, "00000000"):
            raise VQFRError(f"checksum mismatch: {digest[:8]}")

    target = tmp_path / "cache" / "w-00000000.pth"
    with pytest.raises(VQFRError, match="checksum mismatch"):
        download_url(source.as_uri(), target, check=expect_zeros, progress=False)
    assert list(target.parent.iterdir()) == []
    with pytest.raises(OSError):  # network errors reach the caller, which words them
        download_url((tmp_path / "missing.bin").as_uri(), target, progress=False)
    assert list(target.parent.iterdir()) == []
