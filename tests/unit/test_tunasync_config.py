"""tunasync's configs into a mirrors.toml (core.tunasync_config, and the files read by shoal.mirror.config):
the documented worker.conf and manager.conf, and tunasync's own test configs with their [include], key by key.

The inputs in tests/data/tunasync are tunasync's files as they are. The converted text is checked as parsed
TOML, and loaded as a Shoal config.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from shoal.core.errors import ConfigError
from shoal.core.mirror_toml import parse_config
from shoal.core.tunasync_config import Source, convert, duration
from shoal.mirror.config import import_tunasync

DATA = Path(__file__).resolve().parent.parent / "data" / "tunasync"
WORKERS_DOC = DATA / "workers.conf"  # the documented worker example
WORKER_TEST = DATA / "worker.conf"  # tunasync's test worker, with [include] include_mirrors = "mirrors/*.conf"
MANAGER_TEST = DATA / "manager.conf"


def converted(worker: Path, manager: Path | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[str]]:
    """The conversion as parsed TOML: the whole document, the jobs by name, and the not-carried lines."""
    conversion = import_tunasync(worker, manager)
    document = tomllib.loads(conversion.toml)
    jobs = {job["name"]: job for job in document.get("jobs", [])}
    assert list(jobs) == list(conversion.jobs)
    return document, jobs, [str(skipped) for skipped in conversion.skipped]


def said(skipped: list[str], text: str) -> bool:
    """Whether one of the not-carried lines (``FILE [table]: key: why``) holds ``text``."""
    return any(text in line for line in skipped)


def source(text: str, name: str = "worker.conf") -> Source:
    return Source(name, text)


# -- the documented worker.conf ---------------------------------------------------------------------------


def test_the_documented_worker_conf_global_and_manager_tables() -> None:
    document, jobs, _ = converted(WORKERS_DOC, MANAGER_TEST)
    assert document["worker"] == {
        "name": "mirror_worker",  # [global] name
        "directory": "/srv/tunasync",  # [global] mirror_dir
        "concurrency": 10,  # [global] concurrent
        "manager": "http://localhost:12345",  # [manager] api_base
        "token": "some_token",  # [manager] token
    }
    # manager.conf's [server] addr and port; the workers' token is the manager's to ask for.
    assert document["manager"] == {"token": "some_token", "host": "127.0.0.1", "port": 12345}
    assert len(jobs) == 88  # every [[mirrors]] of the example


def test_the_documented_command_mirror_key_by_key() -> None:
    _, jobs, _ = converted(WORKERS_DOC)
    assert jobs["adobe-fonts"] == {
        "name": "adobe-fonts",
        "provider": "command",
        "upstream": "https://github.com/adobe-fonts",
        "size_pattern": "Total size is ([0-9\\.]+[KMGTP]?)",
        "command": "/home/scripts/adobe-fonts.sh",
        "interval": "1d",  # interval = 1440 minutes
        "worker": "mirror_worker",  # its jobs ran on this worker
        "layout": "in-place",  # tunasync syncs into <mirror_dir>/<name>
        "log_dir": "/srv/tunasync/log/tunasync/adobe-fonts",  # [global] log_dir, {{.Name}} expanded
    }
    assert jobs["chromiumos"]["fail_on_match"] == "fatal: "
    assert jobs["chromiumos"]["env"] == {"USE_BITMAP_INDEX": "1", "CONCURRENT_JOBS": "20"}
    assert jobs["clojars"]["env"]["TUNASYNC_AWS_OPTIONS"] == "--delete --exclude index.html"


def test_the_documented_rsync_mirrors_key_by_key() -> None:
    _, jobs, _ = converted(WORKERS_DOC)
    apache = jobs["apache"]
    assert (apache["provider"], apache["upstream"]) == ("rsync", "rsync://rsync.apache.org/apache-dist/")
    assert (apache["use_ipv4"], apache["rsync_options"]) == (True, ["--delete-excluded"])
    assert apache["interval"] == "2h"  # no interval of its own: [global] interval = 120 minutes
    assert jobs["kodi"]["use_ipv6"] is True
    assert jobs["qt"]["exclude_file"] == "/etc/excludes/qt.txt"
    assert jobs["solus"]["rsync_options"] == ["--exclude", "/shannon", "--exclude", "/unstable"]
    ubuntu = jobs["ubuntu"]
    assert (ubuntu["provider"], ubuntu["stage1_profile"]) == ("two-stage-rsync", "debian")
    armbian = jobs["armbian-releases"]  # rsync with a stage1_profile, which only two-stage reads
    assert armbian["provider"] == "rsync" and "stage1_profile" not in armbian
    assert jobs["redhat"]["env"] == {"RSYNC_PROXY": "127.0.0.1:8123"}
    assert {job["provider"] for job in jobs.values()} == {"command", "rsync", "two-stage-rsync"}


def test_intervals_become_the_largest_whole_unit() -> None:
    _, jobs, _ = converted(WORKERS_DOC)
    intervals = {name: jobs[name]["interval"] for name in ("pypi", "dart-pub", "nix-channels", "AdoptOpenJDK")}
    assert intervals == {"pypi": "5m", "dart-pub": "30m", "nix-channels": "5h", "AdoptOpenJDK": "4d"}
    assert [duration(s) for s in (7200, 86400, 90, 5400, 61)] == ["2h", "1d", "90s", "90m", "61s"]


def test_what_the_documented_example_cannot_carry_is_listed_with_why() -> None:
    _, _, skipped = converted(WORKERS_DOC, MANAGER_TEST)
    assert "workers.conf mirrors 'adobe-fonts': docker_image: Shoal has no docker provider" in "\n".join(skipped)
    assert said(skipped, "workers.conf mirrors 'alpine': memory_limit: ")
    assert said(skipped, "workers.conf mirrors 'debian': docker_volumes: ")
    assert said(skipped, "workers.conf mirrors 'nix-channels': docker_options: ")
    assert said(skipped, "workers.conf [cgroup]: enable = false: disabled in the file")
    assert said(skipped, "workers.conf [docker]: enable: Shoal has no docker provider")
    assert said(skipped, "workers.conf [server]: hostname, listen_addr, listen_port")
    assert said(skipped, "manager.conf [files]: db_type: ")
    assert said(skipped, "manager.conf [server]: ssl_cert: ")
    assert said(skipped, "every job: timeout: not set")


# -- tunasync's test configs: [include], per-mirror keys ----------------------------------------------------


def test_include_mirrors_are_globbed_from_the_worker_file_s_directory_in_name_order() -> None:
    document, jobs, skipped = converted(WORKER_TEST, MANAGER_TEST)
    assert list(jobs) == ["AOSP", "debian", "fedora"]  # mirrors/aosp.conf, then mirrors/deb_fedora.conf
    assert jobs["AOSP"]["interval"] == "2m"
    assert jobs["AOSP"]["env"] == {"REPO": "/usr/local/bin/aosp-repo"}
    assert jobs["debian"]["provider"] == "two-stage-rsync" and jobs["debian"]["use_ipv6"] is True
    assert jobs["fedora"]["exclude_file"] == "/etc/tunasync.d/fedora-exclude.txt"
    assert jobs["fedora"]["log_dir"] == "/tmp/tunasync/log/tunasync/fedora"
    assert document["worker"]["manager"] == "https://localhost:12345"
    aosp = f"{DATA / 'mirrors' / 'aosp.conf'} mirrors 'AOSP'"
    assert (
        f"{aosp}: mirror_dir: a job's directory is always <[worker] directory>/<job>; move the mirror there" in skipped
    )
    assert said(skipped, f"{aosp}: role: Shoal has no master/slave roles")
    assert any(
        line.endswith(
            "[manager]: ca_cert: Shoal verifies an https manager against the system's CAs: "
            "point SSL_CERT_FILE at this file"
        )
        for line in skipped
    )
    assert said(skipped, f"{WORKER_TEST} [cgroup]: enable, base_path, group: ")
    deb = f"{DATA / 'mirrors' / 'deb_fedora.conf'} mirrors 'debian'"
    assert said(skipped, f"{deb}: command: for rsync it names the rsync program")


def test_an_include_pattern_that_matches_nothing_is_an_error(tmp_path: Path) -> None:
    worker = tmp_path / "worker.conf"
    worker.write_text('[include]\ninclude_mirrors = "none/*.conf"\n')
    with pytest.raises(ConfigError, match="matches no file"):
        import_tunasync(worker)


def test_nested_mirrors_inherit_their_parent_s_keys() -> None:
    text = """
