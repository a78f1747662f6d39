"""``ai-analyticsd``: run the daemon in the foreground, logging to stderr."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import click

from ai_analytics.core.config import load_config, log_level_number
from ai_analytics.core.errors import AlreadyRunning, BindError, ConfigError, StateError
from ai_analytics.core.exits import DaemonExit
from ai_analytics.core.version import package_version
from ai_analytics.daemon.gc_tuning import schedule_full_collections
from ai_analytics.daemon.malloc_tuning import keep_temporaries_on_heap
from ai_analytics.daemon.sort_tuning import DISABLE_VARIABLE, prefer_avx2_sort
from ai_analytics.daemon.systemd_notify import notify, watchdog_interval

log = logging.getLogger("ai_analytics.daemon")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="AI_ANALYTICS_CONFIG",
    default=None, show_envvar=True,
    help="config.yaml to use. Without it, the built-in defaults (see config.yaml in the "
    "source) and $AI_ANALYTICS_NAMESPACE apply.",
)
@click.version_option(package_version(), prog_name="ai-analyticsd")
def main(config_path: str | None) -> None:
    """Drain the shared-memory lanes of a namespace, count every event, and keep a state
    file for `ai-analytics status`.

    Runs in the foreground and logs to stderr. SIGTERM or SIGINT: final drain, final state,
    exit 0 within stop_timeout_seconds. SIGHUP: read the config file again and apply what can
    change while running (an invalid file is logged and the running config stays). Under
    systemd (Type=notify) it reports READY=1, WATCHDOG=1, RELOADING=1 and STOPPING=1.
    """
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"ai-analyticsd: {exc}", err=True)
        sys.exit(DaemonExit.CONFIG)
    logging.basicConfig(
        level=log_level_number(config), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sorting = prefer_avx2_sort()
    keep_temporaries_on_heap()
    # Imported here, after prefer_avx2_sort: this is what first imports numpy.
    from ai_analytics.daemon.service import Daemon

    try:
        daemon = Daemon(config)
    except ConfigError as exc:  # a segment_dir it cannot use
        click.echo(f"ai-analyticsd: {config_path or 'config'}: {exc}", err=True)
        sys.exit(DaemonExit.CONFIG)
    except StateError as exc:
        click.echo(f"ai-analyticsd: {exc}", err=True)
        sys.exit(DaemonExit.FAILURE)
    schedule_full_collections()
    if sorting:  # said once the start can no longer fail on a configuration error
        log.info("AMD Zen 4 CPU: numpy's AVX-512 kernels are off in this process (%s=%s), "
                 "because its AVX-512 sort is several times slower there than its AVX2 one; "
                 "set %s yourself (empty keeps numpy's choice) to decide otherwise",
                 DISABLE_VARIABLE, sorting, DISABLE_VARIABLE)

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        daemon.request_stop()  # only record it: the loop does the work

    def on_reload(signum: int, _frame: FrameType | None) -> None:
        daemon.request_reload()  # only record it: the loop reads the file

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_reload)
    try:
        daemon.run(reload_config=lambda: load_config(config_path), notify=notify,
                   watchdog_seconds=watchdog_interval())
    except AlreadyRunning as exc:
        click.echo(f"ai-analyticsd: {exc}", err=True)
        sys.exit(DaemonExit.FAILURE)
    except BindError as exc:
        click.echo(f"ai-analyticsd: {exc}", err=True)
        sys.exit(DaemonExit.FAILURE)  # the message says which port
    except OSError as exc:
        click.echo(f"ai-analyticsd: {exc}", err=True)
        sys.exit(DaemonExit.FAILURE)
    sys.exit(DaemonExit.OK)
