"""The optional C extension of the client (client/_fastemit.c): everything else is declared
in pyproject.toml. ``optional=True``: where it cannot be compiled (no compiler, no Python
headers), the install goes on without it and the client uses its pure-Python path."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ai_analytics.client._fastemit",
            sources=["client/_fastemit.c"],
            optional=True,
        )
    ]
)
