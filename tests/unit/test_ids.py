"""Canonical URLs and task ids (core.ids)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import UsageError
from shoal.core.ids import canonical_url, identity_url, is_task_id, parse_ignored_params, task_id_for_url


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("http://example.com/a", "http://example.com/a"),
        ("HTTP://Example.COM/a", "http://example.com/a"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:443/a", "http://example.com:443/a"),
        ("https://example.com:80/a", "https://example.com:80/a"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("http://example.com/a#section", "http://example.com/a"),
        ("http://example.com/a?b=1&a=2", "http://example.com/a?b=1&a=2"),
        ("http://example.com/Path/File.ISO", "http://example.com/Path/File.ISO"),
        ("http://user:secret@example.com/a", "http://example.com/a"),
        ("  http://example.com/a\n", "http://example.com/a"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
        ("http://[::1]:80/a", "http://[::1]/a"),
    ],
)
def test_canonical_url(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com/a",
        "ftp://example.com/a",
        "file:///etc/passwd",
        "http://",
        "http:///a",
        "http://example.com:99999/a",
        "http://example.com:port/a",
        "http://[::1/a",
    ],
)
def test_malformed_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError, match="malformed URL"):
        canonical_url(url)


@given(st.sampled_from(["http://example.com/a", "https://mirror.example/x.iso?v=2"]))
def test_canonical_url_is_idempotent(url: str) -> None:
    assert canonical_url(canonical_url(url)) == canonical_url(url)


def test_task_id_is_stable_and_well_formed() -> None:
    task_id = task_id_for_url("HTTP://Example.com/a", tag="t", digest="AB")
    # The documented derivation, pinned: peers of different versions must meet in the same swarm.
    assert task_id == hashlib.sha256(b"http://example.com/a\nt\nab").hexdigest()[:40]
    assert is_task_id(task_id)
    assert task_id_for_url("http://example.com:80/a", tag="t", digest="ab") == task_id


def test_equivalent_urls_share_a_task() -> None:
    variants = ["http://example.com/a", "HTTP://EXAMPLE.com:80/a#x", "http://u:p@example.com/a"]
    assert len({task_id_for_url(u) for u in variants}) == 1


def test_tag_digest_and_url_separate_tasks() -> None:
    ids = {
        task_id_for_url("http://example.com/a"),
        task_id_for_url("http://example.com/b"),
        task_id_for_url("http://example.com/a?x=1"),
        task_id_for_url("http://example.com/a", tag="v2"),
        task_id_for_url("http://example.com/a", digest="ab" * 32),
    }
    assert len(ids) == 5


def test_digest_case_does_not_matter() -> None:
    assert task_id_for_url("http://e.x/a", digest="AB" * 32) == task_id_for_url("http://e.x/a", digest="ab" * 32)


def test_task_id_of_malformed_url_is_usage_error() -> None:
    with pytest.raises(UsageError):
        task_id_for_url("ftp://example.com/a")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("a" * 40, True),
        ("0123456789abcdef" * 4, True),
        ("a" * 39, False),
        ("a" * 41, False),
        ("A" * 40, False),
        ("g" * 40, False),
        ("", False),
    ],
)
def test_is_task_id(text: str, ok: bool) -> None:
    assert is_task_id(text) is ok


@pytest.mark.parametrize(
    ("url", "ignored", "identity"),
    [
        ("http://h/f?X-Amz-Signature=ab&v=2&X-Amz-Expires=60", ("X-Amz-*",), "http://h/f?v=2"),
        ("http://h/f?x-amz-signature=ab&v=2", ("X-Amz-*",), "http://h/f?v=2"),  # names match in any case
        ("http://h/f?Signature=1&Expires=2", ("Signature", "Expires"), "http://h/f"),
        ("http://h/f?token=a%20b&v=%2F", ("token",), "http://h/f?v=%2F"),  # the others verbatim
        ("http://h/f?tok%65n=1&v=1", ("token",), "http://h/f?v=1"),  # a name is matched decoded
        ("http://h/f?v=1", ("token",), "http://h/f?v=1"),
        ("http://h/f", ("token",), "http://h/f"),
        ("http://h/f?token=1&v=2", (), "http://h/f?token=1&v=2"),
        ("http://h/f?v=1&v=2&sig", ("sig",), "http://h/f?v=1&v=2"),  # a name without a value
    ],
)
def test_ignored_query_parameters_leave_the_identity(url: str, ignored: tuple[str, ...], identity: str) -> None:
    assert identity_url(url, ignored) == identity


def test_two_signed_urls_of_one_file_name_one_task() -> None:
    signed = [f"https://bucket.s3.example/f.bin?X-Amz-Signature={s}&X-Amz-Date=2026" for s in ("aa", "bb")]
    ids = {task_id_for_url(identity_url(u, ("X-Amz-*",))) for u in signed}
    assert len(ids) == 1
    assert len({task_id_for_url(u) for u in signed}) == 2


@pytest.mark.parametrize(
    ("values", "names"),
    [
        (["X-Amz-*"], ("X-Amz-*",)),
        (["Signature,Expires", "Key-Pair-Id"], ("Signature", "Expires", "Key-Pair-Id")),
        ([" a , b ", "a"], ("a", "b")),
    ],
)
def test_ignored_parameters_are_read_from_repeats_and_commas(values: list[str], names: tuple[str, ...]) -> None:
    assert parse_ignored_params(values) == names


@pytest.mark.parametrize("bad", ["", "a,,b", "a=b", "a&b", "a b"])
def test_a_bad_ignored_parameter_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="--ignore-qp"):
        parse_ignored_params([bad])
