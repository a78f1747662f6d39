"""A gunicorn server hook: each worker makes its lane as it is forked, not at its first request.

    # gunicorn.conf.py
    from ai_analytics.integrations.gunicorn import post_fork

or ``gunicorn -c python:ai_analytics.integrations.gunicorn ...`` when there is no other
config. gunicorn runs ``post_fork`` in the worker's main thread, which serves every request
of the sync worker and every greenlet of the gevent and eventlet workers (their greenlets
share the OS thread's lane). The gthread worker serves on a pool of threads that no hook
reaches: each pool thread still makes its lane at its first request.
"""

from __future__ import annotations

from ai_analytics.client._emit import prepare


def post_fork(server: object, worker: object) -> None:
    """gunicorn's ``post_fork(server, worker)``: make this worker's lane now."""
    prepare()
