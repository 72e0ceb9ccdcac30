"""tunasync's configs into a mirrors.toml (core.tunasync_config, and the files read by shoal.mirror.config):
a worker.conf in the layout of tunasync's documented example, a manager.conf, and a worker whose mirrors
come from [include] files, key by key.

The inputs in tests/data/tunasync are Shoal's own files written in the shapes tunasync documents (see the
README there). The converted text is checked as parsed TOML, and loaded as a Shoal config.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from shoal.core.errors import ConfigError
from shoal.core.mirror_toml import parse_config
from shoal.core.mirror_values import NO_LIMIT
from shoal.core.tunasync_config import Source, convert, duration
from shoal.mirror.config import import_tunasync

DATA = Path(__file__).resolve().parent.parent / "data" / "tunasync"
WORKERS_DOC = DATA / "workers.conf"  # every table of the documented worker example, 17 jobs
WORKER_TEST = DATA / "worker.conf"  # [include] include_mirrors = "mirrors/*.conf", as tunasync's test configs
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
        "name": "rack3-sync",  # [global] name
        "directory": "/data/mirror",  # [global] mirror_dir
        "concurrency": 6,  # [global] concurrent
        "manager": "http://sync-manager.lab.example:14242",  # [manager] api_base
        "token": "fleet-7c1d",  # [manager] token
    }
    # manager.conf's [server] addr and port; the workers' token is the manager's to ask for.
    assert document["manager"] == {"token": "fleet-7c1d", "host": "10.42.0.1", "port": 14242}
    assert len(jobs) == 17  # every [[mirrors]] of the file, the nested parent counted by its 2 children


def test_the_documented_command_mirror_key_by_key() -> None:
    _, jobs, _ = converted(WORKERS_DOC)
    assert jobs["fieldnotes"] == {
        "name": "fieldnotes",
        "provider": "command",
        "upstream": "https://downloads.fieldnotes.example/releases/",
        "size_pattern": "mirror size: ([0-9.]+[KMGT]?)",
        "command": "/opt/lab-sync/fetch-releases.sh fieldnotes",
        "interval": "1d",  # interval = 1440 minutes
        "timeout": 0,  # none set: no limit, as in tunasync
        "worker": "rack3-sync",  # its jobs ran on this worker
        "layout": "in-place",  # tunasync syncs into <mirror_dir>/<name>
        "log_dir": "/data/mirror-logs/fieldnotes",  # [global] log_dir, {{.Name}} expanded
    }
    assert jobs["satellite-tiles"]["fail_on_match"] == "ERROR: "
    assert jobs["satellite-tiles"]["env"] == {"PARALLEL": "8", "CHECK_SIGNATURES": "yes"}
    assert jobs["board-firmware"]["env"]["S3_SYNC_FLAGS"] == "--delete --size-only"


def test_the_documented_rsync_mirrors_key_by_key() -> None:
    _, jobs, _ = converted(WORKERS_DOC)
    grid = jobs["gridlab-data"]
    assert (grid["provider"], grid["upstream"]) == ("rsync", "rsync://data.gridlab.example/public/")
    assert (grid["use_ipv4"], grid["rsync_options"]) == (True, ["--delete-excluded"])
    assert grid["interval"] == "3h"  # no interval of its own: [global] interval = 180 minutes
    assert jobs["tilesets"]["use_ipv6"] is True
    assert jobs["sensor-archive"]["exclude_file"] == "/etc/lab-sync/excludes/sensor-archive.txt"
    assert jobs["handbook"]["rsync_options"] == ["--exclude", "/drafts", "--exclude", "/private"]
    apt = jobs["kestrel-apt"]
    assert (apt["provider"], apt["stage1_profile"]) == ("two-stage-rsync", "debian")
    iso = jobs["kestrel-iso"]  # rsync with a stage1_profile, which only two-stage reads
    assert iso["provider"] == "rsync" and "stage1_profile" not in iso
    assert jobs["vendor-sdk"]["env"] == {"RSYNC_PROXY": "proxy.lab.example:3128"}
    assert {job["provider"] for job in jobs.values()} == {"command", "rsync", "two-stage-rsync"}


def test_the_documented_shape_s_nested_mirrors_are_jobs_with_their_parent_s_keys() -> None:
    _, jobs, _ = converted(WORKERS_DOC)
    assert list(jobs)[-2:] == ["bootrom.git", "kernel-patches.git"]  # the nameless parent is no job
    bootrom, patches = jobs["bootrom.git"], jobs["kernel-patches.git"]
    assert (bootrom["provider"], bootrom["command"], bootrom["size_pattern"]) == (
        "command",
        "/opt/lab-sync/git-mirror.sh",
        "size-pack: ([0-9.]+[KMGT]?)",
    )
    assert (bootrom["upstream"], bootrom["interval"]) == ("https://git.lab.example/bootrom.git", "1h")
    assert "env" not in bootrom
    assert (patches["interval"], patches["env"]) == ("4h", {"GIT_FULL_HISTORY": "1"})  # its own keys win
    assert patches["log_dir"] == "/data/mirror-logs/kernel-patches.git"


def test_intervals_become_the_largest_whole_unit() -> None:
    _, jobs, _ = converted(WORKERS_DOC)
    names = ("wheelhouse", "board-firmware", "ci-images", "release-notes")
    intervals = {name: jobs[name]["interval"] for name in names}
    assert intervals == {"wheelhouse": "5m", "board-firmware": "30m", "ci-images": "5h", "release-notes": "4d"}
    assert [duration(s) for s in (7200, 86400, 90, 5400, 61)] == ["2h", "1d", "90s", "90m", "61s"]


def test_what_the_documented_example_cannot_carry_is_listed_with_why() -> None:
    _, _, skipped = converted(WORKERS_DOC, MANAGER_TEST)
    assert "workers.conf mirrors 'fieldnotes': docker_image: Shoal has no docker provider" in "\n".join(skipped)
    assert said(skipped, "workers.conf mirrors 'kestrel-iso': memory_limit: ")
    assert said(skipped, "workers.conf mirrors 'compiler-cache': docker_volumes: ")
    assert said(skipped, "workers.conf mirrors 'ci-images': docker_options: ")
    assert said(skipped, "workers.conf [cgroup]: enable = false: disabled in the file")
    assert said(skipped, "workers.conf [docker]: enable: Shoal has no docker provider")
    assert said(skipped, "workers.conf [server]: hostname, listen_addr, listen_port")
    assert said(skipped, "manager.conf [files]: db_type: ")
    assert said(skipped, "manager.conf [server]: ssl_cert: ")
    # Every mirror there runs without a timeout, as it would in tunasync: nothing about it is lost.
    assert not [line for line in skipped if line.split(": ")[1] == "timeout"]


# -- tunasync's test configs: [include], per-mirror keys ----------------------------------------------------


def test_include_mirrors_are_globbed_from_the_worker_file_s_directory_in_name_order() -> None:
    document, jobs, skipped = converted(WORKER_TEST, MANAGER_TEST)
    # mirrors/firmware.conf, then mirrors/packages.conf
    assert list(jobs) == ["radio-firmware", "kestrel-apt", "pyrepo"]
    radio = jobs["radio-firmware"]
    assert (radio["interval"], radio["env"]) == ("10m", {"SIGNING_KEYRING": "/etc/lab-sync/keys/radio.gpg"})
    assert jobs["kestrel-apt"]["provider"] == "two-stage-rsync" and jobs["kestrel-apt"]["use_ipv6"] is True
    assert jobs["pyrepo"]["exclude_file"] == "/etc/lab-sync/excludes/pyrepo.txt"
    assert jobs["pyrepo"]["interval"] == "15m"  # [global] interval = 15 minutes
    assert jobs["pyrepo"]["log_dir"] == "/var/tmp/lab-sync/logs/pyrepo"
    assert document["worker"]["manager"] == "https://sync-manager.lab.example:14443"
    firmware = f"{DATA / 'mirrors' / 'firmware.conf'} mirrors 'radio-firmware'"
    assert (
        f"{firmware}: mirror_dir: a job's directory is always <[worker] directory>/<job>; move the mirror there"
        in skipped
    )
    assert said(skipped, f"{firmware}: role: Shoal has no master/slave roles")
    assert any(
        line.endswith(
            "[manager]: ca_cert: Shoal verifies an https manager against the system's CAs: "
            "point SSL_CERT_FILE at this file"
        )
        for line in skipped
    )
    assert said(skipped, f"{WORKER_TEST} [cgroup]: enable, base_path, group: ")
    apt = f"{DATA / 'mirrors' / 'packages.conf'} mirrors 'kestrel-apt'"
    assert said(skipped, f"{apt}: command: for rsync it names the rsync program")


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


@pytest.mark.parametrize(
    ("global_timeout", "own_timeout", "written", "seconds"),
    [
        (None, None, 0, NO_LIMIT),
        (0, 0, 0, NO_LIMIT),
        (None, 0, 0, NO_LIMIT),
        (600, None, "10m", 600.0),
        (600, 90, "90s", 90.0),
    ],
)
def test_a_mirror_without_a_timeout_gets_no_limit_as_in_tunasync(
    global_timeout: int | None, own_timeout: int | None, written: object, seconds: float
) -> None:
    text = "" if global_timeout is None else f"[global]\ntimeout = {global_timeout}\n"
    text += '[[mirrors]]\nname = "m"\nprovider = "command"\nupstream = "u"\ncommand = "c"\n'
    text += "" if own_timeout is None else f"timeout = {own_timeout}\n"
    conversion = convert(source(text))
    (job,) = tomllib.loads(conversion.toml)["jobs"]
    assert job["timeout"] == written
    assert [s.key for s in conversion.skipped] == []  # nothing of it is lost, so nothing is said
    (spec,) = parse_config(conversion.toml, "converted.toml").jobs
    assert spec.timeout == seconds


def test_rsync_success_exit_codes_merge_as_tunasync_merges_them() -> None:
    # The documented first setup's mirror (docs/zh_CN/get_started.md) allows rsync's 23 and 24.
    text = """
[global]
dangerous_global_success_exit_codes = [10]
dangerous_global_rsync_success_exit_codes = [30]
[[mirrors]]
name = "toolbox"
provider = "rsync"
upstream = "rsync://rsync.example.org/toolbox/"
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
    assert jobs["toolbox"]["success_exit_codes"] == [0, 10, 23, 24, 30]
    assert jobs["plain"]["success_exit_codes"] == [0, 10, 30]
    assert jobs["script"]["success_exit_codes"] == [0, 10]  # the rsync ones are not for the command provider
    skipped = [str(s) for s in conversion.skipped]
    # Only the command mirror's rsync codes are not carried over.
    assert [line.split(": ")[:2] for line in skipped] == [
        ["worker.conf mirrors 'script'", "rsync_success_exit_codes"],
    ]
    config = parse_config(conversion.toml, "converted.toml")
    assert {job.name: job.success_exit_codes for job in config.jobs}["toolbox"] == frozenset({0, 10, 23, 24, 30})


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
    assert config.worker.name in ("rack3-sync", "bench-sync-2")
