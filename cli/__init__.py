"""ai_analytics.cli: the operator's ``ai-analytics`` command (status, lanes, history, demo,
config check).

It reads what the daemon leaves behind (state file, history database, shared memory, the
namespace lock) through ``ai_analytics.core`` and never imports the daemon, so a command
starts in a fraction of a second and loads none of numpy, psutil, pynvml or
prometheus_client. See docs/architecture.md.
"""
