"""storage.secret_file: a credential is read only from a file nobody else may read, and only when usable."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.core.errors import LocalIOError, UsageError
from shoal.storage.secret_file import read_secret_file


def write(path: Path, content: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_the_token_is_the_files_text_without_surrounding_space(tmp_path: Path) -> None:
    assert read_secret_file(write(tmp_path / "t", b"  0123456789abcdef0123\n")) == "0123456789abcdef0123"
    assert read_secret_file(write(tmp_path / "r", b"0123456789abcdef", 0o400)) == "0123456789abcdef"


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640, 0o660, 0o602])
def test_a_file_open_to_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "t", b"0123456789abcdef0123", mode)
    with pytest.raises(UsageError, match=f"mode {mode:04o}.*chmod 600"):
        read_secret_file(path)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"short", "at least 16"),
        (b"", "at least 16"),
        (b"two words here, long enough", "without spaces"),
        ("t\u00f6ken-that-is-long-enough".encode(), "printable ASCII"),
        (b"x" * 5000, "too long"),
    ],
)
def test_a_token_that_cannot_be_used_is_refused(tmp_path: Path, content: bytes, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        read_secret_file(write(tmp_path / "t", content))


def test_a_missing_file_or_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocalIOError, match="cannot read"):
        read_secret_file(tmp_path / "missing")
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises((UsageError, LocalIOError)):
        read_secret_file(tmp_path / "d")
