"""What a host, as written in a URL or a ``--host`` option, says of where it is. Pure: no name is looked up."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ``::1``, bracketed or not). Any other name is not
    taken for loopback, since what it resolves to may change."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
