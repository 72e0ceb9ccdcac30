"""``shoal passkey [HOLDER]``: print a fleet's BitTorrent passkey for one host's client.

Standard BitTorrent clients send no headers, so a tracker with a fleet token takes their announces with a
passkey in the URL (core.tickets, tracker.bt). An operator makes one per host (or per client) and gives the
client the seeder's ``/serve/PASSKEY?REL`` URL: the torrent it gets announces with the same passkey.
"""

from __future__ import annotations

import socket

import click

from shoal.cli.main import configure_logging, log_options, run_or_exit
from shoal.core.errors import UsageError


@click.command()
@click.argument("holder", required=False, metavar="[HOLDER]")
@click.option(
    "--fleet-token-file",
    envvar="SHOAL_FLEET_TOKEN_FILE",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The fleet's token file [default: $SHOAL_FLEET_TOKEN_FILE].",
)
@log_options
def passkey(holder: str | None, fleet_token_file: str | None) -> None:
    """Print the passkey of HOLDER (a host's name or address; default: this host's name)."""
    configure_logging(0, False)

    def make() -> None:
        from shoal.http.credentials import read_token_file

        if not fleet_token_file:
            raise UsageError("no fleet token: give --fleet-token-file FILE or set $SHOAL_FLEET_TOKEN_FILE")
        key = read_token_file(fleet_token_file)
        try:
            click.echo(key.passkey(holder or socket.gethostname()))
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    run_or_exit(make)
