"""Reading a credential from a file (the tracker's ``--admin-token-file`` and ``--db-file``, the daemon's
``--pool-token-file``).

A secret is taken only from a regular file that its group and others cannot read or write (mode 0600 or
stricter): one the whole host can read is no secret, and refusing it at start is kinder than finding out
later. The token is the file's text without surrounding white space: printable ASCII (it travels in an
``Authorization: Bearer`` header), at least MIN_LENGTH characters.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from shoal.core.errors import LocalIOError, UsageError

MIN_LENGTH = 16
MAX_BYTES = 4096


def read_private_text(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES, what: str = "a secret") -> str:
    """The text of ``path`` without surrounding white space, read only from a regular file its group and
    others cannot read or write: a secret such as a database URL with its password, or a file of tokens.
    UsageError when the file is open to others, longer than ``max_bytes`` or not UTF-8; LocalIOError when
    it cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{path} is not a regular file")
            if st.st_mode & 0o077:
                raise UsageError(
                    f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}"
                )
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    if len(raw) > max_bytes:
        raise UsageError(f"{path} is too long for {what} (at most {max_bytes} bytes)")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: {what} is UTF-8 text") from None


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (:func:`read_private_text`); UsageError when it is no usable token."""
    token = read_private_text(path, what="a token")
    if not token.isascii() or not token.isprintable() or " " in token:
        raise UsageError(f"{path}: a token is printable ASCII without spaces, on one line")
    if len(token) < MIN_LENGTH:
        raise UsageError(f"{path}: a token has at least {MIN_LENGTH} characters (try: openssl rand -hex 32)")
    return token
