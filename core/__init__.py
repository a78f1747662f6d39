"""ai_analytics.core: what the daemon and the operator CLI both need, and nothing heavy.

The configuration, the exception hierarchy, exit codes, the files the daemon writes and the
CLI reads (state file, history database, namespace lock), the reader of a lane's header, and
the snapshot document's type. Stdlib and PyYAML only: importing it loads none of numpy,
psutil, pynvml or prometheus_client. See docs/architecture.md.
"""
