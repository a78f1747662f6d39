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


def drained(make_daemon: Callable[..., Any]) -> Callable[[], dict[tuple[str, str], Any]]:
    daemon = make_daemon()

    def series() -> dict[tuple[str, str], Any]:
        daemon.lanes.scan()
        daemon.drain()
        document = daemon.get_performance_snapshot()
        return {(row["operation"], row["model"]): row["windows"]["since_start"]
                for row in document["operations"]}

    return series


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


def test_an_event_is_entered_once_and_generators_are_refused(make_daemon, on_thread):
    series = drained(make_daemon)
    with pytest.raises(TypeError, match="generators"):
        @client.timed("op")
        def tokens():
            yield 1

    def twice() -> None:
        event = client.timed("once")
        assert isinstance(event, Event)
        with event, pytest.raises(RuntimeError, match="already entered"), event:
            pass

    on_thread(twice)
    assert series()[("once", "")]["count"] == 1
