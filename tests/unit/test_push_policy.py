"""core.push_policy: which URLs a push may make members fetch, with values."""

from __future__ import annotations

import pytest

from shoal.core.errors import UsageError
from shoal.core.push_policy import check_entries, check_entry, refused


@pytest.mark.parametrize(
    ("entry", "canonical"),
    [
        ("HTTP://Mirror.Example.com:80/pub/", "http://mirror.example.com/pub/"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/"),
        ("10.1.2.3/16", "10.1.0.0/16"),
        ("::1", "::1/128"),
        ("Mirror.Example.com", "mirror.example.com"),
        ("*.example.com", "*.example.com"),
    ],
)
def test_entries_are_kept_in_their_canonical_form(entry: str, canonical: str) -> None:
    assert check_entry(entry) == canonical


@pytest.mark.parametrize("entry", ["", "ftp://x/", "bad host", "a..b", "*.", "http://", "-x.com"])
def test_a_bad_entry_is_refused_with_its_text(entry: str) -> None:
    with pytest.raises(UsageError, match="allow-list entry"):
        check_entry(entry)


def test_entries_repeat_once_and_a_list_is_bounded() -> None:
    assert check_entries(["10.0.0.0/8", "10.0.0.0/8"]) == ("10.0.0.0/8",)
    with pytest.raises(UsageError, match="at most"):
        check_entries(f"h{n}.example.com" for n in range(65))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:8080/x",
        "http://[::1]/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://0.0.0.0/x",
        "http://localhost/x",
        "http://a.localhost/x",
        "http://[fe80::1]/x",
    ],
)
def test_internal_addresses_are_refused_by_default(url: str) -> None:
    reason = refused(url, ())
    assert reason is not None and "internal address" in reason and "--allow" in reason


def test_a_name_that_resolves_to_an_internal_address_is_refused() -> None:
    assert refused("http://metadata.example.com/x", (), ["169.254.169.254"]) is not None
    assert refused("http://mirror.example.com/x", (), ["203.0.113.5", "127.0.0.1"]) is not None
    assert refused("http://mirror.example.com/x", (), ["203.0.113.5"]) is None


def test_private_networks_and_unresolved_names_pass_by_default() -> None:
    assert refused("http://10.0.0.5/x", ()) is None
    assert refused("http://192.168.1.2:8080/x", ()) is None
    assert refused("https://mirror.example.com/x", ()) is None


def test_with_an_allow_list_only_what_it_names_passes() -> None:
    allow = ("https://mirror.example.com/pub/", "10.1.0.0/16", "*.cdn.example.org", "files.example.net")
    assert refused("https://mirror.example.com/pub/a.iso", allow) is None
    assert refused("https://mirror.example.com/private/a.iso", allow) is not None
    assert refused("http://10.1.4.4/a", allow) is None
    assert refused("http://10.2.4.4/a", allow) is not None
    assert refused("http://x.cdn.example.org/a", allow) is None
    assert refused("http://cdn.example.org.evil.com/a", allow) is not None
    assert refused("http://files.example.net/a", allow) is None
    assert refused("http://other.example.net/a", allow) is not None
    reason = refused("http://other.example.net/a", allow)
    assert reason is not None and "allow-list" in reason


def test_a_prefix_is_matched_on_the_canonical_url_so_a_host_cannot_be_extended() -> None:
    allow = (check_entry("http://mirror.example.com"),)
    assert refused("http://MIRROR.example.com:80/a", allow) is None
    assert refused("http://mirror.example.com.evil.org/a", allow) is not None


def test_an_internal_address_passes_only_when_the_list_names_it() -> None:
    assert refused("http://127.0.0.1:8080/x", ("127.0.0.0/8",)) is None
    assert refused("http://127.0.0.1:8080/x", ("http://127.0.0.1:8080/",)) is None
    assert refused("http://169.254.169.254/x", ("127.0.0.0/8",)) is not None
    # A host-name entry does not lift the rule: the name's owner could point it at the metadata endpoint.
    assert refused("http://mirror.example.com/x", ("mirror.example.com",), ["169.254.169.254"]) is not None
    # A network must hold every address the name resolves to.
    assert refused("http://m.example.com/x", ("10.0.0.0/8",), ["10.0.0.1", "169.254.169.254"]) is not None
