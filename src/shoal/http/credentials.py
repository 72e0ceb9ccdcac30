"""A process's fleet credentials, loaded from files: the fleet token and the TLS certificates.

Light on purpose (no aiohttp): ``shoal get`` loads them before it knows whether a daemon does its download.
What a token proves is core.tickets'; the server side's check is shoal.http.fleet_auth's.

Rules:

- A token file readable or writable by anyone but its owner is refused (like ssh's keys): a token others
  can read is no secret, and the refusal comes before anything starts.
- Each certificate file is named in the error when it cannot be used.
- Fleet TLS is for Shoal's own traffic (tracker, peers): it is given per request (``ssl=``) and never set on
  a session, so an https origin is still verified against the system's CA certificates.
- A peer whose piece server has a certificate (``--tls-cert``) asks other peers over https too: a fleet's
  peers all serve TLS or none does (``peer_scheme``).
- The tracker's certificate must name the host in its URL. A peer's need not name the address the tracker
  handed out (addresses change, hosts have several): a peer is checked for a certificate the fleet's CA
  signed, which is what being one of the fleet means (``peer_ssl``).
"""

from __future__ import annotations

import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

from shoal.core.errors import UsageError
from shoal.core.tickets import FLEET_HEADER, FleetKey, parse_tokens

TOKEN_ENV = "SHOAL_FLEET_TOKEN_FILE"
"""The environment variable naming the fleet token file when no option does."""


def read_token_file(path: str | os.PathLike[str]) -> FleetKey:
    """The fleet's keys from the token file at ``path``; a UsageError when it is missing, too short, or open
    to other users."""
    return FleetKey(read_tokens(path))


def read_tokens(path: str | os.PathLike[str]) -> tuple[bytes, ...]:
    """The tokens of the token file at ``path``, the signing one first (core.tickets.parse_tokens); a
    UsageError as for :func:`read_token_file`."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise UsageError(
                    f"{path}: the fleet token file is open to other users (mode {stat.filemode(mode)}); "
                    f"`chmod 600 {path}` (a token others can read is no secret)"
                )
            raw = file.read(64 * 1024)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the fleet token file: {exc.strerror or exc}") from None
    return parse_tokens(raw, str(path))


def server_tls(
    cert: str | os.PathLike[str], key: str | os.PathLike[str], client_ca: str | None = None
) -> ssl.SSLContext:
    """The TLS context of a server presenting ``cert`` (PEM, with its chain) and ``key``; with
    ``client_ca``, every client must present a certificate that CA signed (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, cert, key)
    if client_ca is not None:
        _load_ca(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls(
    ca: str | os.PathLike[str] | None = None,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    *,
    check_hostname: bool = True,
) -> ssl.SSLContext | None:
    """The TLS context of a client of the fleet's servers: trusting ``ca`` (the fleet's CA; without it, the
    system's), presenting ``cert`` and ``key`` when a server asks for a client certificate. None when
    nothing is given: aiohttp's defaults."""
    if ca is None and cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = check_hostname
    if ca is not None:
        _load_ca(context, ca)
    if cert is not None:
        _load_chain(context, cert, key)
    return context


def _load_chain(context: ssl.SSLContext, cert: str | os.PathLike[str], key: str | os.PathLike[str] | None) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        where = f"{cert}" if key is None else f"{cert} with key {key}"
        raise UsageError(f"cannot use the TLS certificate {where}: {exc}") from None


def _load_ca(context: ssl.SSLContext, ca: str | os.PathLike[str]) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot use the CA certificates in {ca}: {exc}") from None


@dataclass(frozen=True)
class Credentials:
    """What one process of the fleet holds; the default holds nothing (a trusted LAN)."""

    key: FleetKey | None = None
    """The fleet token's keys: request credentials to the tracker, tickets for the piece servers."""
    token_file: str | None = None
    """The file ``key`` was read from, read again when it changes (shoal.http.token_reload)."""
    server_ssl: ssl.SSLContext | None = None
    """The piece server's (or tracker's) TLS, with client certificates required under mutual TLS."""
    client_ssl: ssl.SSLContext | None = None
    """How this process reaches the tracker over https: the fleet's CA and its own certificate."""
    peer_ssl: ssl.SSLContext | None = None
    """How this process reaches other peers over https: as ``client_ssl``, without the host name check."""

    @property
    def secured(self) -> bool:
        """Whether a server of this process refuses strangers: it needs a ticket or a client certificate."""
        return self.key is not None or (
            self.server_ssl is not None and self.server_ssl.verify_mode == ssl.CERT_REQUIRED
        )

    @property
    def peer_scheme(self) -> str:
        return "https" if self.server_ssl is not None else "http"

    def tracker_headers(self, now: float) -> dict[str, str]:
        """The headers that carry this process's credential to the tracker (none without a token)."""
        return {FLEET_HEADER: self.key.credential(now)} if self.key is not None else {}

    def tls_for(self, url: str) -> ssl.SSLContext | bool:
        """What to pass as aiohttp's ``ssl=`` for a request to the tracker at ``url``: the fleet's context
        for https, True (aiohttp's defaults) otherwise."""
        if self.client_ssl is not None and url.startswith("https://"):
            return self.client_ssl
        return True

    def peer_tls(self) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl=`` for a request to another peer."""
        return self.peer_ssl if self.peer_ssl is not None and self.server_ssl is not None else True


def load(
    token_file: str | os.PathLike[str] | None = None,
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    client_ca: str | None = None,
) -> Credentials:
    """A process's credentials from its options; ``token_file`` None reads ``$SHOAL_FLEET_TOKEN_FILE``.
    ``cert`` and ``key`` serve TLS (and are presented to servers that ask for a client certificate);
    ``client_ca`` makes the servers require client certificates it signed."""
    token_file = token_file or os.environ.get(TOKEN_ENV) or None
    if (cert is None) != (key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if client_ca is not None and cert is None:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key (client certificates are asked over TLS)")
    return Credentials(
        key=read_token_file(token_file) if token_file else None,
        token_file=str(token_file) if token_file else None,
        server_ssl=server_tls(cert, key, client_ca) if cert is not None and key is not None else None,
        client_ssl=client_tls(ca, cert, key),
        peer_ssl=client_tls(ca, cert, key, check_hostname=False),
    )


def warn_if_open(log: logging.Logger, what: str, where: str, secured: bool, reach: str) -> None:
    """The loud warning of a service started without a credential: anyone who reaches ``where`` may do
    ``reach``."""
    if not secured:
        log.warning(
            "no fleet credential: anyone who can reach %s may %s (give --fleet-token-file, or mutual TLS "
            "with --tls-client-ca, on every %s of a network you do not trust)",
            where,
            reach,
            what,
        )