[global]
interval = 60
[[mirrors]]
provider = "command"
upstream = "https://example.org/"
command = "sync.sh"
interval = 30
  [[mirrors.mirrors]]
  name = "one"
  [[mirrors.mirrors]]
  name = "two"
  interval = 1440
  [mirrors.mirrors.env]
  WHICH = "two"
"""
    conversion = convert(source(text))
    jobs = tomllib.loads(conversion.toml)["jobs"]
    assert [(j["name"], j["command"], j["interval"]) for j in jobs] == [
        ("one", "sync.sh", "30m"),
        ("two", "sync.sh", "1d"),
    ]
    assert jobs[1]["env"] == {"WHICH": "two"} and "env" not in jobs[0]


def test_hooks_retries_timeouts_and_exit_codes() -> None:
    text = """
[global]
retry = 3
timeout = 7200
exec_on_success = ["global-ok.sh"]
exec_on_failure = ["global-fail.sh"]
dangerous_global_success_exit_codes = [10]
rsync_options = ["--global"]
[[mirrors]]
name = "own"
provider = "command"
upstream = "u"
command = "c"
retry = 5
timeout = 90
exec_on_success = ["own-ok.sh"]
exec_on_failure_extra = ["extra-fail.sh"]
success_exit_codes = [24]
[[mirrors]]
name = "inherits"
provider = "rsync"
upstream = "rsync://example.org/x/"
rsync_options = ["--own"]
rsync_override = ["-a"]
username = "u"
password = "p"
"""
    jobs = {j["name"]: j for j in tomllib.loads(convert(source(text)).toml)["jobs"]}
    own, inherits = jobs["own"], jobs["inherits"]
    assert (own["retries"], own["timeout"], own["success_exit_codes"]) == (5, "90s", [0, 10, 24])
    # A mirror's exec_on_* replace the global ones; the _extra lists are added to whichever applies.
    assert own["hooks"] == {"post_success": ["own-ok.sh"], "post_fail": ["global-fail.sh", "extra-fail.sh"]}
    assert (inherits["retries"], inherits["timeout"]) == (3, "2h")
    assert inherits["hooks"] == {"post_success": ["global-ok.sh"], "post_fail": ["global-fail.sh"]}
    # tunasync puts the global rsync_options before the mirror's.
    assert inherits["rsync_options"] == ["--global", "--own"]
    assert (inherits["rsync_override"], inherits["username"], inherits["password"]) == (["-a"], "u", "p")
    assert inherits["success_exit_codes"] == [0, 10]  # tunasync applies the global codes to every provider


def test_rsync_success_exit_codes_merge_as_tunasync_merges_them() -> None:
    # The documented first setup's mirror (docs/zh_CN/get_started.md) allows rsync's 23 and 24.
    text = """
