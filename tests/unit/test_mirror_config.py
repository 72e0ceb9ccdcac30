"""The mirror configuration (core.mirror_config): what a good mirrors.toml becomes, and for each kind of
mistake, the one ConfigError that names the key and the line it is on."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.core.errors import ConfigError, ProtocolError, UsageError
from shoal.core.mirror_config import Hooks, JobSpec, Publish, Retention
from shoal.core.mirror_toml import parse_config
from shoal.core.mirror_values import NO_LIMIT, parse_duration
from shoal.mirror.config import load_config

FULL = """\
[manager]
host = "0.0.0.0"
port = 7000
token_env = "MIRROR_TOKEN"
db = "sqlite:////tmp/mirror.db"
worker_timeout = "2m"

[worker]
manager = "http://10.0.0.1:7000"
token = "s3cret"
directory = "/srv/mirror"
concurrency = 4

[[jobs]]
name = "files"
provider = "http"
upstream = "https://example.org/pub/"
interval = "10m"
retries = 3

[jobs.retention]
keep_versions = 2
max_age = "30d"

[[jobs]]
name = "debian"
provider = "command"
upstream = "rsync://ftp.debian.org/debian/"
command = "rsync -a \\"$SHOAL_MIRROR_UPSTREAM\\" ."
cron = "0 */6 * * *"
timeout = "7200s"
worker = "w1"
success_exit_codes = [0, 24]
env = { RSYNC_TIMEOUT = "60" }

[jobs.hooks]
pre_job = "echo start"
post_fail = ["echo one", "echo two"]

