"""``shoal``: the command group, logging set-up, and the one place errors become exit codes.

Exit codes (also in the README):

    0  success
    1  an unexpected error
    2  usage error: bad flag, value, unit, URL or destination
    3  the tracker cannot be reached (and --fallback was not given)
    4  the origin failed, or its file kept changing
    5  integrity failure: the whole-file digest did not match
    6  local I/O error: the destination cannot be written
    7  cache error: the file does not fit the cache, the cache has no such entry, or another daemon holds it
    8  the file is in place, but the --callback command failed or could not be started
    9  cannot listen: the port is in use, the address is not this host's, or it needs privileges
    10 the tracker's SQLite database file is held by another tracker process
    130 interrupted
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import importlib
import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from click.exceptions import NoArgsIsHelpError

from shoal.core.errors import ShoalError, UsageError
from shoal.core.redact import redact_passwords
from shoal.core.tracker_choice import parse_trackers
from shoal.core.units import parse_rate

T = TypeVar("T")


def click_parser(parse: Callable[[str], T]) -> Callable[[click.Context, click.Parameter, str | None], T | None]:
    """A click callback that parses an option with ``parse``; its UsageError becomes click's BadParameter."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> T | None:
        if value is None:
            return None
        try:
            return parse(value)
        except UsageError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


class FiniteRange(click.FloatRange):
    """click's FloatRange, refusing ``nan`` and ``inf``: Python's float() takes both, and a bound compares
    false with ``nan``, so the range alone lets it through to arithmetic that divides by zero or never ends."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


def _trackers(text: str) -> str:
    """A ``--tracker`` value checked (core.tracker_choice): its base URLs, normalised, comma-separated."""
    return ",".join(parse_trackers(text, what=""))


TRACKERS = click_parser(_trackers)
"""The callback of every ``--tracker``: one tracker's base URL or several, comma-separated; a bad entry is a
usage error (exit code 2) that names it."""


def socket_option(command: Any) -> Any:
    """``--socket PATH``: the daemon's control socket, shared by `daemon`, `get` and `cache`."""
    return click.option(
        "--socket",
        "socket_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="PATH",
        help="The daemon's control socket [default: $SHOAL_DAEMON_SOCKET, /run/shoal/daemon.sock for root, "
        "else $XDG_RUNTIME_DIR/shoal/daemon.sock].",
    )(command)


def _ignored_params(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    from shoal.core.ids import parse_ignored_params

    try:
        return parse_ignored_params(values)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


def ignore_qp_option(command: Any) -> Any:
    """``--ignore-qp NAME``: query parameters left out of a task's identity, shared by `get` and `daemon`."""
    return click.option(
        "--ignore-qp",
        multiple=True,
        envvar="SHOAL_IGNORE_QP",
        callback=_ignored_params,
        metavar="NAME",
        help="A query parameter (or pattern: X-Amz-*) left out of the swarm's identity, so differently signed "
        "URLs of one file share one swarm; repeatable or comma-separated [default: $SHOAL_IGNORE_QP].",
    )(command)


def rate_option(flag: str, capped: str) -> Callable[[Any], Any]:
    """An option of bytes per second (``--download-rate``, ``--upload-rate``); ``capped`` says what it caps."""
    return click.option(
        flag,
        callback=click_parser(parse_rate),
        metavar="RATE",
        help=f"Cap {capped} at RATE bytes/s (1024-based K, M, G).",
    )


def locality_options(command: Any) -> Any:
    """``--site`` and ``--rack``: the locality labels a peer announces, shared by `get` and `daemon`."""
    for label in ("rack", "site"):  # the option added last is listed first
        help_text = f"Locality label: prefer peers of this {label}."
        command = click.option(f"--{label}", default="", metavar=label.upper(), help=help_text)(command)
    return command


def log_options(command: Any) -> Any:
    """``--log-file PATH`` (minion's ``--logfile`` too) and ``--log-format text|json``, on every command:
    read by :func:`configure_logging` from the click context, so no command's signature carries them."""
    command = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        expose_value=False,
        callback=_remember,
        help="text (default), or json: one object a line (time, level, logger, message and context fields).",
    )(command)
    return click.option(
        "--log-file",
        "--logfile",
        type=click.Path(dir_okay=False, writable=True, path_type=Path),
        expose_value=False,
        callback=_remember,
        metavar="PATH",
        help="Append the log to PATH instead of stderr (reopened when rotated away).",
    )(command)


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    ctx.meta[f"shoal.{param.name}"] = value
    return value


