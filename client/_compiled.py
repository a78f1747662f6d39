"""Which path ``emit`` and ``cache_state`` take: compiled (``_fastemit``) or pure Python.

The compiled module is an optional C extension built with the package where a compiler is
present. It is not used when it is absent (no compiler at install time), on a free-threaded
interpreter (it is never built there: its correctness argument rests on the GIL), or when
``$AI_ANALYTICS_PURE_PYTHON`` is set to anything but ``0`` or empty (for debugging, and for
running the client's tests on the pure-Python path). docs/ring-format.md says what each path
guarantees.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType

PURE_PYTHON_ENV = "AI_ANALYTICS_PURE_PYTHON"


def _extension() -> tuple[ModuleType | None, str]:
    """The compiled module, or None and why not."""
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None, "free-threaded interpreter"
    try:
        # by name: a "from . import" would read, to the import contracts, as this package's
        # __init__ (which imports the asyncio facade)
        return importlib.import_module(f"{__package__}._fastemit"), ""
    except ImportError as exc:
        return None, f"not built ({exc})"


extension, missing_reason = _extension()


def chosen() -> tuple[ModuleType | None, str]:
    """The module emit should use, or None and why the pure-Python path is used instead."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None, f"${PURE_PYTHON_ENV} is set"
    return extension, missing_reason



# CPUs whose plain stores are not reordered with earlier stores (TSO): there a store through
# a memoryview's "Q" view publishes everything written before it. Elsewhere (ARM64, ...) the
# producer's Python code publishes through the compiled release store when it is built.
STRONGLY_ORDERED = os.uname().machine.lower() in ("x86_64", "amd64", "i386", "i686")
store_release_u64: Callable[[object, int, int], None] | None = (
    None if STRONGLY_ORDERED or extension is None else extension.store_release_u64
)
