"""client.timed against a real lane and a Daemon in this process: what each way of ending an
event records (or does not), the fields set through the handle, the first token and token
streams, the innermost event from anywhere in its task, and misuse raising at the call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from ai_analytics import client
from ai_analytics.client._timed import Event

from helpers import drained


def test_a_block_records_one_event_with_its_latency_and_fields(make_daemon, on_thread):
    series = drained(make_daemon)

    def body() -> None:
        with client.timed("embedding", model="bge", cache_hit=True) as event:
            assert client.current_event() is event
            time.sleep(0.02)  # the latency being measured
            event.quality = 0.5
            event.tokens_in = 12
        assert client.current_event() is None

    on_thread(body)
    stats = series()[("embedding", "bge")]
    assert stats["count"] == 1 and stats["errors"] == 0
    assert stats["latency_ms"]["min"] >= 20.0
    assert stats["quality"]["mean"] == pytest.approx(0.5)
    assert stats["cache"]["hits"] == 1
    assert stats["tokens"]["in_total"] == 12


def test_an_escaping_exception_fails_the_event_and_goes_on_unchanged(make_daemon, on_thread):
    series = drained(make_daemon)
    boom = ValueError("boom")

    def body() -> None:
        with client.timed("classify"):
            raise boom

    with pytest.raises(ValueError) as caught:
        on_thread(body)
    assert caught.value is boom
    stats = series()[("classify", "")]
    assert (stats["count"], stats["errors"]) == (1, 1)


def test_stopping_and_cancellation_record_nothing(make_daemon, on_thread):
    series = drained(make_daemon)

    def interrupted() -> None:
        with client.timed("stopped"):
            raise KeyboardInterrupt

    async def cancelled() -> None:
        @client.timed("cancelled")
        async def slow() -> None:
            await asyncio.sleep(60)

        task = asyncio.ensure_future(slow())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with pytest.raises(KeyboardInterrupt):
        on_thread(interrupted)
    on_thread(asyncio.run, cancelled())
    on_thread(client.emit, "marker", 1.0)  # something is drained, so the lane is read
    assert set(series()) == {("marker", "")}


def test_decorated_functions_and_coroutines_time_each_call(make_daemon, on_thread):
    series = drained(make_daemon)

    @client.timed("sync_call", model="m")
    def add(a: int, b: int) -> int:
        client.current_event().tokens_out = a + b
        return a + b

    @client.timed("async_call", model="m")
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        client.current_event().success = x >= 0
        return 2 * x

    assert add.__name__ == "add" and double.__name__ == "double"
    assert on_thread(lambda: [add(1, 2), add(3, 4)]) == [3, 7]
    assert on_thread(lambda: asyncio.run(_gather(double))) == [2, -2]
    found = series()
    assert found[("sync_call", "m")]["count"] == 2
    assert found[("sync_call", "m")]["tokens"]["out_total"] == 10
    assert (found[("async_call", "m")]["count"], found[("async_call", "m")]["errors"]) == (2, 1)


async def _gather(double: Callable[[int], Any]) -> list[int]:
    # Two calls at once in two tasks: each sees its own event as the current one.
    return list(await asyncio.gather(double(1), double(-1)))


def test_a_token_stream_counts_tokens_and_marks_the_first(make_daemon, on_thread):
    series = drained(make_daemon)

    async def agen():
        for token in ("a", "b"):
            await asyncio.sleep(0.01)
            yield token

    def body() -> list[str]:
        with client.timed("generate", model="llm") as event:
            time.sleep(0.01)
            out = list(event.stream(iter(["x", "y", "z"])))
        async def run() -> list[str]:
            async with client.timed("generate", model="llm") as event:
                return [token async for token in event.astream(agen())]
        return out + asyncio.run(run())

    assert on_thread(body) == ["x", "y", "z", "a", "b"]
    stats = series()[("generate", "llm")]
    assert stats["count"] == 2
    assert stats["tokens"]["out_total"] == 5
    assert stats["ttft_ms"]["count"] == 2
    assert stats["ttft_ms"]["min"] >= 10.0  # after the sleep before the first token


def test_a_stream_closed_early_is_recorded_as_a_success(make_daemon, on_thread):
    series = drained(make_daemon)

    def body() -> None:
        def tokens():
            with client.timed("generate", model="early") as event:
                yield from event.stream(iter(range(100)))

        stream = tokens()
        next(stream)
        stream.close()  # the consumer stops: GeneratorExit inside the block

    on_thread(body)
    stats = series()[("generate", "early")]
    assert (stats["count"], stats["errors"], stats["tokens"]["out_total"]) == (1, 0, 1)


@pytest.mark.parametrize(("call", "error"), [
    (lambda: client.timed(42), TypeError),
    (lambda: client.timed(""), ValueError),
    (lambda: client.timed("op", model=3), TypeError),
    (lambda: client.timed("op", colour="red"), TypeError),
    (lambda: client.timed("op", quality="high"), TypeError),
    (lambda: client.timed("op", tokens_out=-1), ValueError),
    (lambda: setattr(client.timed("op"), "success", 1), TypeError),
    (lambda: setattr(client.timed("op"), "cache_hit", "yes"), TypeError),
])
def test_misuse_raises_at_the_call(call, error):
    with pytest.raises(error):
        call()


def test_an_event_is_started_once(make_daemon, on_thread):
    series = drained(make_daemon)

    def twice() -> None:
        event = client.timed("once")
        assert isinstance(event, Event)
        with event, pytest.raises(RuntimeError, match="already started"), event:
            pass

    on_thread(twice)
    assert series()[("once", "")]["count"] == 1


def test_finish_records_once_and_the_block_then_only_leaves(make_daemon, on_thread):
    """A middleware finishes the event at the answer's last byte; what runs after it in the
    block (a background task) neither adds to its latency nor records again."""
    series = drained(make_daemon)

    def body() -> None:
        with client.timed("served") as event:
            event.operation = "POST /v1/embed"
            event.finish()
            time.sleep(0.05)
            raise KeyError("in a background task, after the answer")

    with pytest.raises(KeyError):
        on_thread(body)
    stats = series()[("POST /v1/embed", "")]
    assert stats["count"] == 1 and stats["errors"] == 0
    assert stats["latency_ms"]["max"] < 50.0
    assert ("served", "") not in series()
    with pytest.raises(ValueError, match="operation must not be empty"):
        client.timed("op").operation = ""


def test_a_decorated_generator_is_timed_until_exhausted_and_current_only_in_its_steps(
        make_daemon, on_thread):
    series = drained(make_daemon)
    inside: list[object] = []

    @client.timed("stream")
    def chunks(n: int):
        for index in range(n):
            inside.append(client.current_event())
            time.sleep(0.01)
            yield index
        return "done"

    def body() -> None:
        stream = chunks(3)
        assert inside == []  # nothing runs before the first step
        with client.timed("consumer") as outer:
            seen = []
            for item in stream:
                assert client.current_event() is outer  # between steps, the consumer's own
                seen.append(item)
        assert seen == [0, 1, 2]
        assert len({id(event) for event in inside}) == 1 and inside[0] is not outer

    on_thread(body)
    stats = series()[("stream", "")]
    assert stats["count"] == 1 and stats["errors"] == 0
    assert stats["latency_ms"]["min"] >= 30.0


def test_a_decorated_generator_closed_early_records_and_one_that_raises_fails(
        make_daemon, on_thread):
    series = drained(make_daemon)

    @client.timed("closed")
    def endless():
        while True:
            yield "token"

    @client.timed("broken")
    def broken():
        yield 1
        raise RuntimeError("model crashed mid-stream")

    @client.timed("never")
    def never():
        yield 1

    def body() -> None:
        stream = endless()
        assert next(stream) == "token"
        stream.close()
        with pytest.raises(RuntimeError, match="mid-stream"):
            list(broken())
        never()  # never stepped: nothing to time

    on_thread(body)
    got = series()
    assert got[("closed", "")]["count"] == 1 and got[("closed", "")]["errors"] == 0
    assert got[("broken", "")]["count"] == 1 and got[("broken", "")]["errors"] == 1
    assert ("never", "") not in got


def test_a_decorated_async_generator_is_timed_and_cancellation_records_nothing(
        make_daemon, on_thread):
    series = drained(make_daemon)

    @client.timed("astream", model="m")
    async def tokens(n: int):
        for index in range(n):
            await asyncio.sleep(0.005)
            client.current_event().first_token()
            yield index

    @client.timed("cancelled")
    async def stuck():
        yield 0
        await asyncio.sleep(60)
        yield 1

    async def main() -> None:
        assert [item async for item in tokens(4)] == [0, 1, 2, 3]
        stream = stuck()

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    on_thread(lambda: asyncio.run(main()))
    got = series()
    stats = got[("astream", "m")]
    assert stats["count"] == 1 and stats["errors"] == 0
    assert stats["ttft_ms"]["max"] < stats["latency_ms"]["max"]
    assert ("cancelled", "") not in got


def test_prepare_makes_the_lane_so_the_first_emit_makes_none(make_daemon, on_thread):
    series = drained(make_daemon)

    def body() -> None:
        from ai_analytics.client import _emit

        assert getattr(_emit._local, "lane", None) is None
        assert client.prepare() is True
        lane = _emit._local.lane
        assert client.prepare() is True and _emit._local.lane is lane
        assert client.emit("after_prepare", 1.0)
        assert _emit._local.lane is lane and lane.names_count == 1  # no name of its own

    on_thread(body)
    assert series()[("after_prepare", "")]["count"] == 1