def verbose_option(command: Any) -> Any:
    """``-v``, ``-vv``: more logging, the same in every command but `get` (whose -vv traces a download);
    with the log's file and format (:func:`log_options`)."""
    command = click.option("-v", "--verbose", count=True, help="More logging (-vv: debug).")(command)
    return log_options(command)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``,
    any context a call passed in ``extra`` (``task``, ``peer``, ``job``...), and ``error`` with the
    traceback when there is one. Log shippers read it without a pattern; a message's newlines stay inside
    its string."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}

    def format(self, record: logging.LogRecord) -> str:
        import json  # here, not at the top: a `shoal get` handed to a daemon imports nothing else that needs it

        out: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                # A mapping (aiohttp's access log gives its headers so) stays an object; anything else that
                # JSON has no type for is written as its text (json's default).
                out[key] = {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure_logging(verbose: int, quiet: bool) -> None:
    """The log's level from ``-v``/``-q``; its file and format from the command's :func:`log_options`. A
    log file is appended to and reopened when logrotate moves it away (WatchedFileHandler)."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    ctx = click.get_current_context(silent=True)
    meta = ctx.meta if ctx is not None else {}
    path: Path | None = meta.get("shoal.log_file")
    handler: logging.Handler
    if path is not None:
        try:
            from logging.handlers import WatchedFileHandler  # only a log file needs it; few commands write one

            handler = WatchedFileHandler(path, encoding="utf-8")
        except OSError as exc:
            raise click.UsageError(f"cannot open the log file {path}: {exc.strerror or exc}", ctx) from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter
    if meta.get("shoal.log_format") == "json":
        formatter = JsonFormatter()
    else:
        # -vv traces what happens when: its lines carry the time, to the millisecond (always, in a file).
        stamp = "%(asctime)s.%(msecs)03d " if level == logging.DEBUG or path is not None else ""
        day = "%Y-%m-%d " if path is not None else ""
        formatter = logging.Formatter(f"shoal: {stamp}%(levelname)s: %(message)s", datefmt=f"{day}%H:%M:%S")
    handler.setFormatter(RedactingFormatter(formatter))
    logging.basicConfig(level=level, handlers=[handler])


class RedactingFormatter(logging.Formatter):
    """Another formatter's lines with every URL's password as ``***`` (core.redact): whatever a message
    quotes (a database URL, an origin URL with credentials, a driver's error), no password reaches a log."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_passwords(self.inner.format(record))


def usage_hint(ctx: click.Context | None) -> str:
    """`` (see 'shoal CMD --help')``: what every usage error ends with, naming the help of its command."""
    return f" (see '{ctx.command_path} --help')" if ctx is not None else ""


def fail(message: str, code: int) -> NoReturn:
    """Exit with ``code`` after ``shoal: error: MESSAGE`` on stderr, on one line whatever the message holds
    (a server's reply, a driver's error): a script reads one line per error. A URL's password in it is
    shown as ``***``."""
    line = redact_passwords(" ".join(message.split()))
    if any(isinstance(h, logging.FileHandler) for h in logging.getLogger().handlers):
        logging.getLogger("shoal").error("%s", line)  # a log file tells why the command ended, too
    click.echo(f"shoal: error: {line}", err=True)
    sys.exit(code)


def run_or_exit(action: Callable[[], Any], *, interrupted: str = "interrupted") -> Any:
    """Run ``action``; turn Shoal errors into one line on stderr and their exit code (a usage error with
    the hint to its command's help), and Ctrl-C or SIGTERM into ``shoal: INTERRUPTED`` and 130."""
    try:
        return action()
    except UsageError as exc:
        fail(f"{exc}{usage_hint(click.get_current_context(silent=True))}", exc.exit_code)
    except ShoalError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        click.echo(f"shoal: {interrupted}", err=True)
        sys.exit(130)


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Import a command's code with the cyclic garbage collector paused, then freeze what was loaded.

    Imports create tens of thousands of objects that live as long as the process: the collector, run every
    700 allocations, scans them again and again and frees nothing, CPU time taken from ``shoal get``'s
    imports. Frozen (``gc.freeze``), they are left out of every later collection too. When peers start at
    once on few cores, start-up is CPU time (benchmarks/swarm_lab.py; figures in benchmarks/RESULTS.md).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs: ``shoal get`` never loads SQLAlchemy or the
    tracker, which took about a quarter of its start-up time (python -X importtime)."""

    commands_by_module = {
        "tracker": "shoal.cli.tracker",
        "get": "shoal.cli.get",
        "demo": "shoal.cli.demo",
        "seed": "shoal.cli.seed",
        "daemon": "shoal.cli.daemon",
        "cache": "shoal.cli.cache",
        "mirror": "shoal.cli.mirror",
        "pool": "shoal.cli.pool",
        "install-units": "shoal.cli.units:install_units",
        "passkey": "shoal.cli.passkey",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands_by_module)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.commands_by_module.get(cmd_name)
        if target is None:
            return None
        module, _, name = target.partition(":")  # MODULE, or MODULE:FUNCTION when the name is no identifier
        with loading():
            command = getattr(importlib.import_module(module), name or cmd_name)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="shoal")
def cli() -> None:
    """Shoal: peer-to-peer file distribution for fleets of machines."""


def _usage_message(exc: click.UsageError) -> str:
    """A usage error's line: a bad value from a config file or a variable names where it came from."""
    from shoal.cli.config_file import reworded

    return reworded(exc, sys.argv[1:]) or exc.format_message()


def main() -> None:
    """The ``shoal`` command. A usage error is one line on stderr and exit code 2, like every other error:
    click's own display is four (the usage, a hint, a blank line, the error)."""
    try:
        code = cli.main(standalone_mode=False)
    except click.UsageError as exc:
        if isinstance(exc, NoArgsIsHelpError):  # a group run without a command: its help, as click shows it
            exc.show()
        else:
            fail(f"{_usage_message(exc)}{usage_hint(exc.ctx)}", exc.exit_code)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        click.echo("shoal: aborted", err=True)
        sys.exit(1)
    # Without standalone mode click returns the code of an exit it caught (--help, --version), or the
    # command's return value, which is not an exit code.
    sys.exit(code if type(code) is int else 0)
