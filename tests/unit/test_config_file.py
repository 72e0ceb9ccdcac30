"""cli.config_file: every option of a configured command comes from its flag, its SHOAL_<COMMAND>_<FLAG>
variable, a --config TOML file or its default, in that order; a bad file is a usage error naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from shoal.cli.config_file import configured, reworded


@configured("SHOAL_TOY")
@click.command()
@click.option("--host", default="0.0.0.0")
@click.option("--port", type=click.IntRange(0, 65535), default=6969)
@click.option("--audit-share", type=click.FloatRange(0, 1), default=0.5)
@click.option("--origin-checks/--no-origin-checks", default=True)
@click.option("--share-authenticated", is_flag=True)
@click.option("--pool", "pools", multiple=True)
@click.option("--tracker", envvar="SHOAL_TRACKER")
@click.option("-v", "--verbose", count=True)
def toy(**settings: Any) -> None:
    click.echo(json.dumps(settings))


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(toy, list(args), env=env)


def settings(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run(*args, env=env)
    assert result.exit_code == 0, result.output
    loaded: dict[str, Any] = json.loads(result.output)
    return loaded


def toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return str(path)


def test_a_flag_beats_its_variable_which_beats_the_file_which_beats_the_default(tmp_path: Path) -> None:
    config = toml(tmp_path, 'host = "file"\nport = 1\n')
    assert settings()["host"] == "0.0.0.0"
    assert settings("--config", config)["host"] == "file"
    assert settings("--config", config, env={"SHOAL_TOY_HOST": "env"})["host"] == "env"
    assert settings("--config", config, "--host", "flag", env={"SHOAL_TOY_HOST": "env"})["host"] == "flag"
    # Each option on its own: the variable of one leaves the file's value of another in place.
    both = settings("--config", config, env={"SHOAL_TOY_HOST": "env"})
    assert (both["host"], both["port"]) == ("env", 1)


def test_the_config_file_itself_may_come_from_a_variable(tmp_path: Path) -> None:
    assert settings(env={"SHOAL_TOY_CONFIG": toml(tmp_path, "port = 7\n")})["port"] == 7


def test_every_kind_of_option_reads_from_the_file_and_from_variables(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        "audit_share = 1\norigin_checks = false\nshare_authenticated = true\npool = ['a', 'b']\nverbose = 2\n",
    )
    got = settings("--config", config)
    assert got["audit_share"] == 1.0 and got["origin_checks"] is False and got["share_authenticated"] is True
    assert got["pools"] == ["a", "b"] and got["verbose"] == 2
    env = {"SHOAL_TOY_ORIGIN_CHECKS": "true", "SHOAL_TOY_POOL": "c d", "SHOAL_TOY_AUDIT_SHARE": "0.25"}
    got = settings("--config", config, env=env)
    assert got["origin_checks"] is True and got["pools"] == ["c", "d"] and got["audit_share"] == 0.25


def test_a_variable_that_existed_before_still_works_after_the_commands_own(tmp_path: Path) -> None:
    assert settings(env={"SHOAL_TRACKER": "http://old:6969"})["tracker"] == "http://old:6969"
    both = {"SHOAL_TRACKER": "http://old:6969", "SHOAL_TOY_TRACKER": "http://new:6969"}
    assert settings(env=both)["tracker"] == "http://new:6969"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prot = 5\n", "toy.toml:1: prot: unknown key (known keys: audit_share, host, "),
        ("\naudit-share = 0.1\n", "toy.toml:2: audit-share: unknown key (write it audit_share)"),
        ('port = "80"\n', "toy.toml:1: port: expected an integer, not a string ('80')"),
        ("host = 5\n", "toy.toml:1: host: expected a string, not an integer (5)"),
        ("port = true\n", "toy.toml:1: port: expected an integer, not a boolean (True)"),
        ("origin_checks = 1\n", "toy.toml:1: origin_checks: expected a boolean, not an integer (1)"),
        ('pool = "a"\n', "toy.toml:1: pool: expected an array of strings, not a string ('a')"),
        ("pool = ['a', 1]\n", "toy.toml:1: pool: expected an array of strings, but it holds an integer (1)"),
        ("port = 99999\n", "toy.toml:1: port: 99999 is not in the range 0<=x<=65535"),
        ("[port]\nx = 1\n", "toy.toml:1: port: expected an integer, not a table"),
        ("config = 'other.toml'\n", "toy.toml:1: config: unknown key"),
        ("port = \n", "toy.toml: not valid TOML: Invalid value (at line 1, column 8)"),
    ],
)
def test_a_bad_file_is_a_usage_error_naming_the_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    result = run("--config", toml(tmp_path, text))
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split()), result.output


def test_a_file_that_cannot_be_read_is_a_usage_error(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "missing.toml"))
    assert result.exit_code == 2
    assert "cannot read the config file" in result.output and "No such file" in result.output


def test_a_bad_variable_is_named_unless_its_flag_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_TOY_PORT", "http")
    with pytest.raises(click.BadParameter) as caught:
        toy.main(["--host", "x"], standalone_mode=False)
    assert reworded(caught.value, ["--host", "x"]) == "SHOAL_TOY_PORT: 'http' is not a valid integer range."
    monkeypatch.delenv("SHOAL_TOY_PORT")
    with pytest.raises(click.BadParameter) as caught:
        toy.main(["--port", "http"], standalone_mode=False)
    assert reworded(caught.value, ["--port", "http"]) is None  # click's own words name the flag
