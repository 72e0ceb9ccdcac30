"""The fleet credential options that the tracker, `get`, `daemon` and `seed` share, gathered into one value.

The files are read when the command runs (``FleetOptions.load``, in ``run_or_exit``), so a token file open
to others or a certificate that cannot be used is one error line and exit code 2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from shoal.http.credentials import Credentials

_FILE = click.Path(dir_okay=False)


@dataclass(frozen=True, slots=True)
class FleetOptions:
    token_file: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None

    def load(self) -> Credentials:
        from shoal.http.credentials import load

        return load(self.token_file, ca=self.ca, cert=self.cert, key=self.key, client_ca=self.client_ca)


def fleet_options(*, client: bool) -> Callable[[Any], Any]:
    """``--fleet-token-file``, ``--tls-cert``, ``--tls-key``, ``--tls-client-ca`` (and with ``client``, a
    command that asks the tracker and peers, ``--ca``), passed to the command as ``fleet``."""

    def decorate(command: Callable[..., Any]) -> Any:
        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            fleet = FleetOptions(
                token_file=kwargs.pop("fleet_token_file"),
                ca=kwargs.pop("ca", None),
                cert=kwargs.pop("tls_cert"),
                key=kwargs.pop("tls_key"),
                client_ca=kwargs.pop("tls_client_ca"),
            )
            return command(fleet=fleet, **kwargs)

        options = [
            click.option(
                "--fleet-token-file",
                envvar="SHOAL_FLEET_TOKEN_FILE",
                type=_FILE,
                metavar="FILE",
                help="The fleet's secret token (mode 600): requests to the tracker and pieces from peers need "
                "it [default: $SHOAL_FLEET_TOKEN_FILE; none: a trusted LAN].",
            ),
            click.option(
                "--tls-cert", type=_FILE, metavar="FILE", help="Serve over TLS with this certificate (PEM, chain)."
            ),
            click.option("--tls-key", type=_FILE, metavar="FILE", help="The private key of --tls-cert."),
            click.option(
                "--tls-client-ca",
                type=_FILE,
                metavar="FILE",
                help="Mutual TLS: serve only clients with a certificate this CA signed.",
            ),
        ]
        if client:
            options.append(
                click.option(
                    "--ca",
                    type=_FILE,
                    metavar="FILE",
                    help="Verify the tracker and peers with this CA (the fleet's) instead of the system's; "
                    "--tls-cert is presented to servers that ask for a client certificate.",
                )
            )
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate
