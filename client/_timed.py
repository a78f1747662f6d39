"""``client.timed``: measure a block or a call and record it as one event, at its end.

    with client.timed("embedding", model="bge-small") as event:
        vectors = model.encode(texts)
        event.cache_hit = False

    @client.timed("text_generation", model="llama-3-8b")
    async def generate(prompt): ...

The latency is the monotonic time from entry to exit. The handle (``event``) lets the body set
the fields ``emit`` takes and mark the first token; ``current_event()`` finds the innermost
event in progress from anywhere in the same task or thread. Exactly one ``emit`` per event, at
its end: nothing else touches shared memory.

How an event ends:
- normally: recorded as it stands (``success`` True unless the body set it False);
- an exception escapes: recorded with ``success`` False, and the exception goes on unchanged;
- ``GeneratorExit`` (a stream closed by its consumer): recorded as it stands;
- ``asyncio.CancelledError``, ``KeyboardInterrupt``, ``SystemExit`` and any other exception
  that is not an ``Exception``: not recorded. The caller gave up or the process is stopping,
  so there is no outcome of the model's to count, and a failure would blame the model.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
)
from types import TracebackType
from typing import Any, TypeVar

from . import _emit as _emit_module
from . import _layout as L
from ._emit import _check_name, emit
from ._operations import AIOperationType

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_current: contextvars.ContextVar[Event | None] = contextvars.ContextVar(
    "ai_analytics_event", default=None)
_now = time.monotonic_ns
_set_current = _current.set
_reset_current = _current.reset


def current_event() -> Event | None:
    """The innermost ``timed`` event in progress in this task or thread, or None."""
    return _current.get()


def _number(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    return value


def _count(name: str, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if not 0 <= value < L.TOKENS_ABSENT:
        raise ValueError(f"{name} out of 0..{L.TOKENS_ABSENT - 1}: {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


def _flag_or_none(name: str, value: object) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None, got {type(value).__name__}")
    return value


def _name_check(table: str) -> Callable[[str, object], object]:
    """The check of a name: one this thread's lane holds in ``table`` (``ops`` or
    ``models``) was checked when first used; another is checked as emit would."""
    def check(name: str, value: object) -> object:
        try:
            getattr(_emit_module._local.lane, table)[value]
        except (AttributeError, KeyError, TypeError):
            _check_name(value, name)
        return value

    return check


class _Field:
    """A field of the event, checked as it is set, kept in the slot of its name with a
    leading underscore (which ``finish`` reads directly)."""

    def __init__(self, check: Callable[[str, Any], object]) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.slot = owner.__dict__[f"_{name}"]  # the slot's own descriptor

    def __get__(self, event: object, owner: type | None = None) -> Any:
        return self if event is None else self.slot.__get__(event, owner)

    def __set__(self, event: object, value: object) -> None:
        self.slot.__set__(event, self.check(self.name, value))


class Event:
    """One event in progress: what the body knows is set on it, and it is recorded at exit.

    Use it once, in one ``with`` (a fresh one comes from each ``timed`` call); as a decorator,
    each call of the function gets an event of its own.
    """

    # Slots: an event is made and dropped on every call, and slot stores are about half
    # the cost of a fresh instance dictionary's.
    __slots__ = ("_cache_hit", "_finished", "_model", "_operation", "_quality", "_queue_ms",
                 "_reset", "_started", "_success", "_tokens_in", "_tokens_out", "_ttft_ms")
    _reset: contextvars.Token[Event | None]  # set by start()

    def __init__(
        self, operation: str | AIOperationType, model: str = "", *,
        quality: float | None = None, success: bool = True, cache_hit: bool | None = None,
        tokens_in: int | None = None, tokens_out: int | None = None,
        queue_ms: float | None = None,
    ) -> None:
        try:  # names this thread's lane already holds were checked when first used
            lane = _emit_module._local.lane
            if operation not in lane.ops:
                _check_name(operation, "operation")
            if model not in lane.models:
                _check_name(model, "model")
        except (AttributeError, TypeError):  # no lane yet, or a name that is not hashable
            _check_name(operation, "operation")
            _check_name(model, "model")
        self._operation = operation
        self._model = model
        # A float quality (the usual case) needs no further check.
        self._quality = quality if quality is None or type(quality) is float else _number(
            "quality", quality)
        self._success = success if success is True else _flag("success", success)
        self._cache_hit = cache_hit if cache_hit is None else _flag_or_none(
            "cache_hit", cache_hit)
        self._tokens_in = tokens_in if tokens_in is None else _count("tokens_in", tokens_in)
        self._tokens_out = tokens_out if tokens_out is None else _count("tokens_out", tokens_out)
        self._queue_ms = queue_ms if queue_ms is None else _number("queue_ms", queue_ms)
        self._ttft_ms: float | None = None
        self._started = 0
        self._finished = False

    # -- the fields, checked as they are set (a wrong type raises there, as emit would) ----
    # ``operation``: a server's middleware names the event once the route is known.
    operation = _Field(_name_check("ops"))
    model = _Field(_name_check("models"))
    quality = _Field(_number)
    success = _Field(_flag)
    cache_hit = _Field(_flag_or_none)
    tokens_in = _Field(_count)
    tokens_out = _Field(_count)
    queue_ms = _Field(_number)

    @property
    def ttft_ms(self) -> float | None:
        """Milliseconds from the start to ``first_token()``; None before it."""
        return self._ttft_ms

    def first_token(self, at_ns: int | None = None) -> None:
        """The first token (or chunk) is out: sets ``ttft_ms``, once. ``at_ns``: the
        ``time.monotonic_ns()`` it went out at, for a caller that knows only later that it
        was a first token (a middleware, once a second chunk follows); now by default."""
        if self._ttft_ms is None and self._started:
            self._ttft_ms = ((_now() if at_ns is None else at_ns) - self._started) / 1e6

    def stream(self, tokens: Iterable[T]) -> Iterator[T]:
        """Pass ``tokens`` through, counting each into ``tokens_out`` and marking the first."""
        for token in tokens:
            self.first_token()
            self._tokens_out = (self._tokens_out or 0) + 1
            yield token

    async def astream(self, tokens: AsyncIterable[T]) -> AsyncIterator[T]:
        """``stream`` for an async iterator of tokens."""
        async for token in tokens:
            self.first_token()
            self._tokens_out = (self._tokens_out or 0) + 1
            yield token

    # -- its life: started, then finished once ----------------------------------------------
    def start(self) -> Event:
        """Start the clock and make this the current event (``with`` does this)."""
        if self._started:
            raise RuntimeError("this timed event was already started; each timed() call "
                               "gives one event (as a decorator, one per call)")
        self._reset = _set_current(self)
        self._started = _now()
        return self

    def finish(self, error: BaseException | None = None) -> None:
        """Record the event now, as ``error`` (None: as it stands) says it ended; later calls
        do nothing. ``with`` calls it at exit; a server's middleware calls it at the last
        byte of the answer, and leaves the ``with`` later."""
        if self._finished or not self._started:
            return
        latency_ms = (_now() - self._started) / 1e6
        self._finished = True
        if error is None or isinstance(error, GeneratorExit):
            success = self._success
        elif isinstance(error, Exception):
            success = False
        else:
            return  # cancelled or stopping: no outcome of the model's to record
        if (self._ttft_ms is None and self._queue_ms is None and self._tokens_in is None
                and self._tokens_out is None):
            emit(self._operation, latency_ms, self._model, self._quality, success,
                 self._cache_hit)
        else:
            emit(self._operation, latency_ms, self._model, self._quality, success,
                 self._cache_hit, ttft_ms=self._ttft_ms, queue_ms=self._queue_ms,
                 tokens_in=self._tokens_in, tokens_out=self._tokens_out)

    # -- as a context manager --------------------------------------------------------------
    __enter__ = start

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _reset_current(self._reset)
        self.finish(exc)

    async def __aenter__(self) -> Event:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- as a decorator --------------------------------------------------------------------
    def _fresh(self) -> Event:
        """A new event with this one's names and fields, never started (the decorator's
        spec is never started itself)."""
        return Event(self._operation, self._model, quality=self._quality,
                     success=self._success, cache_hit=self._cache_hit,
                     tokens_in=self._tokens_in, tokens_out=self._tokens_out,
                     queue_ms=self._queue_ms)

    def __call__(self, function: F) -> F:
        """Time every call of ``function``: a plain function or an ``async def`` from call
        to return; a generator or an async generator from its first step until it is
        exhausted or closed (its ``tokens_out`` is not counted: the items need not be
        tokens; wrap a token stream in ``event.stream()`` for that)."""
        if inspect.isgeneratorfunction(function):
            return _timed_generator(self, function)  # type: ignore[return-value]
        if inspect.isasyncgenfunction(function):
            return _timed_async_generator(self, function)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(function):
            @functools.wraps(function)
            async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await function(*args, **kwargs)

            return timed_coroutine  # type: ignore[return-value]

        @functools.wraps(function)
        def timed_function(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return function(*args, **kwargs)

        return timed_function  # type: ignore[return-value]


# A decorated generator is driven step by step, and its event is the current one only while
# one of its steps runs: between steps the consumer's code runs, and must see its own event.


def _timed_generator(spec: Event, function: Callable[..., Generator[Any, Any, Any]]
                     ) -> Callable[..., Generator[Any, Any, Any]]:
    @functools.wraps(function)
    def timed_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        inner = function(*args, **kwargs)
        event = spec._fresh()
        event._started = _now()
        step: Callable[[Any], Any] = inner.send
        given: Any = None
        while True:
            reset = _set_current(event)
            try:
                item = step(given)
            except StopIteration as stop:
                event.finish()
                return stop.value
            except BaseException as error:
                event.finish(error)
                raise
            finally:
                _reset_current(reset)
            try:
                given = yield item
                step = inner.send
            except GeneratorExit as closing:
                reset = _set_current(event)
                try:
                    inner.close()
                except BaseException as error:
                    event.finish(error)
                    raise
                finally:
                    _reset_current(reset)
                event.finish(closing)
                raise
            except BaseException as thrown:  # thrown in by the consumer: the inner one's
                step, given = inner.throw, thrown

    return timed_generator


def _timed_async_generator(spec: Event, function: Callable[..., AsyncGenerator[Any, Any]]
                           ) -> Callable[..., AsyncGenerator[Any, Any]]:
    @functools.wraps(function)
    async def timed_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        inner = function(*args, **kwargs)
        event = spec._fresh()
        event._started = _now()
        step: Callable[[Any], Awaitable[Any]] = inner.asend
        given: Any = None
        while True:
            reset = _set_current(event)
            try:
                item = await step(given)
            except StopAsyncIteration:
                event.finish()
                return
            except BaseException as error:
                event.finish(error)
                raise
            finally:
                _reset_current(reset)
            try:
                given = yield item
                step = inner.asend
            except GeneratorExit as closing:
                reset = _set_current(event)
                try:
                    await inner.aclose()
                except BaseException as error:
                    event.finish(error)
                    raise
                finally:
                    _reset_current(reset)
                event.finish(closing)
                raise
            except BaseException as thrown:
                step, given = inner.athrow, thrown

    return timed_async_generator


# ``timed(operation, model="", *, quality=None, success=True, cache_hit=None, tokens_in=None,
# tokens_out=None, queue_ms=None)`` is the class itself: one call less on each block. It
# measures a block (``with``) or every call of a function (as a decorator) and records one
# event at its end; the keywords start the event's fields, and a wrong type raises there, as
# emit does.
timed = Event


__all__ = ["Event", "current_event", "timed"]
