"""In-process tests: no daemon subprocess, no other process, no Linux namespaces; fast.

A package so that a topic can have a file of the same name here and in tests/e2e."""
