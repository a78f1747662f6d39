"""The client's public surface: how ``emit`` checks its arguments (on the write path and on
the drop path alike), and ``AIOperationType``.

Lanes are per thread and cached for the thread's life, so every test that emits does so on a
thread of its own (the ``on_thread`` fixture): its lane is created fresh, in this test's
namespace, and is removed with the namespace afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pytest

from ai_analytics import client
from ai_analytics.client import AIOperationType
from ai_analytics.client import _layout as L

from helpers import LaneView, lane_names, read_lane

CAPACITY = 8192  # a lane's capacity when no daemon publishes another one

RunOnThread = Callable[..., Any]


def the_lane(namespace: str) -> LaneView:
    """The one lane of ``namespace``, read straight from /dev/shm."""
    names = lane_names(namespace)
    assert len(names) == 1, names
    return read_lane(names[0])


class Bad(NamedTuple):
    """A call to emit with one bad argument, and the error that must name it."""

    kwargs: dict[str, object]
    error: type[Exception]
    argument: str


def bad(error: type[Exception], argument: str, value: object, *marks: pytest.MarkDecorator) -> Any:
    return pytest.param(
        Bad({argument: value}, error, argument), marks=marks, id=f"{argument}={value!r}"[:40]
    )


BAD_CALLS = [
    bad(TypeError, "latency_ms", "x"),
    bad(TypeError, "latency_ms", None),
    bad(TypeError, "quality", "a"),
    bad(TypeError, "success", None),
    bad(TypeError, "success", 1.5),
    bad(TypeError, "cache_hit", "y"),
    bad(TypeError, "ttft_ms", "z"),
    bad(TypeError, "queue_ms", b"1"),
    bad(TypeError, "tokens_in", 1.5),
    bad(TypeError, "cache_hit", 1.5),
    bad(TypeError, "tokens_out", "9"),
    bad(TypeError, "model", 5),
    bad(TypeError, "model", ["list"]),
    bad(TypeError, "model", None),
    bad(TypeError, "operation", None),
    bad(TypeError, "operation", 3),
    bad(ValueError, "operation", ""),
    bad(ValueError, "operation", "two\nlines"),
    bad(ValueError, "operation", "x" * 200),
    bad(ValueError, "model", "é" * 64),  # 128 bytes in UTF-8, one over the limit
    bad(ValueError, "tokens_in", -1),
    bad(ValueError, "tokens_out", 2**32),
    bad(ValueError, "tokens_out", L.TOKENS_ABSENT),  # the "absent" marker, not a count
    bad(ValueError, "tokens_in", L.TOKENS_ABSENT),
]


def call_with(case: Bad) -> Callable[[], bool]:
    """emit("op", 1.0) with the case's one bad argument (operation/latency_ms positionally)."""
    kwargs = {"operation": "op", "latency_ms": 1.0, **case.kwargs}
    operation, latency_ms = kwargs.pop("operation"), kwargs.pop("latency_ms")
    return lambda: client.emit(operation, latency_ms, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_argument_raises_naming_it(case: Bad, on_thread: RunOnThread, namespace: str) -> None:
    """A wrong type raises TypeError and an unusable value ValueError; the message starts
    with the argument's name, and the failed call leaves no record behind."""
    assert on_thread(client.emit, "op", 1.0) is True
    with pytest.raises(case.error, match=rf"^{case.argument}\b"):
        on_thread(call_with(case))
    assert on_thread(client.emit, "op", 2.0) is True
    lane = the_lane(namespace)
    assert lane.head == 2  # the bad call claimed no slot
    assert lane.dropped == 0


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_argument_raises_the_same_on_a_full_lane(
    case: Bad, on_thread: RunOnThread, namespace: str
) -> None:
    """With no daemon draining, a lane takes exactly its capacity (8192) and then drops; on
    that drop path the same bad arguments still raise the same errors (a dropped event is no
    excuse to skip the checks), while valid calls return False and are counted as dropped."""

    def fill() -> int:
        return sum(client.emit("op", 1.0) for _ in range(CAPACITY))

    assert on_thread(fill) == CAPACITY
    assert on_thread(client.emit, "op", 1.0) is False
    with pytest.raises(case.error, match=rf"^{case.argument}\b"):
        on_thread(call_with(case))
    assert on_thread(client.emit, "op", 2.0, "model-b", 0.5, False, True) is False
    lane = the_lane(namespace)
    assert (lane.capacity, lane.head, lane.dropped) == (CAPACITY, CAPACITY, 2)


def test_emit_signatures_return_true(on_thread: RunOnThread, namespace: str) -> None:
    """emit takes its arguments positionally or by keyword, the LLM extras by keyword only,
    and an AIOperationType member as the operation; each call returns True and is written."""
    calls = [
        lambda: client.emit("text_generation", 41.7),
        lambda: client.emit("text_generation", 41.7, "llama-3-8b", 0.93, True, False),
        lambda: client.emit(
            operation="embedding", latency_ms=3, model="e5", quality=None, success=False,
            cache_hit=None,
        ),
        lambda: client.emit(
            "chat_completion", 120.0, model="llama-3-8b", ttft_ms=35.5, queue_ms=2.0,
            tokens_in=512, tokens_out=128,
        ),
        lambda: client.emit("chat_completion", 80.0, tokens_out=0),
        lambda: client.emit(AIOperationType.STYLE_TRANSFER, 250.0, model="sd-xl"),
    ]  # fmt: skip
    for call in calls:
        assert on_thread(call) is True
    with pytest.raises(TypeError):
        on_thread(lambda: client.emit("op", 1.0, "m", None, True, None, 5.0))  # type: ignore[misc]
    lane = the_lane(namespace)
    assert lane.head == len(calls)
    assert lane.names == [
        "text_generation", "llama-3-8b", "embedding", "e5", "chat_completion", "style_transfer",
        "sd-xl",
    ]  # fmt: skip


def test_operation_type_member_and_its_value_are_one_name(
    on_thread: RunOnThread, namespace: str
) -> None:
    """An AIOperationType member and its plain string value are the same operation: one
    entry in the lane's name table."""
    assert on_thread(client.emit, AIOperationType.STYLE_TRANSFER, 1.0) is True
    assert on_thread(client.emit, "style_transfer", 2.0) is True
    assert on_thread(client.emit, AIOperationType.STYLE_TRANSFER, 3.0) is True
    lane = the_lane(namespace)
    assert lane.head == 3
    assert lane.names == ["style_transfer"]


def test_style_transfer_member() -> None:
    """AIOperationType.STYLE_TRANSFER exists, its value is "style_transfer", and members are
    usable wherever a str is (equality, formatting, dict keys, str methods)."""
    member = AIOperationType.STYLE_TRANSFER
    assert member.value == "style_transfer"
    assert AIOperationType("style_transfer") is member
    assert isinstance(member, str)
    assert member == "style_transfer"
    assert str(member) == "style_transfer"
    assert f"{member}" == "style_transfer"
    assert {"style_transfer": 1}[member] == 1
    assert member.upper() == "STYLE_TRANSFER"
    assert all(isinstance(m, str) and m.value == str(m) for m in AIOperationType)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"name": ""}, ValueError, "name"),
        ({"name": 5}, TypeError, "name"),
        ({"name": "c", "size": "big"}, TypeError, "size"),
        ({"name": "c", "evictions": 1.5}, TypeError, "evictions"),
        ({"name": "c", "evictions": -1}, ValueError, "evictions"),
    ],
)
def test_cache_state_checks_its_arguments(kwargs: dict, error: type[Exception], argument: str,
                                          on_thread: RunOnThread, namespace: str) -> None:
    """cache_state fails at the call for a bad argument, naming it, and claims no slot."""
    assert on_thread(client.cache_state, "c", size=10) is True
    with pytest.raises(error, match=rf"^{argument}\b"):
        on_thread(lambda: client.cache_state(**kwargs))
    assert on_thread(client.cache_state, "c", evictions=2) is True
    assert the_lane(namespace).head == 2


def test_cache_state_on_a_full_lane_is_dropped_and_counted(on_thread: RunOnThread,
                                                          namespace: str) -> None:
    """Like emit, cache_state never blocks: on a full lane it returns False and counts."""

    def fill_then_report() -> bool:
        for _ in range(CAPACITY):
            client.emit("op", 1.0)
        return client.cache_state("c", size=1.0)

    assert on_thread(fill_then_report) is False
    assert the_lane(namespace).dropped == 1
