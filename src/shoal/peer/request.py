"""What a `get` asks for, validated: the destination file and the extra origin headers.

Light on purpose (no aiohttp): ``shoal get`` resolves its destination before it knows whether a daemon
will do the download.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from shoal.core.errors import UsageError
from shoal.core.ids import canonical_url
from shoal.core.whole_file import parse_user_digest
from shoal.peer.config import DEFAULT_LISTEN_HOST
from shoal.storage.placement import Destination

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = {"range", "if-range", "host", "content-length", "transfer-encoding", "connection"}


def file_name_from_url(url: str) -> str:
    """The last path segment of the URL, decoded (like wget); ``index.html`` when the path ends in ``/``."""
    path = unquote(urlsplit(canonical_url(url)).path)
    name = "" if path.endswith("/") else PurePosixPath(path).name
    return name if name not in ("", ".", "..") else "index.html"


def resolve_destination(
    url: str, output: str | os.PathLike[str] | None, dest_dir: str | os.PathLike[str] | None
) -> Path:
    """Where the file goes: its directory must exist and be writable, or, for a device or a FIFO, the file
    itself (see :mod:`shoal.storage.placement`). ``dest_dir`` is a directory to write into, named after the
    URL, when it is one (or ends with a slash); otherwise it is the file's own path (minion's rule)."""
    if output is not None and dest_dir is not None:
        raise UsageError("give either an output file (-o) or a destination directory (--dest-path), not both")
    if output is not None:
        dest = Path(output)
    elif dest_dir is None or os.path.isdir(dest_dir) or str(dest_dir).endswith(os.sep):
        dest = Path(dest_dir or ".") / file_name_from_url(url)
    else:
        dest = Path(dest_dir)  # not a directory: the file itself, as minion took --dest-path
    dest = dest.absolute()
    if dest.is_dir():
        raise UsageError(f"{dest} is a directory; give a file name with -o or use --dest-path")
    Destination.of(dest).writable()
    return dest


def parse_headers(headers: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else (_split_header(h) for h in headers)
    out = {}
    for name, value in items:
        if not _HEADER_NAME.match(name) or any(c in value for c in "\r\n\0"):
            raise UsageError(f"malformed header {name!r}")
        if name.lower() in _RESERVED_HEADERS:
            raise UsageError(f"header {name!r} is managed by shoal and cannot be set")
        out[name] = value
    return out


def _split_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"malformed header {text!r} (expected 'Name: value')")
    return name.strip(), value.strip()


def check_digest(digest: str | None) -> str | None:
    """A ``--digest`` (``ALGORITHM:HEX``, see core.whole_file.DIGEST_ALGORITHMS) as Shoal keeps it (lower
    case), or None when absent."""
    return parse_user_digest(digest) if digest is not None else None


def check_no_origin(no_origin: bool, fallback: bool) -> None:
    """``--no-origin`` and ``--fallback`` together are a usage error: one forbids what the other falls back to."""
    if no_origin and fallback:
        raise UsageError("--no-origin forbids the origin, which --fallback would fall back to")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen takes HOST:PORT, not {text!r}")
    return host.strip("[]") or DEFAULT_LISTEN_HOST, int(port)
