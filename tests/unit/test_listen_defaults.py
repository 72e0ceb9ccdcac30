"""Where a piece server listens unless told: one default (shoal.peer.config.DEFAULT_LISTEN), the same for
``shoal get``, ``shoal daemon``, the Python API and the configs behind them."""

from __future__ import annotations

import inspect

import click
import pytest

from shoal.cli.daemon import daemon
from shoal.cli.get import get
from shoal.daemon.config import DaemonConfig
from shoal.peer.api import aget
from shoal.peer.config import DEFAULT_LISTEN, GetConfig
from shoal.peer.request import parse_listen


@pytest.mark.parametrize(("command", "config"), [(get, GetConfig), (daemon, DaemonConfig)])
def test_each_commands_listen_default_is_its_configs(command: click.Command, config: type) -> None:
    (option,) = [p for p in command.params if p.name == "listen"]
    assert option.default == DEFAULT_LISTEN
    assert parse_listen(DEFAULT_LISTEN) == (config.listen_host, config.listen_port) == ("0.0.0.0", 0)


def test_the_python_api_listens_where_the_cli_does() -> None:
    assert inspect.signature(aget).parameters["listen"].default == DEFAULT_LISTEN


def test_a_listen_address_without_a_host_takes_the_default_host() -> None:
    assert parse_listen(":7000") == (GetConfig.listen_host, 7000)