[global]
dangerous_global_success_exit_codes = [10]
dangerous_global_rsync_success_exit_codes = [30]
[[mirrors]]
name = "elvish"
provider = "rsync"
upstream = "rsync://rsync.example.org/elvish/"
rsync_success_exit_codes = [23, 24]
[[mirrors]]
name = "plain"
provider = "two-stage-rsync"
upstream = "rsync://rsync.example.org/plain/"
[[mirrors]]
name = "script"
provider = "command"
upstream = "u"
command = "c"
rsync_success_exit_codes = [23]
"""
    conversion = convert(source(text))
    jobs = {j["name"]: j for j in tomllib.loads(conversion.toml)["jobs"]}
    assert jobs["elvish"]["success_exit_codes"] == [0, 10, 23, 24, 30]
    assert jobs["plain"]["success_exit_codes"] == [0, 10, 30]
    assert jobs["script"]["success_exit_codes"] == [0, 10]  # the rsync ones are not for the command provider
    skipped = [str(s) for s in conversion.skipped]
    # Only the command mirror's rsync codes (and the missing timeout) are not carried over.
    assert [line.split(": ")[:2] for line in skipped] == [
        ["every job", "timeout"],
        ["worker.conf mirrors 'script'", "rsync_success_exit_codes"],
    ]
    config = parse_config(conversion.toml, "converted.toml")
    assert {job.name: job.success_exit_codes for job in config.jobs}["elvish"] == frozenset({0, 10, 23, 24, 30})


def test_a_mirror_without_a_provider_is_rsync_as_in_tunasync() -> None:
    text = '[[mirrors]]\nname = "m"\nupstream = "rsync://example.org/m/"\n'
    (job,) = tomllib.loads(convert(source(text)).toml)["jobs"]
    assert job["provider"] == "rsync"


def test_keys_unknown_to_tunasync_are_listed_too() -> None:
    text = '[global]\nnmae = "w"\n[[mirrors]]\nname = "m"\nprovider = "command"\nupstream = "u"\ncommand = "c"\n'
    text += "intervall = 5\n"
    skipped = [str(s) for s in convert(source(text)).skipped]
    assert "worker.conf [global]: nmae: not a tunasync key either (tunasync ignores it)" in skipped
    assert "worker.conf mirrors 'm': intervall: not a tunasync key either (tunasync ignores it)" in skipped


def test_a_name_that_cannot_be_a_job_directory_is_skipped_with_why() -> None:
    text = '[[mirrors]]\nname = "a/b"\nprovider = "command"\nupstream = "u"\ncommand = "c"\n'
    conversion = convert(source(text))
    assert conversion.jobs == ()
    assert [s.key for s in conversion.skipped if s.key == "name"] == ["name"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[mirrors]]\nname = "m"\nprovider = "ftp"\nupstream = "u"\n', "'ftp' is not a tunasync provider"),
        (
            '[[mirrors]]\nname = "m"\nprovider = "command"\nupstream = "u"\ncommand = "c"\ninterval = "2h"\n',
            "must be an integer",
        ),
        ('[[mirrors]]\nname = "m"\nprovider = "command"\nupstream = "u"\n', "command: missing"),
        ("[global\nname = 1\n", "not valid TOML"),
        (
            '[[mirrors]]\nname = "m"\nprovider = "command"\nupstream = "u"\ncommand = "c"\n' * 2,
            "two mirrors are named 'm'",
        ),
        (
            '[[mirrors]]\nname = "m"\nprovider = "command"\nupstream = "u"\ncommand = "c"\nenv = { "A-B" = "1" }\n',
            "env.A-B",
        ),
    ],
)
def test_what_tunasync_itself_would_refuse_is_a_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        convert(source(text))


def test_strings_are_written_so_that_toml_reads_them_back() -> None:
    tricky = 'say "hi" \\ \t then\nnewline ünïcode'
    text = f"[[mirrors]]\nname = \"m\"\nprovider = \"command\"\nupstream = \"u\"\ncommand = '''{tricky}'''\n"
    (job,) = tomllib.loads(convert(source(text)).toml)["jobs"]
    assert job["command"] == tricky


# -- the converted config loads (with the rsync branch's keys) --------------------------------------------


@pytest.mark.parametrize("worker", [WORKERS_DOC, WORKER_TEST])
def test_the_converted_examples_load_as_shoal_configs(worker: Path) -> None:
    conversion = import_tunasync(worker, MANAGER_TEST)
    config = parse_config(conversion.toml, "converted.toml")
    assert [job.name for job in config.jobs] == list(conversion.jobs)
    assert config.worker.name in ("mirror_worker", "test_worker")
