"""A user's ``--digest ALGORITHM:HEX`` (core.whole_file.parse_user_digest) and the daemon's check of it."""

from __future__ import annotations

import hashlib

import blake3
import msgspec
import pytest

from shoal.core.errors import ProtocolError, UsageError
from shoal.core.ids import task_id_for_url
from shoal.core.whole_file import DIGEST_ALGORITHMS, parse_user_digest, whole_file_checks
from shoal.daemon.messages import GetRequest
from shoal.peer.prefix_hash import ALGORITHMS


def _hexdigest(algorithm: str, data: bytes) -> str:
    return blake3.blake3(data).hexdigest() if algorithm == "blake3" else hashlib.new(algorithm, data).hexdigest()


@pytest.mark.parametrize("algorithm", list(DIGEST_ALGORITHMS))
def test_each_algorithm_is_read_in_any_case_and_kept_lower_case(algorithm: str) -> None:
    hexdigest = _hexdigest(algorithm, b"shoal")
    assert len(hexdigest) == DIGEST_ALGORITHMS[algorithm]  # the table's lengths are the algorithms' own
    assert parse_user_digest(f"{algorithm.upper()}:{hexdigest.upper()}") == f"{algorithm}:{hexdigest}"
    assert algorithm in ALGORITHMS  # the download can hash it in its final pass
    request = GetRequest("http://o/f", "/tmp", "f", digest=f"{algorithm.title()}:{hexdigest}")
    assert request.checked() is request


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("sha256", "ALGORITHM:HEX"),
        ("crc32:0badf00d", "ALGORITHM one of md5, sha1"),
        ("sha-256:" + "0" * 64, "ALGORITHM one of"),
        ("md5:" + "0" * 31, "md5: takes 32 hex digits, not 31"),
        ("sha1:" + "0" * 64, "sha1: takes 40 hex digits, not 64"),
        ("md5:" + "g" * 32, "ALGORITHM:HEX"),
    ],
)
def test_a_malformed_digest_is_refused_saying_what_it_must_be(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_user_digest(text)


def test_the_daemon_refuses_a_prefix_or_an_unknown_algorithm() -> None:
    for digest in ("md5:" + "0" * 20, "crc32:0badf00d"):
        with pytest.raises(ProtocolError, match="md5: 32"):
            GetRequest("http://o/f", "/tmp", "f", digest=digest).checked()
    # The document's pattern is the check's: a request decoded from JSON meets the same rule.
    schema = msgspec.json.schema(GetRequest)
    assert "blake2b" in str(schema) and "[mM][dD]5" in str(schema)


def test_one_swarm_per_algorithm_and_value_whatever_its_spelling() -> None:
    md5 = "md5:" + hashlib.md5(b"x").hexdigest()
    url = "http://origin/f.bin"
    assert task_id_for_url(url, digest=parse_user_digest(md5.upper())) == task_id_for_url(url, digest=md5)
    sha1 = "sha1:" + hashlib.sha1(b"x").hexdigest()
    assert len({task_id_for_url(url), task_id_for_url(url, digest=md5), task_id_for_url(url, digest=sha1)}) == 3


def test_the_users_algorithm_is_checked_beside_the_origins() -> None:
    checks = whole_file_checks(parse_user_digest("SHA1:" + "a" * 40), None)
    assert [(c.algorithm, c.source) for c in checks] == [("sha1", "--digest")]
