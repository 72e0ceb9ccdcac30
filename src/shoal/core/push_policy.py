"""Which URLs may be pushed to a pool: its allow-list and the internal addresses no push reaches. Pure.

A push makes every member fetch a URL from where it stands and then serve the bytes from its piece server
to anyone who asks. Without a rule, whoever may push can read any address the members can reach: a cloud
metadata endpoint (169.254.169.254), a service bound to a member's loopback. So:

- A pool may have an allow-list, set when it is created. Each entry is one of:
  a URL prefix (``https://mirror.example.com/pub/``: the canonical URL starts with it);
  an address or network (``10.1.0.0/16``, ``192.0.2.7``, ``::1``: the host, or every address it resolves
  to, lies inside); a host name, or every name under a domain (``mirror.example.com``, ``*.example.com``).
  With a list, a URL matching no entry is refused.
- Loopback, link-local (169.254/16, fe80::/10; the metadata endpoints live there), unspecified and multicast
  addresses are refused, whether the URL names them or its host name resolves to them, unless an entry
  names them explicitly: a network that contains them, or a URL prefix (the operator wrote that URL). A
  host-name entry does not lift it: a name an allowed domain's owner points at 169.254.169.254 stays out.
  Private networks (RFC 1918, fc00::/7) are allowed: a fleet's mirrors live there.
- The tracker checks at push time with the addresses it resolves; each member checks again before it
  fetches, with the addresses it resolves (a name may resolve differently there, or later).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from shoal.core.errors import UsageError
from shoal.core.ids import canonical_url

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_ENTRIES = 64
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def check_entry(entry: str) -> str:
    """An allow-list entry in its canonical form; UsageError (naming the entry) when it is none of the
    forms above."""
    text = entry.strip()
    if "://" in text:
        try:
            return canonical_url(text)
        except UsageError as exc:
            raise UsageError(f"bad allow-list entry {entry!r}: {exc}") from None
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        pass
    name = text.lower()
    bare = name[2:] if name.startswith("*.") else name
    if not bare or len(bare) > 253 or not set(bare) <= _HOST_CHARS or ".." in bare or bare.startswith((".", "-")):
        raise UsageError(
            f"bad allow-list entry {entry!r}: give a URL prefix (http://host/path/), an address or network "
            "(10.0.0.0/8) or a host name (mirror.example.com, *.example.com)"
        )
    return name


def check_entries(entries: Iterable[str]) -> tuple[str, ...]:
    checked = tuple(dict.fromkeys(check_entry(e) for e in entries))
    if len(checked) > MAX_ENTRIES:
        raise UsageError(f"an allow-list has at most {MAX_ENTRIES} entries")
    return checked


def internal(address: Address) -> bool:
    """Loopback, link-local, unspecified or multicast (an IPv4 address mapped into IPv6 counts as itself)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def refused(url: str, allow: Sequence[str], addresses: Iterable[str] = ()) -> str | None:
    """Why ``url`` may not be fetched for a pool with the allow-list ``allow`` (canonical entries), its host
    resolving to ``addresses`` (none known: only a literal address in the URL is checked); None when it may."""
    url = canonical_url(url)
    host = (urlsplit(url).hostname or "").lower()
    own = literal(host)
    seen = [own] if own is not None else [a for a in (literal(x) for x in addresses) if a is not None]
    if host == "localhost" or host.endswith(".localhost"):
        seen.append(ipaddress.ip_address("127.0.0.1"))  # RFC 6761: always loopback, whatever a resolver says
    explicit = False
    if allow:
        matched = [e for e in allow if _matches(e, url, host, seen)]
        if not matched:
            return f"{url} is not in the pool's allow-list ({', '.join(allow)})"
        explicit = any("://" in e for e in matched)
        networks = [ipaddress.ip_network(e) for e in matched if "://" not in e and _network(e)]
    else:
        networks = []
    for address in seen:
        if internal(address) and not explicit and not any(address in n for n in networks):
            return (
                f"{url} reaches {address}, an internal address (loopback or link-local), which pushes may not "
                "reach unless the pool's allow-list names it (shoal pool create --allow)"
            )
    return None


def _network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry)
    except ValueError:
        return False
    return True


def _matches(entry: str, url: str, host: str, addresses: Sequence[Address]) -> bool:
    if "://" in entry:
        return url.startswith(entry)
    if _network(entry):
        network = ipaddress.ip_network(entry)
        return bool(addresses) and all(a in network for a in addresses)
    if entry.startswith("*."):
        return host.endswith(entry[1:])
    return host == entry
