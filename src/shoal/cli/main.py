"""``shoal``: the command group, logging set-up, and the one place errors become exit codes.

Exit codes (also in the README):

    0  success
    1  an unexpected error
    2  usage error: bad flag, value, unit, URL or destination
    3  the tracker cannot be reached (and --fallback was not given)
    4  the origin failed, or its file kept changing
    5  integrity failure: the whole-file digest did not match
    6  local I/O error: the destination cannot be written
    130 interrupted
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from shoal.core.errors import ShoalError


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="shoal: %(levelname)s: %(message)s", stream=sys.stderr)


def run_or_exit(action: Callable[[], Any]) -> Any:
    """Run ``action``; turn Shoal errors into one line on stderr and their exit code."""
    try:
        return action()
    except ShoalError as exc:
        click.echo(f"shoal: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("shoal: interrupted", err=True)
        sys.exit(130)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shoal")
def cli() -> None:
    """Shoal: peer-to-peer file distribution for fleets of machines."""


def main() -> None:
    from shoal.cli import demo, get, tracker

    cli.add_command(tracker.tracker)
    cli.add_command(get.get)
    cli.add_command(demo.demo)
    cli()
