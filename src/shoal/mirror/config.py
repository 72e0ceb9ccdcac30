"""Reading ``mirrors.toml`` (and tunasync's configs) from disk: files and the environment in, values out.

The parsing and every check are pure, in ``shoal.core.mirror_toml`` (over ``shoal.core.mirror_config``) and
``shoal.core.tunasync_config``; this module only does the reads that the core may not (the files, the
``[include]`` glob, ``os.environ`` for ``token_env``, the secret file of ``token_file``), maps a file that
cannot be read to the same ConfigError a bad file gets, and writes a converted config atomically.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path

from shoal.core.errors import ConfigError, LocalIOError, ShoalError, UsageError
from shoal.core.mirror_config import MirrorConfig
from shoal.core.mirror_toml import parse_config
from shoal.core.tunasync_config import Conversion, Source, convert, include_pattern
from shoal.storage.secret_file import read_secret_file


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> MirrorConfig:
    """Parse the file at ``path``; ``environ`` (default ``os.environ``) answers ``token_env``.

    ConfigError (a UsageError, exit 2) when the file cannot be read or is not a valid configuration."""
    text = _read_text(Path(path))
    environ = os.environ if environ is None else environ
    return parse_config(text, str(path), environ=environ, read_secret=lambda name: _read_secret(path, name))


def _read_secret(config_path: str | os.PathLike[str], name: str) -> str:
    """The token in ``name``, a path relative to the config file's directory unless absolute; UsageError
    when it cannot be read."""
    try:
        return read_secret_file(Path(config_path).parent / name)
    except ShoalError as exc:  # a missing file is a LocalIOError: in a config, a usage error like the rest
        raise UsageError(str(exc)) from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{path}: cannot read the configuration: {reason}", source=str(path), line=None, key=None
        ) from None


def import_tunasync(worker_path: Path, manager_path: Path | None = None) -> Conversion:
    """Read tunasync's worker.conf (and the files its ``[include] include_mirrors`` globs, in name order, a
    relative pattern taken from the worker file's directory) and manager.conf, and convert them.

    ConfigError (exit 2) when a file cannot be read or is not a tunasync config."""
    worker = _source(worker_path)
    pattern = include_pattern(worker)
    includes: list[Source] = []
    if pattern is not None:
        full = Path(pattern) if Path(pattern).is_absolute() else worker_path.parent / pattern
        includes = [_source(Path(found)) for found in sorted(glob.glob(str(full)))]
        if not includes:
            raise ConfigError(
                f"{worker.name}: include.include_mirrors: {pattern!r} matches no file (looked for {full})",
                source=worker.name,
                line=None,
                key="include_mirrors",
            )
    manager = _source(manager_path) if manager_path is not None else None
    return convert(worker, includes, manager)


def _source(path: Path) -> Source:
    return Source(str(path), _read_text(path))


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and a rename, so the file is whole or
    absent; mode 0600, as a config may hold a token. LocalIOError when it cannot be written."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise LocalIOError(f"cannot write {path}: {exc.strerror or exc}") from None
