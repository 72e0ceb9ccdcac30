"""A pool token file's lines, and which token each pool to join gets (shoal.daemon.config)."""

from __future__ import annotations

import pytest

from shoal.core.errors import UsageError
from shoal.daemon.config import PoolSpec, parse_pool_tokens, with_tokens


def test_a_token_file_holds_name_token_lines_with_comments_and_blank_lines() -> None:
    text = "# this host's pools\n\nvault   s3cr3t-vault\n  edge\ttok-edge  \n#old x\n"
    assert parse_pool_tokens(text, "f") == {"vault": "s3cr3t-vault", "edge": "tok-edge"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("vault\n", "f, line 1: a pool token file holds NAME TOKEN lines"),
        ("ok a\nvault a b\n", "f, line 2"),
        ("Vault a\n", "f, line 1"),
        ("vault a\nvault b\n", "pool 'vault' is named twice"),
    ],
)
def test_a_bad_line_is_named(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_pool_tokens(text, "f")


def test_a_pools_own_token_comes_first_then_the_files_then_the_default() -> None:
    pools = (PoolSpec("own", "mine"), PoolSpec("filed"), PoolSpec("other"))
    assert with_tokens(pools, {"filed": "from-file", "own": "ignored"}, "from-env") == (
        PoolSpec("own", "mine"),
        PoolSpec("filed", "from-file"),
        PoolSpec("other", "from-env"),
    )
    assert with_tokens(pools[1:], {}, None) == (PoolSpec("filed"), PoolSpec("other"))


@pytest.mark.parametrize("text", ["", ":tok", "vault:", "Bad_Name", "a b"])
def test_a_bad_pool_option_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--pool takes NAME or NAME:TOKEN"):
        PoolSpec.parse(text)
