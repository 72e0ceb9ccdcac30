"""The origin's published whole-file digest (shoal.core.digests) and the whole-file check (core/whole_file)."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.digests import DIGEST_SIZES, PublishedDigest, published_digest
from shoal.core.whole_file import WholeFileCheck, failed_check, plan_refetch, whole_file_checks

DATA = b"the origin's bytes"
SHA256 = hashlib.sha256(DATA).digest()
SHA512 = hashlib.sha512(DATA).digest()
MD5 = hashlib.md5(DATA).digest()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def best(partial: bool = False, **headers: str | list[str]) -> PublishedDigest | None:
    fields = {k.replace("_", "-").lower(): v if isinstance(v, list) else [v] for k, v in headers.items()}
    return published_digest(fields, partial=partial).best


def test_repr_digest_sha256():
    got = best(repr_digest=f"sha-256=:{b64(SHA256)}:")
    assert got == PublishedDigest("sha256", SHA256.hex(), "Repr-Digest")
    assert str(got) == "sha256:" + SHA256.hex()


def test_the_strongest_algorithm_wins_whatever_the_order():
    value = f"md5=:{b64(MD5)}:, sha-512=:{b64(SHA512)}:, sha-256=:{b64(SHA256)}:"
    assert best(repr_digest=value) == PublishedDigest("sha512", SHA512.hex(), "Repr-Digest")
    # Across headers too: Content-MD5 and a Digest SHA-256 lose to a Repr-Digest SHA-512.
    got = best(content_md5=b64(MD5), digest=f"SHA-256={b64(SHA256)}", repr_digest=f"sha-512=:{b64(SHA512)}:")
    assert got is not None and got.algorithm == "sha512"


def test_one_algorithm_in_several_headers_the_first_of_the_table_wins():
    other = hashlib.sha256(b"other").digest()
    got = best(digest=f"SHA-256={b64(other)}", repr_digest=f"sha-256=:{b64(SHA256)}:")
    assert got == PublishedDigest("sha256", SHA256.hex(), "Repr-Digest")


def test_several_fields_of_one_name_are_one_list():
    got = best(repr_digest=[f"md5=:{b64(MD5)}:", f"sha-256=:{b64(SHA256)}:"])
    assert got is not None and got.algorithm == "sha256"


def test_rfc3230_digest_is_case_insensitive_and_keeps_its_padding():
    value = f"sha-256={b64(SHA256)}"
    assert b64(SHA256).endswith("=")  # the '=' of the padding is not taken for a separator
    for name in ("SHA-256", "sha-256", "Sha-256"):
        got = best(digest=f"{name}={b64(SHA256)}")
        assert got == PublishedDigest("sha256", SHA256.hex(), "Digest"), value


def test_unpadded_base64_is_accepted():
    assert best(repr_digest=f"sha-256=:{b64(SHA256).rstrip('=')}:") is not None
    assert best(content_md5=b64(MD5).rstrip("=")) is not None


def test_weird_spacing_and_parameters():
    got = best(repr_digest=f"  unixsum=:AAAA:  ,sha-256=:{b64(SHA256)}:;note=1 ,  ")
    assert got == PublishedDigest("sha256", SHA256.hex(), "Repr-Digest")


@pytest.mark.parametrize(
    "value",
    [
        f"sha-256={b64(SHA256)}",  # not a byte sequence
        f"sha-256=:{b64(SHA256)}",
        f"sha-256=:{b64(SHA256)[:-4]}:",  # too short for a SHA-256
        f"sha-256=:{b64(SHA512)}:",  # a SHA-512's length
        "sha-256=:not base64!:",
        f"sha-256=:{b64(SHA256)[:10]} {b64(SHA256)[10:]}:",  # a space inside
        "sha-256=:A:",  # one character: no whole byte
        "sha-256",
        "sha-256=",
        "",
        "sha=:AAAAAAAAAAAAAAAAAAAAAAAAAAA=:, crc32c=:AAAAAA==:",  # algorithms Shoal does not check
    ],
)
def test_malformed_or_unknown_values_are_skipped_with_a_reason(value):
    result = published_digest({"repr-digest": [value]}, partial=False)
    assert result.best is None
    assert bool(result.skipped) == bool(value)


def test_a_malformed_member_does_not_hide_a_good_one():
    result = published_digest({"repr-digest": [f"sha-512=:bad:, sha-256=:{b64(SHA256)}:"]}, partial=False)
    assert result.best == PublishedDigest("sha256", SHA256.hex(), "Repr-Digest")
    assert len(result.skipped) == 1 and "sha-512" in result.skipped[0]


def test_content_digest_and_content_md5_only_on_a_whole_reply():
    fields = {"content-digest": [f"sha-256=:{b64(SHA256)}:"], "content-md5": [b64(MD5)]}
    assert published_digest(fields, partial=False).best == PublishedDigest("sha256", SHA256.hex(), "Content-Digest")
    partial = published_digest(fields, partial=True)
    assert partial.best is None and len(partial.skipped) == 2
    assert best(content_md5=b64(MD5)) == PublishedDigest("md5", MD5.hex(), "Content-MD5")


def test_repr_digest_digest_and_amz_hold_on_a_206():
    assert best(True, repr_digest=f"sha-256=:{b64(SHA256)}:") is not None
    assert best(True, digest=f"MD5={b64(MD5)}") is not None
    assert best(True, x_amz_checksum_sha256=b64(SHA256)) == PublishedDigest(
        "sha256", SHA256.hex(), "x-amz-checksum-sha256"
    )


def test_an_s3_multipart_checksum_is_not_of_the_file():
    result = published_digest({"x-amz-checksum-sha256": [b64(SHA256) + "-3"]}, partial=False)
    assert result.best is None and "multipart" in result.skipped[0]


def test_single_digest_headers_that_disagree_name_none():
    other = b64(hashlib.md5(b"x").digest())
    assert best(content_md5=[b64(MD5), other]) is None
    assert best(content_md5=[b64(MD5), b64(MD5)]) is not None


ALGORITHM_NAMES = {"sha512": "sha-512", "sha256": "sha-256", "md5": "md5"}


@given(
    st.lists(st.sampled_from(list(DIGEST_SIZES)), min_size=1, max_size=3, unique=True),
    st.binary(max_size=64),
    st.booleans(),
    st.sampled_from(["", " ", "  ", "\t"]),
    st.booleans(),
)
def test_any_well_formed_header_gives_the_strongest_digest(algorithms, data, padded, space, sf):
    members = []
    for algorithm in algorithms:
        encoded = b64(hashlib.new(algorithm, data).digest())
        if not padded:
            encoded = encoded.rstrip("=")
        name = ALGORITHM_NAMES[algorithm]
        members.append(f"{name}=:{encoded}:" if sf else f"{name.upper()}={encoded}")
    header = "repr-digest" if sf else "digest"
    result = published_digest({header: [f"{space},{space}".join(members)]}, partial=True)
    strongest = min(algorithms, key=list(DIGEST_SIZES).index)
    assert result.best is not None
    assert (result.best.algorithm, result.best.hexdigest) == (strongest, hashlib.new(strongest, data).hexdigest())
    assert result.skipped == ()


@given(st.text(max_size=80))
def test_any_text_is_a_digest_of_the_right_length_or_nothing(text):
    for header in ("repr-digest", "digest", "content-md5", "x-amz-checksum-sha256"):
        got = published_digest({header: [text]}, partial=False).best
        assert got is None or len(bytes.fromhex(got.hexdigest)) == DIGEST_SIZES[got.algorithm]


# -- the whole-file check -----------------------------------------------------------------------------


def test_the_users_digest_stands_alone_for_its_algorithm():
    published = PublishedDigest("sha256", "aa" * 32, "Repr-Digest")
    assert whole_file_checks("sha256:" + "BB" * 32, published) == (WholeFileCheck("sha256", "bb" * 32, "--digest"),)


def test_an_origin_digest_of_another_algorithm_is_checked_too():
    published = PublishedDigest("sha512", "aa" * 64, "Repr-Digest")
    checks = whole_file_checks("sha256:" + "bb" * 32, published)
    assert [c.source for c in checks] == ["--digest", "the origin's Repr-Digest"]
    assert whole_file_checks(None, None) == ()


def test_failed_check_names_the_check_and_what_the_file_has():
    checks = whole_file_checks("sha256:" + "bb" * 32, PublishedDigest("md5", "cc" * 16, "Content-MD5"))
    assert failed_check(checks, {"sha256": "bb" * 32, "md5": "cc" * 16}) is None
    failed = failed_check(checks, {"sha256": "bb" * 32, "md5": "dd" * 16})
    assert failed is not None and failed[0].source == "the origin's Content-MD5" and failed[1] == "md5:" + "dd" * 16


def test_plan_refetch_keeps_only_the_origins_pieces():
    plan = plan_refetch(6, {0: None, 1: "peer-b", 2: "peer-a", 3: None, 4: "peer-b"})  # 5: resumed
    assert plan is not None
    assert plan.pieces == (1, 2, 4, 5)
    assert plan.suspects == ("peer-a", "peer-b")


def test_plan_refetch_of_a_file_all_from_the_origin_is_none():
    assert plan_refetch(3, {0: None, 1: None, 2: None}) is None


@given(st.dictionaries(st.integers(0, 19), st.none() | st.sampled_from(["p1", "p2", "p3"])))
def test_plan_refetch_partitions_the_pieces(sources):
    plan = plan_refetch(20, sources)
    trusted = {i for i, peer in sources.items() if peer is None}
    if plan is None:
        assert trusted == set(range(20))
    else:
        assert set(plan.pieces) == set(range(20)) - trusted
        assert set(plan.suspects) == {peer for peer in sources.values() if peer is not None}
