"""``shoal install-units``: write Shoal's systemd units where systemd reads them."""

from __future__ import annotations

from pathlib import Path

import click

from shoal.cli.main import configure_logging, log_options, run_or_exit
from shoal.systemd.units import DEFAULT_DIR, install, this_command


@click.command("install-units")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    metavar="DIR",
    help="Where to write the units.",
)
@log_options
def install_units(directory: Path) -> None:
    """Write the systemd units of the tracker, the daemon, the seeder and the mirror manager and worker
    into DIR, each starting this installation's shoal, and print each path written."""
    configure_logging(0, False)
    command = this_command()
    for path in run_or_exit(lambda: install(directory, command)):
        click.echo(f"wrote {path}")
    click.echo("then: systemctl daemon-reload && systemctl enable --now shoal-tracker (or another of them)")
