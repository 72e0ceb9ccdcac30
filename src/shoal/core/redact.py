"""Passwords out of text meant for people: a URL's user-info password (``scheme://user:PASSWORD@host``)
becomes ``***``.

A URL may carry a password (a database URL, an origin's basic credentials), and a message or a log line
quoting such a URL must not carry it on: logs are shipped, kept and read by people who hold no secret. The
command line's log handler and its error line pass everything through :func:`redact_passwords`, so no
message has to remember to; code that prints a URL on purpose uses :func:`redact_url`.

The password runs to the last ``@`` before the host's first ``/`` or white space, as ``urllib.parse`` reads
a URL's user-info, so an unencoded ``@`` in it does not leave its tail behind.
"""

from __future__ import annotations

import re

_USERINFO_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s/]*@")


def redact_passwords(text: str) -> str:
    """``text`` with the password of every URL in it as ``***``."""
    if "@" not in text:  # the common case, at the cost of one scan
        return text
    return _USERINFO_PASSWORD.sub(r"\1***@", text)


def redact_url(url: str) -> str:
    """``url`` with its password, if any, as ``***``."""
    return redact_passwords(url)
