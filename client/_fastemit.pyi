from collections.abc import Callable
from typing import Any

def emit(*args: Any, **kwargs: Any) -> bool: ...
def cache_state(*args: Any, **kwargs: Any) -> bool: ...
def load_acquire_u64(buffer: object, byte_offset: int, /) -> int: ...
def configure(
    emit: Callable[..., bool],
    cache_state: Callable[..., bool],
    emit_globals: dict[str, Any],
    lane_type: type,
    record_size: int,
    off_head: int,
    /,
) -> None: ...
