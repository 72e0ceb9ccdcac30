"""The rsync providers' command lines (core.rsync_args) and what a run log says (core.log_match)."""

from __future__ import annotations

import re

import pytest

from shoal.core.log_match import LogWatch, parse_reported_size
from shoal.core.mirror_config import JobSpec
from shoal.core.rsync_args import DEFAULT_OPTIONS, STAGE1_OPTIONS, STAGE1_PROFILES, rsync_commands, rsync_environment

UP = "rsync://mirror.example/debian/"


def spec(**keys: object) -> JobSpec:
    return JobSpec(name="debian", provider=keys.pop("provider", "rsync"), upstream=UP, **keys)  # type: ignore[arg-type]


def test_rsync_takes_tunasyncs_defaults_and_the_previous_version() -> None:
    [argv] = rsync_commands(spec(), "/srv/debian/.staging/v2", link_dest="/srv/debian/versions/v1")
    assert argv == ("rsync", *DEFAULT_OPTIONS, "--link-dest=/srv/debian/versions/v1", UP, "/srv/debian/.staging/v2/")
    assert "--delete" in DEFAULT_OPTIONS and "-aHvh" in DEFAULT_OPTIONS and "--stats" in DEFAULT_OPTIONS


def test_options_are_added_after_the_defaults_or_replace_them() -> None:
    keys = {"rsync_options": ("--bwlimit=50m",), "exclude_file": "/etc/ex", "use_ipv6": True}
    [argv] = rsync_commands(spec(**keys), "/d")
    assert argv == ("rsync", *DEFAULT_OPTIONS, "-6", "--exclude-from", "/etc/ex", "--bwlimit=50m", UP, "/d/")
    [argv] = rsync_commands(spec(rsync_override=("-rt",), rsync_options=("-v",), use_ipv4=True), "/d")
    assert argv == ("rsync", "-rt", "-4", "-v", UP, "/d/")


@pytest.mark.parametrize("profile", ["debian", "debian-oldstyle"])
def test_two_stage_leaves_the_index_files_to_stage_two(profile: str) -> None:
    stage1, stage2 = rsync_commands(spec(provider="two-stage-rsync", stage1_profile=profile), "/d", link_dest="/p")
    assert stage1 == ("rsync", *STAGE1_OPTIONS, *STAGE1_PROFILES[profile], "--link-dest=/p", UP, "/d/")
    assert stage2 == ("rsync", *DEFAULT_OPTIONS, "--link-dest=/p", UP, "/d/")
    assert "--delete" not in stage1  # nothing leaves before the new index files are in place
    assert "--exclude=Packages*" in stage1 and "--exclude=Release*" in stage1


def test_the_password_is_in_the_environment_and_never_an_argument() -> None:
    job = spec(username="mirror", password="s3cret")
    assert rsync_environment(job, "s3cret") == {"USER": "mirror", "LOGNAME": "mirror", "RSYNC_PASSWORD": "s3cret"}
    assert not any("s3cret" in part for argv in rsync_commands(job, "/d") for part in argv)
    assert rsync_environment(spec(), None) == {}


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1,234,567", 1234567),
        ("1234567", 1234567),
        ("5.37G", 5_370_000_000),
        ("12.00K", 12_000),
        ("1.5GiB", 3 << 29),
        ("3T bytes", 3 * 10**12),
        ("42 bytes", 42),
        ("2MB", 2_000_000),
    ],
)
def test_sizes_as_rsync_prints_them(text: str, size: int) -> None:
    assert parse_reported_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "5.37Q", "-3", "1.2.3"])
def test_what_is_not_a_size(text: str) -> None:
    assert parse_reported_size(text) is None


def test_the_watch_keeps_the_first_failing_line_and_the_last_size() -> None:
    watch = LogWatch.of(r"^rsync error", r"Total file size: (\S+)")
    for line in ["Total file size: 1.00K bytes", "rsync error: some files (code 23)", "rsync error: again"]:
        watch.line(line)
    watch.line("Total file size: 2.50M bytes")
    assert watch.failed_line == "rsync error: some files (code 23)"
    assert watch.size_text == "2.50M"
    quiet = LogWatch.of(None, None)
    quiet.line("rsync error: anything")
    assert (quiet.failed_line, quiet.size_text) == (None, None)
    assert isinstance(LogWatch.of("x", None).fail_on_match, re.Pattern)
