"""A cached file's two whole-file digests, BLAKE3 (the cache's id) and SHA-256 (for ``sha256:`` ids), read
once for both. Light to import (no SQL): the idle-priority hashing child (:mod:`shoal.storage.idle_hash`)
imports only this.

Blocking: call it from a worker thread, never on the event loop.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import blake3


def hash_content(path: Path, *, sha256: bool = True) -> tuple[str, str]:
    """(BLAKE3 hex, sha256 hex or "") of a file, read once per hash: BLAKE3 over a memory map on every
    core in this thread, sha256 beside it in another (both release the GIL)."""
    sha_result: list[str] = []
    sha_error: list[BaseException] = []

    def run_sha256() -> None:
        try:
            with open(path, "rb") as f:
                sha_result.append(hashlib.file_digest(f, "sha256").hexdigest())
        except BaseException as exc:
            sha_error.append(exc)

    worker = threading.Thread(target=run_sha256, daemon=True) if sha256 else None
    if worker is not None:
        worker.start()
    try:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        if os.stat(path).st_size:  # an empty file cannot be mapped
            hasher.update_mmap(path)
    finally:
        if worker is not None:
            worker.join()
    if sha_error:
        raise sha_error[0]
    return hasher.hexdigest(), (sha_result[0] if sha_result else "")
