"""Reading ``mirrors.toml`` from disk: the file and the environment in, a MirrorConfig out.

The parsing and every check are pure, in ``shoal.core.mirror_config``; this module only does the reads
that the core may not (the file, ``os.environ`` for ``token_env``), and maps a file that cannot be read to
the same ConfigError a bad file gets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from shoal.core.errors import ConfigError
from shoal.core.mirror_config import MirrorConfig, parse_config


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> MirrorConfig:
    """Parse the file at ``path``; ``environ`` (default ``os.environ``) answers ``token_env``.

    ConfigError (a UsageError, exit 2) when the file cannot be read or is not a valid configuration."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{source}: cannot read the configuration: {reason}", source=source, line=None, key=None
        ) from None
    return parse_config(text, source, environ=os.environ if environ is None else environ)
