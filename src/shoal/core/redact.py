"""Passwords out of text meant for people: a URL's user-info password (``scheme://user:PASSWORD@host``)
becomes ``***``; :func:`redact_secrets` also replaces secrets known by value (a mirror job's password in
its run log).

A URL may carry a password (a database URL, an origin's basic credentials), and a message or a log line
quoting such a URL must not carry it on: logs are shipped, kept and read by people who hold no secret. The
command line's log handler and its error line pass everything through :func:`redact_passwords`, so no
message has to remember to; code that prints a URL on purpose uses :func:`redact_url`.

The password runs to the last ``@`` before the host's first ``/`` or white space, as ``urllib.parse`` reads
a URL's user-info, so an unencoded ``@`` in it does not leave its tail behind.

A seeder's file URL with a fleet token, ``/files/PASSKEY/REL``, carries a passkey (core.tickets), which opens
the fleet's torrents and files to whoever holds it: :func:`redact_passkey` takes it out of a URL shown to a
reader who is not to fetch it (a pool job's URL, read by anyone who may read the pool).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_USERINFO_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)[^\s/]*@")


def redact_passwords(text: str) -> str:
    """``text`` with the password of every URL in it as ``***``."""
    if "@" not in text:  # the common case, at the cost of one scan
        return text
    return _USERINFO_PASSWORD.sub(r"\1***@", text)


def redact_url(url: str) -> str:
    """``url`` with its password, if any, as ``***``."""
    return redact_passwords(url)


_FILES_PASSKEY = re.compile(r"/files/[A-Za-z0-9._:-]{1,64}\.[A-Za-z0-9_-]{22}/")
"""A seeder's ``/files/PASSKEY/REL`` (core.tickets' passkey: ``HOLDER.MAC``, a MAC of 22 base64 digits)."""


def redact_passkey(url: str) -> str:
    """``url`` with a seeder's passkey, if it names a file by one, as ``/files/PASSKEY/``."""
    return _FILES_PASSKEY.sub("/files/PASSKEY/", url, count=1)


MIN_SECRET = 4
"""Shorter secrets are not replaced by :func:`redact_secrets`: blotting out every ``abc`` in a log would
hide the text around it and tell a reader the secret's length and letters anyway."""


def redact_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every URL's password and every one of ``secrets`` (literal strings, such as a mirror
    job's rsync password) as ``***``. Longer secrets are replaced first, so one that contains another is
    not left half shown."""
    known = sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True)
    if known:
        text = re.sub("|".join(re.escape(s) for s in known), "***", text)
    return redact_passwords(text)
