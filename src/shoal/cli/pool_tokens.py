"""Where the token of a pool to join comes from, for ``shoal daemon --pool`` and ``shoal pool join``.

A private pool's token never needs the command line, where every user of the host reads it (``ps``,
``/proc/PID/cmdline``): it comes from a pool token file (``--pool-token-file``, ``NAME TOKEN`` lines, mode
600 like the fleet token file) or from ``$SHOAL_POOL_TOKEN``. ``NAME:TOKEN`` still works, with a warning.
A token of its own comes first, then the file's line for the pool, then the variable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from shoal.daemon.config import PoolSpec

TOKEN_ENV = "SHOAL_POOL_TOKEN"
MAX_TOKEN_FILE = 64 * 1024


def pool_token_file_option(command: Any) -> Any:
    return click.option(
        "--pool-token-file",
        envvar="SHOAL_POOL_TOKEN_FILE",
        type=click.Path(exists=True, dir_okay=False),
        metavar="FILE",
        help="Tokens of private pools, one 'NAME TOKEN' a line (mode 600) [default: $SHOAL_POOL_TOKEN_FILE; "
        f"else ${TOKEN_ENV} for every pool given without a token].",
    )(command)


def pool_specs(values: Iterable[str], token_file: str | None, default: str | None = None) -> tuple[PoolSpec, ...]:
    """The pools ``values`` name (``NAME`` or ``NAME:TOKEN``), each with its token from where this module
    says; ``default`` is the token for the rest (``$SHOAL_POOL_TOKEN`` unless given). A UsageError for a
    bad value or token file."""
    # Here, not at the top: `shoal pool push`, a fleet's command that every member waits for, needs none of
    # the daemon's configuration (it loads the download's settings, the fleet's credentials and TLS).
    from shoal.daemon.config import PoolSpec, parse_pool_tokens, with_tokens
    from shoal.storage.secret_file import read_private_text

    specs = [PoolSpec.parse(value) for value in values]
    for spec in specs:
        if spec.token:
            warn_token_on_command_line(f"the token of pool {spec.name}", f"--pool-token-file or ${TOKEN_ENV}")
    tokens = {}
    if token_file is not None:
        text = read_private_text(token_file, max_bytes=MAX_TOKEN_FILE, what="a pool token file")
        tokens = parse_pool_tokens(text, token_file)
    return with_tokens(specs, tokens, default if default is not None else os.environ.get(TOKEN_ENV))


def warn_token_on_command_line(what: str, instead: str) -> None:
    """Say on stderr that ``what`` was given where every user of the host can read it (``ps``, ``/proc``)."""
    click.echo(
        f"shoal: warning: {what} is on the command line, where every user of this host can read it (ps, /proc); "
        f"give it in {instead} instead",
        err=True,
    )