[jobs.publish]
seed = false
pool = "edge"
replicas = 2
"""


def config_error(text: str, environ: Mapping[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "mirrors.toml", environ=environ or {})
    return info.value


def job(extra: str = "", *, provider: str = "http", upstream: str = '"http://origin.test/file"') -> str:
    command = 'command = "true"\n' if provider == "command" else ""
    return f'[[jobs]]\nname = "j"\nprovider = "{provider}"\nupstream = {upstream}\n{command}{extra}'


def test_a_full_configuration() -> None:
    config = parse_config(FULL, "mirrors.toml", environ={"MIRROR_TOKEN": "t0ken"})
    assert config.manager.host == "0.0.0.0"
    assert config.manager.port == 7000
    assert config.manager.token == "t0ken"
    assert config.manager.db == "sqlite:////tmp/mirror.db"
    assert config.manager.worker_timeout == 120.0
    assert config.worker.manager == "http://10.0.0.1:7000"
    assert config.worker.token == "s3cret"
    assert config.worker.directory == "/srv/mirror"
    assert config.worker.concurrency == 4
    files, debian = config.jobs
    assert files == JobSpec(
        name="files",
        provider="http",
        upstream="https://example.org/pub/",
        interval=600.0,
        retries=3,
        retention=Retention(keep_versions=2, max_age=30 * 86400.0),
    )
    assert debian.command == 'rsync -a "$SHOAL_MIRROR_UPSTREAM" .'
    assert debian.cron == "0 */6 * * *"
    assert debian.timeout == 7200.0
    assert debian.worker == "w1"
    assert debian.success_exit_codes == frozenset({0, 24})
    assert dict(debian.env) == {"RSYNC_TIMEOUT": "60"}
    assert debian.hooks == Hooks(pre_job=("echo start",), post_fail=("echo one", "echo two"))
    assert debian.publish == Publish(seed=False, pool="edge", replicas=2)
    assert config.job("debian") is debian
    assert config.job("nope") is None


def test_an_empty_file_is_all_defaults() -> None:
    config = parse_config("")
    assert config.jobs == ()
    assert config.manager.host == "127.0.0.1"
    assert config.manager.token is None
    assert config.worker.concurrency == 2


def test_config_error_is_a_usage_error() -> None:
    assert issubclass(ConfigError, UsageError)
    assert ConfigError("x", source="s", line=1, key="k").exit_code == 2


# -- every mistake names its key and its line --------------------------------------------------------------


def test_unknown_key_in_a_job_names_the_job_key_and_line() -> None:
    text = FULL.replace('interval = "10m"', 'intervall = "10m"')
    error = config_error(text, environ={"MIRROR_TOKEN": "x"})
    line = text.splitlines().index('intervall = "10m"') + 1
    assert str(error) == f"mirrors.toml:{line}: jobs[0] (name 'files'): unknown key 'intervall'"
    assert (error.source, error.line, error.key, error.path) == ("mirrors.toml", line, "intervall", "jobs[0].intervall")


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("[manager]\nport = 1\nprot = 2\n", 3, "prot"),
        ("[worker]\n\nconcurrrency = 2\n", 3, "concurrrency"),
        ("colour = 'blue'\n", 1, "colour"),
        ("[mangaer]\nport = 1\n", 1, "mangaer"),
        (job("[jobs.hooks]\npre_jobb = 'x'\n"), 6, "pre_jobb"),
        (job("[jobs.retention]\nkeep = 1\n"), 6, "keep"),
        (job("[jobs.publish]\n\n\npools = 'x'\n"), 8, "pools"),
        (job("hooks.pre_exec = 'x'\nhooks.pre_sync = 'y'\n"), 6, "pre_sync"),
    ],
)
def test_unknown_keys_anywhere(text: str, line: int, key: str) -> None:
    error = config_error(text)
    assert (error.line, error.key) == (line, key)
    assert f"unknown key {key!r}" in str(error)
    assert str(error).startswith(f"mirrors.toml:{line}: ")


def test_unknown_key_in_an_inline_table_points_at_its_line() -> None:
    error = config_error(job("retention = { keep_versions = 2, keep_forever = true }\n"))
    assert (error.line, error.key) == (5, "keep_forever")


@pytest.mark.parametrize("interval", ['"10x"', '"-5m"', "-5", "0", '"0s"', '""', '"m"', "true", "[1]", "nan"])
def test_bad_intervals(interval: str) -> None:
    error = config_error(job(f"interval = {interval}\n"))
    assert (error.line, error.key) == (5, "interval")
    assert "interval" in str(error) or "duration" in str(error)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), ("1d", 86400.0), ("45", 45.0), (7, 7.0)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("table", "key"),
    [
        (job(), "interval"),
        (job(), "timeout"),
        (job("[jobs.retention]\n"), "max_age"),
        ("[manager]\n", "worker_timeout"),
    ],
)
@pytest.mark.parametrize("value", ["120", '"120"', "120.0"])
def test_a_duration_without_a_unit_is_refused_with_the_units_to_write(table: str, key: str, value: str) -> None:
    # tunasync's interval = 120 is two hours; read as seconds it would silently run every two minutes.
    text = f"{table}{key} = {value}\n"
    error = config_error(text)
    assert (error.line, error.key) == (text.count("\n"), key)
    assert f"{key}: {value.replace(chr(34), chr(39))} has no unit" in str(error)
    assert 'write it with one of s, m, h, d, as "120s", "120m" or "120h"' in str(error)
    assert '"120m" is "2h"' in str(error) and '"120s" is "2m"' in str(error)


def test_a_duration_with_a_unit_still_reads() -> None:
    config = parse_config(job('interval = "120m"\ntimeout = "90s"\n[jobs.retention]\nmax_age = "1.5d"\n'))
    (spec,) = config.jobs
    assert (spec.interval, spec.timeout, spec.retention.max_age) == (7200.0, 90.0, 1.5 * 86400)


@pytest.mark.parametrize("value", ["0", "0.0", '"0"', '"0s"', '"0h"', '" 0 m "'])
def test_a_timeout_of_zero_is_no_limit_and_needs_no_unit(value: str) -> None:
    # tunasync runs a job without a timeout unbounded; 0 is the same in every unit, so no unit is asked for.
    (spec,) = parse_config(job(f"timeout = {value}\n")).jobs
    assert spec.timeout == NO_LIMIT
    assert spec.to_json()["timeout"] == 0 and JobSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(("key", "value"), [("timeout", "-1"), ("timeout", '"-5m"'), ("interval", "0")])
def test_only_a_time_limit_may_be_zero_and_none_may_be_negative(key: str, value: str) -> None:
    error = config_error(job(f"{key} = {value}\n"))
    assert (error.line, error.key) == (5, key)
    if key == "timeout":
        assert "or 0 for no limit" in str(error)
    else:
        assert "must be positive" in str(error)


def test_the_manager_s_json_still_carries_durations_as_seconds() -> None:
    spec = parse_config(job('interval = "2h"\n')).jobs[0]
    assert spec.to_json()["interval"] == 7200.0
    assert JobSpec.from_json(spec.to_json()) == spec


def test_bad_cron_names_the_key_and_the_field() -> None:
    error = config_error(job('cron = "0 25 * * *"\n'))
    assert (error.line, error.key) == (5, "cron")
    assert "hour" in str(error)


def test_duplicate_job_names() -> None:
    text = job() + "\n" + job()
    error = config_error(text)
    assert (error.line, error.key, error.path) == (7, "name", "jobs[1].name")
    assert "duplicate job name 'j' (also jobs[0])" in str(error)


def test_missing_upstream() -> None:
    error = config_error('\n[[jobs]]\nname = "a"\nprovider = "http"\n')
    # The key is absent, so the line is the job's table header.
    assert (error.line, error.key) == (2, "upstream")
    assert "missing key 'upstream'" in str(error)


def test_command_provider_needs_a_command() -> None:
    error = config_error('[[jobs]]\nname = "a"\nprovider = "command"\nupstream = "x"\n')
    assert (error.line, error.key) == (1, "command")


@pytest.mark.parametrize("url", ["ftp://origin.test/x", "http:///x", "http://origin.test:99999/x", "origin.test/x"])
def test_http_provider_needs_an_http_url(url: str) -> None:
    error = config_error(job(upstream=f'"{url}"'))
    assert (error.line, error.key) == (4, "upstream")
    assert "not an http(s) URL" in str(error)


@pytest.mark.parametrize(
    ("key", "readers"),
    [('command = "x"', "command provider"), ("success_exit_codes = [0]", "command and rsync providers")],
)
def test_command_only_keys_are_refused_for_http(key: str, readers: str) -> None:
    error = config_error(job(key + "\n"))
    assert error.line == 5
    assert f"only for the {readers}" in str(error)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("retries = 0\n", "retries"),
        ('retries = "2"\n', "retries"),
        ("timeout = -1\n", "timeout"),
        ('worker = "bad name"\n', "worker"),
        ("[jobs.retention]\nkeep_versions = 0\n", "keep_versions"),
        ('[jobs.retention]\nmax_age = "forever"\n', "max_age"),
        ('[jobs.publish]\nseed = "yes"\n', "seed"),
        ("[jobs.publish]\nreplicas = 2\n", "replicas"),
        ("[jobs.hooks]\npost_fail = [1]\n", "post_fail"),
        ('[jobs.hooks]\npre_job = ""\n', "pre_job"),
        ('[jobs.env]\n"BAD-NAME" = "1"\n', "BAD-NAME"),
        ("[jobs.env]\nN = 1\n", "N"),
    ],
)
def test_wrong_values(extra: str, key: str) -> None:
    error = config_error(job(extra))
    assert error.key == key
    assert error.line == len(job(extra).splitlines())


@pytest.mark.parametrize("codes", ["[256]", "[]", "[-1]", '"0"'])
def test_bad_exit_codes(codes: str) -> None:
    error = config_error(job(f"success_exit_codes = {codes}\n", provider="command", upstream='"x"'))
    assert (error.key, error.line) == ("success_exit_codes", 6)


def test_bad_provider_and_name() -> None:
    assert config_error(job().replace('"http"', '"ftp"')).key == "provider"
    error = config_error(job().replace('"j"', '"../etc"'))
    assert (error.key, error.line) == ("name", 2)


def test_manager_settings_errors() -> None:
    assert config_error("[manager]\nport = 70000\n").line == 2
    assert config_error('[manager]\ntoken = "a"\ntoken_env = "B"\n').key == "token_env"
    error = config_error('[manager]\n\ntoken_env = "MISSING"\n', environ={})
    assert (error.key, error.line) == ("token_env", 3)
    assert "MISSING is not set" in str(error)
    assert config_error('[worker]\nmanager = "localhost:1"\n').key == "manager"


def test_the_workers_tracker_takes_a_list_of_base_urls() -> None:
    settings = parse_config('[worker]\ntracker = "http://t1:6969,http://t2:6969"\n', "mirrors.toml", environ={})
    assert settings.worker.tracker == "http://t1:6969,http://t2:6969"
    error = config_error('[worker]\n\ntracker = "http://t1:6969,ftp://x"\n')
    assert (error.key, error.line) == ("tracker", 3)
    assert "'ftp://x' is not a tracker's base URL" in str(error)
    assert "an empty tracker URL" in str(config_error('[worker]\ntracker = ","\n'))


def test_jobs_must_be_an_array_of_tables() -> None:
    assert config_error('jobs = "x"\n').key == "jobs"


def test_syntax_errors_carry_their_line() -> None:
    error = config_error('[manager]\nport = 1\nhost = "unterminated\n')
    assert error.line == 3
    assert error.key is None
    assert str(error).startswith("mirrors.toml:3: not valid TOML")


def test_multiline_strings_do_not_confuse_the_line_finder() -> None:
    text = job('[jobs.hooks]\npre_job = """\nfake = 1\n[[jobs]]\n"""\nbogus = 1\n')
    error = config_error(text)
    assert (error.key, error.line) == ("bogus", 10)


# -- JSON, as the manager sends jobs to workers -------------------------------------------------------------


def test_from_json_validates_like_the_toml_parser() -> None:
    good = parse_config(FULL, environ={"MIRROR_TOKEN": "x"}).jobs[1].to_json()
    with pytest.raises(ProtocolError) as info:
        JobSpec.from_json({**good, "intervall": 5})
    assert info.value.field == "job.intervall"
    with pytest.raises(ProtocolError):
        JobSpec.from_json({**good, "interval": 0})
    with pytest.raises(ProtocolError):
        JobSpec.from_json({**good, "hooks": {"pre_job": "x", "nope": []}})
    with pytest.raises(ProtocolError):
        JobSpec.from_json([good])


names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
commands = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != "")
durations = st.floats(min_value=0.001, max_value=1e9, allow_nan=False, allow_infinity=False)


@st.composite
def job_specs(draw: st.DrawFn) -> JobSpec:
    provider = draw(st.sampled_from(["http", "command"]))
    pool = draw(st.none() | names)
    return JobSpec(
        name=draw(names),
        provider=provider,
        upstream=draw(st.sampled_from(["http://a.test/x", "https://b.test/dir/"]))
        if provider == "http"
        else draw(commands),
        command=draw(commands) if provider == "command" else None,
        interval=draw(durations),
        cron=draw(st.none() | st.sampled_from(["0 * * * *", "*/5 1-3 * * mon-fri", "@daily"])),
        timeout=draw(st.just(NO_LIMIT) | durations),
        retries=draw(st.integers(1, 1000)),
        worker=draw(st.none() | names),
        env=draw(st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,8}", fullmatch=True), st.text(max_size=10))),
        success_exit_codes=draw(st.frozensets(st.integers(0, 255), min_size=1)) if provider == "command" else None,
        hooks=Hooks(*(tuple(draw(st.lists(commands, max_size=2))) for _ in range(5))),
        retention=Retention(draw(st.none() | st.integers(1, 100)), draw(st.none() | durations)),
        publish=Publish(draw(st.booleans()), pool, draw(st.none() | st.integers(1, 9)) if pool else None),
    )


@given(job_specs())
def test_json_round_trip(spec: JobSpec) -> None:
    assert JobSpec.from_json(spec.to_json()) == spec


# -- the file on disk (shoal.mirror.config) ---------------------------------------------------------------


def test_load_config_reads_the_file_and_the_token_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "mirrors.toml"
    path.write_text('[worker]\ntoken_env = "T"\n' + job())
    config = load_config(path, environ={"T": "secret"})
    assert config.worker.token == "secret"
    assert [j.name for j in config.jobs] == ["j"]
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}:2: worker: ")


def test_load_config_of_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert "cannot read the configuration" in str(info.value)
    assert info.value.exit_code == 2


def test_a_token_file_is_read_through_the_callers_reader_and_its_refusal_names_the_key() -> None:
    text = '[manager]\ntoken_file = "mirror.token"\n'
    config = parse_config(text, "m.toml", read_secret=lambda name: f"secret-of-{name}")
    assert config.manager.token == "secret-of-mirror.token"

    def refuse(name: str) -> str:
        raise UsageError(f"{name} is open to other users (mode 0644): chmod 600 {name}")

    with pytest.raises(ConfigError, match=r"m.toml:2: manager: .*chmod 600") as caught:
        parse_config(text, "m.toml", read_secret=refuse)
    assert caught.value.key == "token_file"
    with pytest.raises(ConfigError, match="give one of 'token', 'token_file', not several"):
        parse_config('[worker]\ntoken = "abcdefghijklmnopq"\ntoken_file = "t"\n', "m.toml")


def test_load_config_reads_a_token_file_beside_it_only_when_nobody_else_may(tmp_path: Path) -> None:
    secret = tmp_path / "mirror.token"
    secret.write_text("0123456789abcdef0123\n")
    secret.chmod(0o600)
    path = tmp_path / "mirrors.toml"
    path.write_text('[worker]\ntoken_file = "mirror.token"\n')
    assert load_config(path, environ={}).worker.token == "0123456789abcdef0123"
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=r"mirrors.toml:2: worker: .*open to other users"):
        load_config(path, environ={})
    secret.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path, environ={})


# -- the rsync providers, layouts and logs (tunasync's keys) ------------------------------------------------


def test_the_rsync_keys_read_as_tunasync_writes_them() -> None:
    text = job(
        'rsync_options = ["--bwlimit=50m"]\nexclude_file = "/etc/ex"\nusername = "u"\npassword = "p"\n'
        'use_ipv6 = true\nlog_dir = "/var/log/shoal/{{.Name}}"\nlog_keep = 3\nlayout = "in-place"\n'
        'fail_on_match = "^rsync error"\nsize_pattern = "Total file size: (\\\\S+)"\n',
        provider="two-stage-rsync",
        upstream='"rsync://m.example/debian/"',
    )
    [spec] = parse_config(text).jobs
    assert spec.rsync_options == ("--bwlimit=50m",)
    assert (spec.exclude_file, spec.username, spec.password, spec.use_ipv6) == ("/etc/ex", "u", "p", True)
    assert spec.stage1_profile == "debian"  # two-stage's default profile
    assert (spec.layout, spec.log_keep, spec.size_pattern) == ("in-place", 3, r"Total file size: (\S+)")
    assert spec.success_exit_codes is None  # 0 and 24 alone
    assert JobSpec.from_json(spec.to_json()) == spec
    [partial] = parse_config(job("success_exit_codes = [23]\n", provider="rsync", upstream='"m::d/"')).jobs
    assert partial.success_exit_codes == frozenset({23})  # tunasync's rsync_success_exit_codes
    assert JobSpec.from_json(partial.to_json()) == partial
    worker = parse_config('[worker]\nlog_dir = "/logs/{{ .Name }}"\nlog_keep = 5\n').worker
    assert (worker.log_dir, worker.log_keep) == ("/logs/{{ .Name }}", 5)


@pytest.mark.parametrize(
    ("extra", "provider", "upstream", "message"),
    [
        ('username = "u"\n', "http", '"http://origin.test/file"', "'username' is only for the rsync"),
        ("use_ipv4 = true\n", "command", '"x"', "'use_ipv4' is only for the rsync"),
        ("", "rsync", '"rsync://m.example/debian"', "not an rsync source ending in '/'"),
        ("", "rsync", '"http://m.example/debian/"', "not an rsync source ending in '/'"),
        ("", "rsync", '"mirror.example:srv/debian"', "not an rsync source ending in '/'"),
        ("use_ipv4 = true\nuse_ipv6 = true\n", "rsync", '"rsync://m/d/"', "'use_ipv4' or 'use_ipv6', not both"),
        ('password = "a"\npassword_file = "/f"\n', "rsync", '"rsync://m/d/"', "'password' or 'password_file'"),
        ('stage1_profile = "debian"\n', "rsync", '"rsync://m/d/"', "only for the two-stage-rsync"),
        ('stage1_profile = "ubuntu"\n', "two-stage-rsync", '"m::d/"', "stage1_profile"),
        ('command = "x"\n', "rsync", '"rsync://m/d/"', "'command' is only for the command provider"),
        ('fail_on_match = "(oops"\n', "rsync", '"rsync://m/d/"', "is not a regular expression"),
        ('size_pattern = "Total: \\\\S+"\n', "rsync", '"rsync://m/d/"', "exactly 1 group"),
        ('log_dir = "/l/{{.Mirror}}"\n', "rsync", '"rsync://m/d/"', "the only template log_dir takes"),
        ("log_keep = 0\n", "rsync", '"rsync://m/d/"', "log_keep"),
        ('layout = "flat"\n', "rsync", '"rsync://m/d/"', "layout"),
        ('layout = "in-place"\n[jobs.retention]\nkeep_versions = 2\n', "rsync", '"rsync://m/d/"', "keeps no versions"),
        ('layout = "in-place"\n[jobs.publish]\npool = "edge"\n', "rsync", '"rsync://m/d/"', "needs the versions"),
    ],
)
def test_rsync_layout_and_log_mistakes_name_their_key(extra: str, provider: str, upstream: str, message: str) -> None:
    error = config_error(job(extra, provider=provider, upstream=upstream))
    assert message in str(error)
    assert error.line is not None
