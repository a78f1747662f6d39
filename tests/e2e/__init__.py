"""End-to-end tests: real processes (daemons, producers, the installed scripts, external
tools, Prometheus), Linux namespaces, signals, HTTP against a real daemon.

A package so that a topic can have a file of the same name here and in tests/unit."""
