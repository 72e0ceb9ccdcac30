"""How the CLI loads its code: a command's imports run with the cyclic collector paused, then are frozen;
help texts load no service."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from shoal.cli.main import loading


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()  # give this process's objects back to the collector
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_collector_paused_while_loading_and_what_loaded_is_frozen() -> None:
    gc.enable()
    gc.unfreeze()
    with loading():
        assert not gc.isenabled()
        loaded = [{"a module's": "objects"} for _ in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(loaded)


def test_collector_comes_back_after_a_failed_import() -> None:
    gc.enable()
    with pytest.raises(ModuleNotFoundError), loading():
        import shoal.no_such_module  # type: ignore[import-not-found]  # noqa: F401
    assert gc.isenabled()


def test_a_collector_switched_off_stays_off() -> None:
    gc.disable()
    with loading():
        pass
    assert not gc.isenabled()


# Run in a fresh interpreter: walks every command of `shoal`, shows each one's --help as `shoal` would, and
# after each names the heavy modules loaded so far. Output: one JSON object.
WALK_HELP = """
import contextlib, io, json, sys
import click
from shoal.cli.main import cli

HEAVY = ("sqlalchemy", "aiohttp")
report = {"helps": 0, "failed": [], "heavy": [], "texts": {}, "no_help": []}

def walk(command, path):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            code = cli.main([*path, "--help"], prog_name="shoal", standalone_mode=False)
    except click.ClickException as exc:
        report["failed"].append([" ".join(path), exc.format_message()])
        code = None
    if code == 0 and out.getvalue().startswith("Usage: shoal"):
        report["helps"] += 1
        report["texts"][" ".join(path)] = out.getvalue()
    elif code is not None:
        report["failed"].append([" ".join(path), out.getvalue()[:200]])
    for param in command.params:
        if isinstance(param, click.Option) and not param.help and param.name not in ("help", "version"):
            report["no_help"].append([" ".join(path), param.opts[-1]])
    loaded = [m for m in HEAVY if m in sys.modules]
    if loaded and not report["heavy"]:
        report["heavy"] = [" ".join(path), loaded]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            walk(command.get_command(ctx, name), [*path, name])

walk(cli, [])
print(json.dumps(report))
"""


def test_every_help_works_offline_and_loads_neither_sqlalchemy_nor_aiohttp() -> None:
    """`shoal --help`, each group's and each command's --help: no tracker, no network, and none of the
    services' libraries, whose import made `shoal --help` cost six times `shoal get --help`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}  # no $SHOAL_TRACKER to lean on
    done = subprocess.run(
        [sys.executable, "-c", WALK_HELP], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    report = json.loads(done.stdout)
    assert report["failed"] == []
    assert report["heavy"] == []
    # shoal, 8 commands, and the subcommands of pool (6), mirror (3), mirror ctl (10) and cache (13)
    assert report["helps"] >= 40


# An option's value named by its click type rather than by what it is (a URL, SECONDS, DIR).
TYPE_METAVAR = re.compile(r"^ +(?:-\w, )?--[\w-]+ (TEXT|INTEGER|FLOAT|DIRECTORY|BOOLEAN|(?:INTEGER|FLOAT) RANGE)\b")


def test_every_help_text_says_what_each_option_takes_in_plain_text() -> None:
    """Every option has help, names its value for what it is (URL, SECONDS, DIR, not TEXT, FLOAT RANGE or
    DIRECTORY), and no help shows reStructuredText's backticks, which click prints as they are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    done = subprocess.run(
        [sys.executable, "-c", WALK_HELP], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    report = json.loads(done.stdout)
    assert report["no_help"] == []
    typed = [(path, line.strip()) for path, text in report["texts"].items() for line in text.splitlines()
             if TYPE_METAVAR.match(line)]  # fmt: skip
    assert typed == []
    assert [path for path, text in report["texts"].items() if "`" in text] == []


# What `shoal get` imports before it knows whether a daemon takes the download: the hand-off's modules only.
GET_IMPORTS = """
import json, sys
import shoal.cli.get
heavy = ("asyncio", "aiohttp", "sqlalchemy", "shoal.core.download", "shoal.core.pool", "logging.handlers")
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


def test_get_loads_no_event_loop_and_no_engine_before_the_hand_off_to_a_daemon() -> None:
    """A fleet's gets start together on a host's few cores: a get that its daemon serves loads neither
    asyncio, aiohttp nor the download's core (the in-process download imports them when it runs)."""
    done = subprocess.run([sys.executable, "-c", GET_IMPORTS], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == []


# What `shoal pool push` imports: the pool's client and messages, not the daemon's configuration.
POOL_IMPORTS = """
import json, sys
import shoal.cli.pool
heavy = ("asyncio", "aiohttp", "sqlalchemy", "shoal.daemon.config", "shoal.peer.config", "shoal.http.credentials")
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


def test_pool_push_loads_neither_the_daemon_s_configuration_nor_an_event_loop() -> None:
    """A push is the one command a fleet's members wait for (the racks lab's pool method starts its clock
    with it): it loads neither the daemon's and the download's settings nor the fleet's credentials, which
    only ``shoal pool join`` needs."""
    done = subprocess.run([sys.executable, "-c", POOL_IMPORTS], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == []
