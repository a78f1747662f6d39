"""``ai-analytics``: the operator's command line (status, config check, demo)."""

from __future__ import annotations

import json
import sys

import click

from .config import Config, load_config
from .errors import ConfigError, StateError
from .status import load_status, render_text
from .version import package_version

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="AI_ANALYTICS_CONFIG",
    default=None, show_envvar=True,
    help="The daemon's config.yaml (for its namespace and state_dir); defaults apply without it.",
)


def _load(config_path: str | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        click.echo(f"ai-analytics: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), prog_name="ai-analytics")
def main() -> None:
    """Look at what ai-analyticsd has counted on this node."""


@main.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the full state document as JSON.")
def status(config_path: str | None, as_json: bool) -> None:
    """Show the daemon's counters: events by outcome, lanes, operations.

    Exit status: 0 when the daemon runs, 3 when it does not (the last state it wrote is
    still shown, if any).
    """
    config = _load(config_path)
    try:
        report = load_status(config)
    except StateError as exc:
        click.echo(f"ai-analytics: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    if report.document is None:
        click.echo(
            f"ai-analytics: no state in {config.state_dir}: ai-analyticsd has not run with this "
            f"config (namespace {config.namespace!r})"
            + ("" if report.running else " and is not running"),
            err=True,
        )
        sys.exit(EXIT_NOT_RUNNING)
    if as_json:
        click.echo(json.dumps(report.document, indent=2))
    else:
        click.echo(render_text(report.document))
    sys.exit(EXIT_OK if report.running else EXIT_NOT_RUNNING)


@main.group()
def config() -> None:
    """Work with config.yaml files."""


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path: str) -> None:
    """Validate PATH; print the first problem and exit 2, or print OK."""
    _load(path)
    click.echo(f"{path}: OK")


@main.command()
@click.option("--duration", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds to run the simulated workers.")
@click.option("--workers", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Simulated inference worker processes.")
@click.option("--rate", type=click.IntRange(1, 1_000_000), default=2000, show_default=True,
              help="Events per second per worker.")
def demo(duration: float, workers: int, rate: int) -> None:
    """Start a daemon and simulated workers in a private namespace; show live counters."""
    from .demo import run_demo

    sys.exit(run_demo(duration, workers, rate))


def _check_since(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from .history import parse_duration

    try:
        parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


@main.command()
@CONFIG_OPTION
@click.option("--since", default="1h", show_default=True, callback=_check_since,
              metavar="DURATION", help="How far back to look: 90s, 15m, 1h, 2d, 1w or seconds.")
@click.option("--operation", default=None, help="Only the series of this operation.")
@click.option("--model", default=None, help="Only the series of this model.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many rows, the newest (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
def history(config_path: str | None, since: str, operation: str | None, model: str | None,
            limit: int | None, as_json: bool) -> None:
    """Show the statistics ai-analyticsd recorded per operation and model, oldest first.

    Exit status: 0, also when no row matches; 3 when there is no history (ai-analyticsd has
    not run with this config).
    """
    import time

    from .history import history_path, parse_duration, read_history, render_table

    config = _load(config_path)
    since_unix = time.time() - parse_duration(since)
    try:
        rows = read_history(config.state_dir, since_unix, operation, model, limit)
    except StateError as exc:
        click.echo(f"ai-analytics: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    if rows is None:
        click.echo(
            f"ai-analytics: no history in {history_path(config.state_dir)}: ai-analyticsd has "
            f"not run with this config (namespace {config.namespace!r})",
            err=True,
        )
        sys.exit(EXIT_NOT_RUNNING)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(render_table(rows))
    if not rows:
        only = "".join(f" for {name} {value!r}" for name, value in
                       (("operation", operation), ("model", model)) if value is not None)
        click.echo(f"ai-analytics: no history rows in the last {since}{only}", err=True)
    sys.exit(EXIT_OK)
