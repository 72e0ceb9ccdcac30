"""core.redact: a URL's password never reaches a message or a log line."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.redact import redact_passkey, redact_passwords, redact_url
from shoal.core.tickets import FleetKey


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://shoal:s3cret@db:5432/shoal", "postgresql://shoal:***@db:5432/shoal"),
        ("mysql+aiomysql://root:pa@ss@h/db", "mysql+aiomysql://root:***@h/db"),
        ("https://:token@origin/file", "https://:***@origin/file"),
        ("http://user@origin/file", "http://user@origin/file"),
        ("http://origin/a@b", "http://origin/a@b"),
        ("mail me@example.com", "mail me@example.com"),
        (
            "cannot open postgresql://a:x@h1/d (also mysql://b:y@h2/e)",
            "cannot open postgresql://a:***@h1/d (also mysql://b:***@h2/e)",
        ),
        ('{"url": "http://u:p@h/x"}', '{"url": "http://u:***@h/x"}'),
    ],
)
def test_every_urls_password_is_replaced_and_nothing_else(text: str, expected: str) -> None:
    assert redact_passwords(text) == expected


@given(st.text(min_size=1).filter(lambda password: re.search(r"[\s/]", password) is None))
def test_no_password_survives_whatever_it_holds(password: str) -> None:
    """Anything but white space and '/' (which end a URL's authority), '@' and ':' included."""
    assert redact_url(f"postgresql://shoal:{password}@db/shoal") == "postgresql://shoal:***@db/shoal"


def test_a_seeders_passkey_is_taken_out_of_a_file_url_and_nothing_else() -> None:
    key = FleetKey.from_token(b"a fleet token of the redact tests")
    passkey = key.passkey("seeder")
    url = f"https://seed.example:6390/mirror/files/{passkey}/debian/files/Release"
    assert redact_passkey(url) == "https://seed.example:6390/mirror/files/PASSKEY/debian/files/Release"
    assert passkey not in redact_passkey(url)
    for plain in ("http://seed.example/files/debian/Release", "http://origin.example/files/a.b/c", ""):
        assert redact_passkey(plain) == plain
