"""Reading ``mirrors.toml`` from disk: the file and the environment in, a MirrorConfig out.

The parsing and every check are pure, in ``shoal.core.mirror_config``; this module only does the reads
that the core may not (the file, ``os.environ`` for ``token_env``, the secret file of ``token_file``), and
maps a file that cannot be read to the same ConfigError a bad file gets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from shoal.core.errors import ConfigError, ShoalError, UsageError
from shoal.core.mirror_config import MirrorConfig, parse_config
from shoal.storage.secret_file import read_secret_file


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
    environ = os.environ if environ is None else environ
    return parse_config(text, source, environ=environ, read_secret=lambda name: _read_secret(path, name))


def _read_secret(config_path: str | os.PathLike[str], name: str) -> str:
    """The token in ``name``, a path relative to the config file's directory unless absolute; UsageError
    when it cannot be read."""
    try:
        return read_secret_file(Path(config_path).parent / name)
    except ShoalError as exc:  # a missing file is a LocalIOError: in a config, a usage error like the rest
        raise UsageError(str(exc)) from None
