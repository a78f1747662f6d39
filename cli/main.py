"""``ai-analytics``: the operator's command line (status, lanes, config check, demo, history)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import NoReturn

import click

from ai_analytics.cli.shm_view import read_namespace
from ai_analytics.cli.status import (
    DEFAULT_WINDOW,
    WINDOWS,
    StatusOutput,
    lanes_exit_code,
    render_lanes,
    status_output,
)
from ai_analytics.cli.tables import terminal_width
from ai_analytics.core.config import Config, load_config
from ai_analytics.core.errors import ConfigError, StateError
from ai_analytics.core.exits import CliExit
from ai_analytics.core.version import package_version

MIN_WATCH_SECONDS = 0.2
MAX_WATCH_SECONDS = 3600.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, clear the screen

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
        sys.exit(CliExit.USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_version(), prog_name="ai-analytics")
def main() -> None:
    """Look at what ai-analyticsd has counted on this node."""


def _check_watch(ctx: click.Context, param: click.Parameter, value: float | None
                 ) -> float | None:
    if value is not None and not (MIN_WATCH_SECONDS <= value <= MAX_WATCH_SECONDS):
        raise click.BadParameter(
            f"must be between {MIN_WATCH_SECONDS} and {MAX_WATCH_SECONDS:g} seconds, "
            f"got {value}", ctx=ctx, param=param)
    return value


def _watch(seconds: float, frame: Callable[[], StatusOutput], as_json: bool) -> NoReturn:
    """Print ``frame()`` every ``seconds`` until Ctrl-C, then exit 130 without a traceback.

    On a terminal each frame replaces the last (cursor home, clear to the end); piped, the
    frames follow each other, separated by a blank line (JSON: one document per line)."""
    clear = sys.stdout.isatty() and not as_json
    first = True
    try:
        while True:
            out = frame()
            text = "\n".join(part for part in (out.stdout, out.stderr) if part)
            if clear:
                footer = (f"every {seconds:g} s · {time.strftime('%H:%M:%S')} · exit status "
                          f"now {out.exit_code} · Ctrl-C to stop")
                click.echo(f"{CLEAR_SCREEN}{text}\n\n{footer}", nl=True)
            elif as_json:
                click.echo(text)
            else:
                click.echo(text if first else f"\n{text}")
            sys.stdout.flush()
            first = False
            time.sleep(seconds)
    except KeyboardInterrupt:
        if clear:
            click.echo()
        sys.exit(CliExit.INTERRUPTED)


@main.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True,
              help="Print the snapshot document as JSON (docs/snapshot.md), unchanged except "
                   "daemon.running; with --watch, one document per line.")
@click.option("--watch", type=float, default=None, metavar="SECONDS", callback=_check_watch,
              help=f"Redraw every SECONDS (at least {MIN_WATCH_SECONDS}) until Ctrl-C.")
@click.option("--window", type=click.Choice(WINDOWS), default=None,
              help="Statistics window of the tables (default: the daemon's insight window "
                   f"where the snapshot states it, else {DEFAULT_WINDOW}).")
def status(config_path: str | None, as_json: bool, watch: float | None, window: str | None
           ) -> None:
    """Show what ai-analyticsd counts: operations, models, resources, event path, caches,
    findings and recommendations.

    When no daemon runs, the lanes are read straight from shared memory (never written) and
    shown with the events they still hold.

    \b
    Exit status:
      0    the daemon runs and no finding is a warning or critical
      1    the daemon runs and a finding is a warning or critical
           (or its state file cannot be read)
      2    bad usage or config
      3    ai-analyticsd is not running for the namespace
      130  --watch stopped with Ctrl-C
    """
    config = _load(config_path)

    def frame() -> StatusOutput:
        return status_output(config, window, as_json, terminal_width(),
                             json_indent=None if watch is not None else 2)

    if watch is not None:
        _watch(watch, frame, as_json)
    out = frame()
    if out.stdout:
        click.echo(out.stdout)
    if out.stderr:
        click.echo(out.stderr, err=True)
    sys.exit(out.exit_code)


@main.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True,
              help="Print the lanes, control segment and lock as JSON.")
def lanes(config_path: str | None, as_json: bool) -> None:
    """Ring diagnostics straight from shared memory, with or without the daemon.

    Per lane: producer pid (as seen from here; 123* is a worker of another PID namespace,
    (1) one not visible from here), its uid, alive (it holds its lane's lock), thread,
    capacity, on_full ("no ring": a thread that found no room for a lane), head, tail,
    pending, fill, dropped, overwritten, invalid, names used, retired, consumer pid,
    creation time; then the control segment and the namespace lock. The segment directory
    is the config's segment_dir (default /dev/shm). Segments are only read (os.pread), never
    mapped, written or removed; one that is not a valid lane is listed as unreadable.

    \b
    Exit status:
      0    shown (lanes, or a daemon that holds the namespace)
      2    bad usage or config
      3    nothing at all: no segment in the namespace and no daemon (wrong namespace?)
    """
    config = _load(config_path)
    view = read_namespace(config.namespace, config.segment_dir)
    code = lanes_exit_code(view)
    if as_json:
        click.echo(json.dumps(view.as_dict(), indent=2))
    else:
        click.echo(render_lanes(view, terminal_width()))
    if code == CliExit.NOT_RUNNING and not as_json:
        click.echo(f"ai-analytics: nothing in {view.shm_dir} for namespace "
                   f"{config.namespace!r} and no ai-analyticsd runs for it", err=True)
    sys.exit(code)


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
@click.option("--duration", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Seconds to run the simulated workers.")
@click.option("--workers", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Simulated inference worker processes.")
@click.option("--rate", type=click.IntRange(1, 1_000_000), default=2000, show_default=True,
              help="Events per second per worker.")
def demo(duration: float, workers: int, rate: int) -> None:
    """Start a daemon and simulated workers in a private namespace; show live counters."""
    from ai_analytics.cli.demo import run_demo

    sys.exit(run_demo(duration, workers, rate))


def _check_since(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from ai_analytics.core.history import parse_duration

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

    from ai_analytics.cli.history_view import render_history
    from ai_analytics.core.history import history_path, parse_duration, read_history

    config = _load(config_path)
    since_unix = time.time() - parse_duration(since)
    try:
        rows = read_history(config.state_dir, since_unix, operation, model, limit)
    except StateError as exc:
        click.echo(f"ai-analytics: {exc}", err=True)
        sys.exit(CliExit.UNREADABLE)
    if rows is None:
        click.echo(
            f"ai-analytics: no history in {history_path(config.state_dir)}: ai-analyticsd has "
            f"not run with this config (namespace {config.namespace!r})",
            err=True,
        )
        sys.exit(CliExit.NOT_RUNNING)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif rows:
        click.echo(render_history(rows))
    if not rows:
        only = "".join(f" for {name} {value!r}" for name, value in
                       (("operation", operation), ("model", model)) if value is not None)
        click.echo(f"ai-analytics: no history rows in the last {since}{only}", err=True)
    sys.exit(CliExit.OK)
