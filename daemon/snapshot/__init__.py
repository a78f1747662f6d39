"""The snapshot document: built from the running daemon's parts, once per snapshot interval,
and served, saved and turned into history rows from there."""
