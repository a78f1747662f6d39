"""Names of any kind through ``emit``, in this process: a usable name is written, anything
else is refused with one short line naming the argument, and the lane holds exactly what was
accepted. The trust model this checks is docs/security.md.
"""

from __future__ import annotations

import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ai_analytics import client
from ai_analytics.cli.shm_view import read_namespace
from ai_analytics.client import _layout as L


# -- names through emit ----------------------------------------------------------------------
def usable(name: object, may_be_empty: bool) -> bool:
    """The documented rule: printable text of at most 127 bytes of UTF-8."""
    if not isinstance(name, str) or not (name or may_be_empty):
        return False
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return size <= L.MAX_NAME_BYTES and (name == "" or name.isprintable())


any_text = st.text(st.characters(codec=None), max_size=8)  # controls, surrogates, any script
names = st.one_of(
    any_text, st.text(min_size=100, max_size=300), st.sampled_from(["é" * 63, "é" * 64]),
    st.just(b"bytes"), st.integers(),
)


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(names, names), min_size=1, max_size=8))
def test_emit_takes_usable_names_and_refuses_the_rest_cleanly(namespace, calls):
    """Each call either writes (a usable name) or raises TypeError/ValueError naming the
    argument in one short line; the lane holds exactly the accepted events and names."""
    outcomes: list[object] = []
    ident: list[int] = []

    def emit_all() -> None:  # a fresh thread: a fresh lane for this example
        ident.append(threading.get_native_id())
        for operation, model in calls:
            try:
                outcomes.append(client.emit(operation, 1.0, model=model))
            except (TypeError, ValueError) as exc:
                outcomes.append(exc)

    thread = threading.Thread(target=emit_all)
    thread.start()
    thread.join()
    accepted = []
    for (operation, model), outcome in zip(calls, outcomes, strict=True):
        if usable(operation, False) and usable(model, True):
            assert outcome is True
            accepted += [name for name in (operation, model) if name]
        else:
            assert isinstance(outcome, (TypeError, ValueError)), outcome
            message = str(outcome)
            assert message.startswith(("operation ", "model ")), message
            assert "\n" not in message and len(message) < 300, message
    lanes = [lane for lane in read_namespace(namespace).lanes if lane.thread_id == ident[0]]
    if not accepted:
        assert all(lane.head == 0 for lane in lanes)  # perhaps none was even made
        return
    (lane,) = lanes
    assert lane.head == sum(outcome is True for outcome in outcomes)
    assert list(lane.names) == list(dict.fromkeys(accepted))
