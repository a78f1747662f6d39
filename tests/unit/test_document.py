"""The snapshot document's type (core/document.py) against docs/snapshot.md and against the
documents a real daemon builds; and the tolerant readers that every view uses."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from ai_analytics.core import document as D
from ai_analytics.core.config import Config
from ai_analytics.core.outcomes import OUTCOMES
from ai_analytics.core.state import read_state

import documents
from helpers import REPO

DOC = REPO / "docs" / "snapshot.md"
IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


# -- the names the type declares ---------------------------------------------------------------

def _walk(typ: Any, fields: set[str], literals: set[str], seen: set[Any]) -> None:
    """Every key of every TypedDict reachable from ``typ``, and every Literal value."""
    if typing.is_typeddict(typ):
        if typ not in seen:
            seen.add(typ)
            for key, hint in typing.get_type_hints(typ).items():
                fields.add(key)
                _walk(hint, fields, literals, seen)
    elif typing.get_origin(typ) is typing.Literal:
        literals.update(str(value) for value in typing.get_args(typ))
    else:
        for argument in typing.get_args(typ):
            _walk(argument, fields, literals, seen)


def type_names() -> tuple[set[str], set[str]]:
    fields: set[str] = set()
    literals: set[str] = set()
    _walk(D.SnapshotDocument, fields, literals, set())
    return fields, literals


# -- the names the documentation uses ----------------------------------------------------------

def state_json_part(text: str) -> str:
    """The "## state.json" section of docs/snapshot.md, up to the next "## " heading."""
    start = text.index("\n## state.json\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def documented_names(part: str) -> set[str]:
    """The field names of the doc: each `name` in backticks that is a bare identifier, and
    each "name": key in a ```json example. Dotted names (`client.emit`), expressions and
    quoted strings (`"other"`, a value) are not field names."""
    names = {span for span in re.findall(r"`([^`\n]+)`", part) if IDENTIFIER.fullmatch(span)}
    for block in re.findall(r"```json\n(.*?)```", part, re.DOTALL):
        names.update(re.findall(r'"([a-z_][a-z0-9_]*)"\s*:', block))
    return names


def top_level_keys(part: str) -> set[str]:
    """The keys in the first cell of each row of the "Top level" table."""
    table = part[part.index("Top level:"):].split("\n\n")[1]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    return {key for row in rows for key in re.findall(r"`([^`]+)`", row.split("|")[1])}


def not_fields() -> set[str]:
    """Words the doc may put in backticks that are no field: the values of Literal types
    (lane states, severities, windows), the config settings, and JSON's literals."""
    _, literals = type_names()
    return literals | {f.name for f in dataclasses.fields(Config)} | {"null", "true", "false"}


def test_every_documented_field_is_in_the_type_and_every_field_is_documented() -> None:
    """Each field name of SnapshotDocument (at any depth) appears in the state.json part of
    docs/snapshot.md, and each name the doc shows as a field is one of them."""
    fields, _ = type_names()
    documented = documented_names(state_json_part(DOC.read_text(encoding="utf-8")))
    assert sorted(fields - documented) == [], "in the type, not documented"
    assert sorted(documented - fields - not_fields()) == [], "documented, not in the type"


def test_the_top_level_table_lists_exactly_the_top_level_keys() -> None:
    part = state_json_part(DOC.read_text(encoding="utf-8"))
    assert top_level_keys(part) == set(typing.get_type_hints(D.SnapshotDocument))


def test_event_counts_are_the_outcomes_in_their_order() -> None:
    """EventCounts (events, events_by_uid, each lane's counters) names every outcome of
    core/outcomes.py, in the order the state file keeps them."""
    assert tuple(typing.get_type_hints(D.EventCounts)) == OUTCOMES


def test_the_doc_parsers_find_what_they_look_for() -> None:
    """The parsers read fields from backticks and JSON keys, and skip values and code."""
    part = ("\n## state.json\n\nTop level:\n\n| key | what |\n|---|---|\n"
            "| `a`, `b` (x) | `c` |\n| `d` | y |\n\nProse: `e`, `f.g`, `\"h\"`, `i: true`,\n"
            "```json\n{\"j\": 1, \"k\": \"l\"}\n```\n\n## next\n`m`\n")
    parsed = state_json_part("intro\n" + part)
    assert documented_names(parsed) == {"a", "b", "c", "d", "e", "j", "k"}
    assert top_level_keys(parsed) == {"a", "b", "d"}


# -- a value against the type ----------------------------------------------------------------

def shape_problems(value: object, typ: Any, path: str = "document") -> list[str]:
    """Where ``value`` differs from ``typ``: missing or unknown keys, wrong types."""
    if typ is Any or typ is object:
        return []
    if typing.is_typeddict(typ):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, not an object"]
        hints = typing.get_type_hints(typ)
        problems = [f"{path}.{key}: missing"
                    for key in sorted(typ.__required_keys__ - value.keys())]
        problems += [f"{path}.{key}: not in {typ.__name__}"
                     for key in sorted(value.keys() - hints.keys())]
        for key in sorted(value.keys() & hints.keys()):
            problems += shape_problems(value[key], hints[key], f"{path}.{key}")
        return problems
    origin, arguments = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        tries = [shape_problems(value, arm, path) for arm in arguments]
        return [] if any(not found for found in tries) else min(tries, key=len)
    if origin is typing.Literal:
        return [] if value in arguments else [f"{path}: {value!r} not one of {arguments}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, not a list"]
        return [p for i, item in enumerate(value)
                for p in shape_problems(item, arguments[0], f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__}, not an object"]
        return [p for key, item in value.items()
                for p in shape_problems(key, arguments[0], f"{path} key")
                + shape_problems(item, arguments[1], f"{path}[{key!r}]")]
    if typ is type(None):
        return [] if value is None else [f"{path}: {value!r}, not null"]
    if typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, typ)
    return [] if ok else [f"{path}: {value!r}, not {typ.__name__}"]


def test_shape_problems_finds_missing_unknown_and_mistyped_fields() -> None:
    lane_bytes = {"path": "/dev/shm", "size_bytes": None, "free_bytes": 1, "lane_bytes": 2,
                  "lanes_that_fit": None, "peak_lanes": 3}
    assert shape_problems(lane_bytes, D.SegmentDirSection) == []
    broken = {**lane_bytes, "peak_lanes": 3.5, "extra": 1}
    del broken["path"]
    assert shape_problems(broken, D.SegmentDirSection) == [
        "document.path: missing", "document.extra: not in SegmentDirSection",
        "document.peak_lanes: 3.5, not int"]
    assert shape_problems({"pid": 1}, D.ProcessSample) == []  # the others may be absent
    assert shape_problems(True, int) != [] and shape_problems(1, float) == []
    assert shape_problems("later", D.LaneState) != []
    assert shape_problems({"1h": 1.0}, dict[D.RateWindow, float]) != []


# -- the documents tests build ---------------------------------------------------------------

def test_the_test_factory_builds_documents_of_the_type() -> None:
    """tests/documents.py: the default document, and one with findings, recommendations, a
    cache, a model's processes and a GPU that reports nothing, have the type's shape."""
    document = documents.snapshot(
        caches=[documents.cache("kv", size=64.0, evictions_total=3)],
        models=[documents.model(processes=[{"pid": 1, "rss_bytes": 5, "gpu_memory_mb": None}])],
        findings=[documents.finding("drain_lag", "namespace", "svc", severity="critical")],
        recommendations=[documents.recommendation("batch_size", "namespace", "svc",
                                                  config_key="batch_size", suggested_value=2)])
    document["resources"]["gpu"] = documents.gpu(None)
    assert shape_problems(documents.snapshot(), D.SnapshotDocument) == []
    assert shape_problems(document, D.SnapshotDocument) == []
    json.dumps(document)


# -- the documents a real daemon builds ------------------------------------------------------

@pytest.fixture
def daemon(make_daemon: Any) -> Any:
    """A Daemon in this process, with the default settings."""
    return make_daemon()


def test_a_real_document_has_exactly_the_typed_keys(daemon: Any, state_dir: Path) -> None:
    """After a workload that fills every kind of section (a series with TTFT, queue time,
    tokens, cache lookups and failures that open findings; a cache; a lane), the document
    the daemon publishes, and the state file it writes, have the keys and value types of
    SnapshotDocument, findings and recommendations included."""
    from ai_analytics import client

    def work() -> None:
        for i in range(30):
            client.emit("generate", 6000.0, model="big", success=i % 3 != 0, quality=0.5,
                        cache_hit=i % 2 == 0, ttft_ms=20.0, queue_ms=5.0, tokens_in=10,
                        tokens_out=20)
        client.cache_state("kv", size=64, evictions=2)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    daemon.resources.sample_system()
    daemon.resources.set_worker_pids([os.getpid()])
    daemon.resources.sample_processes()
    daemon.lanes.scan()
    daemon.drain()
    assert daemon.save(running=True)
    published = daemon.last_document
    assert published["operations"] and published["caches"] and published["lanes"]
    assert published["findings"] and published["recommendations"]
    assert published["resources"]["processes"] and published["models"][0]["processes"]
    assert shape_problems(published, D.SnapshotDocument) == []
    stored = read_state(str(state_dir))
    assert shape_problems(stored, D.SnapshotDocument) == []
    assert json.loads(json.dumps(published)) == stored


# -- reading a damaged document ----------------------------------------------------------------

def test_lookup_walks_mappings_and_gives_none_where_a_level_is_missing() -> None:
    document = {"daemon": {"settings": {"window": "1m"}}, "lanes": []}
    assert D.lookup(document, "daemon", "settings", "window") == "1m"
    assert D.lookup(document, "daemon", "missing", "window") is None
    assert D.lookup(document, "lanes", "0") is None  # a list is no mapping
    assert D.lookup("garbage", "daemon") is None
    assert D.lookup(document) is document


def test_mapping_sequence_mappings_and_number_replace_odd_values() -> None:
    assert D.mapping({"a": 1}) == {"a": 1}
    assert D.mapping([("a", 1)]) == {} and D.mapping(None) == {}
    assert D.sequence([1, None]) == [1, None]
    assert D.sequence("abc") == [] and D.sequence({"a": 1}) == []
    assert D.mappings([{"a": 1}, 2, None, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    assert D.mappings({"a": 1}) == []
    assert [D.number(v) for v in (3, 2.5, True, "4", None, math.nan)] == [
        3.0, 2.5, None, None, None, None]
