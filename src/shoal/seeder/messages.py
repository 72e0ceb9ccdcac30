"""The JSON replies of the seeder's endpoints (shoal.seeder.app), one msgspec struct each.

The seeder encodes its replies with these, and its OpenAPI document (``app.ROUTES``) is generated from
them, so the two cannot disagree. The field names are the wire's since the endpoints began.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class ListedFile(msgspec.Struct, frozen=True):
    """One published file."""

    path: Annotated[str, Meta(description="REL: the watched directory's name and the path inside it")]
    size: int
    digest: Annotated[str, Meta(description="blake3:HEX, the whole file's BLAKE3")]
    task_id: Annotated[str, Meta(description="its Shoal content task, the one every URL of these bytes shares")]
    modified: Annotated[float, Meta(description="its mtime, in seconds since the epoch")]
    info_hash: Annotated[str, Meta(description="its BitTorrent v1 info-hash, in hex")]
    torrent: Annotated[
        str, Meta(description="the URL of its .torrent (/serve?REL; with a fleet token /serve/PASSKEY?REL)")
    ]
    url: Annotated[
        str,
        Meta(
            description="the URL of its bytes (/files/REL; with a fleet token /files/PASSKEY/REL, the passkey "
            "made for the requester)"
        ),
    ]


class FileListing(msgspec.Struct, frozen=True):
    """The reply to ``GET /v1/files``."""

    files: list[ListedFile]
    """Sorted by path."""
    pending: list[str]
    """The RELs seen and not published yet (being written or hashed), sorted."""
    time: float
    """The seeder's clock when it answered, in seconds since the epoch."""


class SeederHealth(msgspec.Struct, frozen=True):
    """The reply to ``GET /v1/seeder/health``."""

    ok: bool
    files: int
    """Files published."""
    pending: int
    """Files seen and not published yet."""
    hashed_bytes: int
    """Bytes hashed since the seeder started."""
    hashing_seconds: float
    """Seconds spent hashing them, to the millisecond."""
