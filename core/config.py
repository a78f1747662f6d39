"""config.yaml → a frozen, validated ``Config``.

Each setting is declared once in ``SETTINGS`` with its type, range and default; loading
checks every key against it and raises ``ConfigError`` naming the key and the bad value.
Loading never exits the process; the command-line layer turns the error into exit code 2.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Literal, Protocol, get_args

import yaml

from ai_analytics.client import _layout
from ai_analytics.client._segments import (
    NAMESPACE_ENV,
    NAMESPACE_PATTERN,
    namespace_from_env,
    segment_dir_from_env,
)
from ai_analytics.client._settings import FACADE_SETTINGS
from ai_analytics.core.errors import ConfigError

OnFull = Literal["drop", "overwrite"]
InsightWindow = Literal["10s", "1m", "5m"]
LogLevel = Literal["debug", "info", "warning", "error"]
SnapshotChild = Literal["auto", "always", "never"]
ON_FULL_CHOICES: tuple[str, ...] = get_args(OnFull)
LOG_LEVEL_CHOICES: tuple[str, ...] = get_args(LogLevel)
INSIGHT_WINDOW_CHOICES: tuple[str, ...] = get_args(InsightWindow)
SNAPSHOT_CHILD_CHOICES: tuple[str, ...] = get_args(SnapshotChild)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of the daemon; see config.yaml for what each one means."""

    # How the workers' lanes are shaped and drained.
    max_queue_size: int = _layout.DEFAULT_CAPACITY
    batch_size: int = 65536
    batch_timeout_seconds: float = 1.0
    max_processing_time_seconds: float = 10.0
    snapshot_interval_seconds: float = 5.0
    snapshot_child: SnapshotChild = "auto"
    enable_circuit_breaker: bool = True
    failure_threshold: int = 5
    recovery_timeout_seconds: float = 30.0
    # Where the lanes are, and how the daemon keeps them.
    namespace: str = dataclasses.field(default_factory=namespace_from_env)
    segment_dir: str = dataclasses.field(default_factory=segment_dir_from_env)
    expected_lanes: int = 32
    on_full: OnFull = "drop"
    stop_timeout_seconds: float = 10.0
    state_dir: str = "/var/lib/ai-analytics"
    names_per_lane: int = _layout.DEFAULT_NAMES_CAPACITY
    max_lanes: int = 4096
    max_operations: int = 256
    max_models: int = 256
    max_series: int = 1024
    discovery_interval_seconds: float = 1.0
    trusted_uids: tuple[int, ...] = ()
    log_level: LogLevel = "info"
    resource_interval_seconds: float = 2.0
    process_interval_seconds: float = 5.0
    gpu_process_interval_seconds: float = 10.0
    resource_timeout_seconds: float = 5.0
    history_max_age_seconds: float = 7 * 24 * 3600.0
    history_max_megabytes: float = 256.0
    # Bottleneck rules and recommendations.
    insight_window: InsightWindow = "1m"
    insight_queue_fill: float = 0.8
    insight_event_loss_ratio: float = 0.05
    insight_model_error_rate: float = 0.1
    insight_slow_model_ms: float = 5000.0
    insight_drain_lag_seconds: float = 5.0
    insight_gpu_saturated_percent: float = 95.0
    insight_gpu_idle_percent: float = 10.0
    insight_hysteresis: float = 0.1
    recommend_processing_ms: float = 3000.0
    recommend_cache_hit_rate: float = 0.3
    recommend_error_rate: float = 0.05
    # The HTTP endpoint: /status, /healthz, /metrics, the live page and /api/series.
    http_enabled: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 9466
    http_pages_beyond_loopback: bool = False


@dataclasses.dataclass(frozen=True)
class _Int:
    low: int
    high: int

    def check(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer between {self.low} and {self.high}")
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low} and {self.high}")
        return value


@dataclasses.dataclass(frozen=True)
class _Float:
    low: float
    high: float

    def check(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number of seconds between {self.low} and {self.high}")
        # Not math.isnan first: it raises OverflowError for a huge integer. NaN fails this too.
        if not self.low <= value <= self.high:
            raise ValueError(f"must be between {self.low} and {self.high}")
        return float(value)


@dataclasses.dataclass(frozen=True)
class _Bool:
    def check(self, value: object) -> bool:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


@dataclasses.dataclass(frozen=True)
class _Choice:
    choices: tuple[str, ...]

    def check(self, value: object) -> str:
        if value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}")
        return str(value)


@dataclasses.dataclass(frozen=True)
class _Namespace:
    def check(self, value: object) -> str:
        if not isinstance(value, str) or not NAMESPACE_PATTERN.fullmatch(value):
            raise ValueError("must be 1-64 characters of letters, digits, '_' or '-'")
        return value


@dataclasses.dataclass(frozen=True)
class _Path:
    def check(self, value: object) -> str:
        if not isinstance(value, str) or not value or "\0" in value:
            raise ValueError("must be a non-empty path")
        return value


@dataclasses.dataclass(frozen=True)
class _Fraction:
    def check(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number between 0 and 1")
        if not 0.0 <= value <= 1.0:  # NaN fails this too
            raise ValueError("must be between 0 and 1")
        return float(value)


@dataclasses.dataclass(frozen=True)
class _Host:
    def check(self, value: object) -> str:
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise ValueError("must be a host name or IP address (127.0.0.1 keeps it local)")
        return value


@dataclasses.dataclass(frozen=True)
class _UidList:
    def check(self, value: object) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(
            isinstance(uid, int) and not isinstance(uid, bool) and 0 <= uid < 2**32
            for uid in value
        ):
            raise ValueError("must be a list of numeric user ids")
        return tuple(value)


def _rule(kind: type, low: float, high: float) -> _Int | _Float | _Bool:
    if kind is bool:
        return _Bool()
    return _Int(int(low), int(high)) if kind is int else _Float(low, high)


SETTINGS: dict[str, object] = {
    **{name: _rule(*spec) for name, spec in FACADE_SETTINGS.items()},
    "namespace": _Namespace(),
    "segment_dir": _Path(),
    "expected_lanes": _Int(1, 65536),
    "on_full": _Choice(ON_FULL_CHOICES),
    "snapshot_child": _Choice(SNAPSHOT_CHILD_CHOICES),
    "stop_timeout_seconds": _Float(0.1, 600.0),
    "state_dir": _Path(),
    "names_per_lane": _Int(1, _layout.MAX_NAMES_CAPACITY),
    "max_lanes": _Int(1, 65536),
    "max_operations": _Int(1, 65536),
    "max_models": _Int(1, 65536),
    "max_series": _Int(1, 65536),
    "discovery_interval_seconds": _Float(0.01, 60.0),
    "trusted_uids": _UidList(),
    "log_level": _Choice(LOG_LEVEL_CHOICES),
    "resource_interval_seconds": _Float(0.1, 3600.0),
    "process_interval_seconds": _Float(0.1, 3600.0),
    "gpu_process_interval_seconds": _Float(0.1, 3600.0),
    "resource_timeout_seconds": _Float(0.1, 600.0),
    "history_max_age_seconds": _Float(60.0, 10 * 365 * 86400.0),
    "history_max_megabytes": _Float(1.0, 1_000_000.0),
    "insight_window": _Choice(INSIGHT_WINDOW_CHOICES),
    "insight_queue_fill": _Fraction(),
    "insight_event_loss_ratio": _Fraction(),
    "insight_model_error_rate": _Fraction(),
    "insight_slow_model_ms": _Float(0.001, 3_600_000.0),
    "insight_drain_lag_seconds": _Float(0.01, 3600.0),
    "insight_gpu_saturated_percent": _Float(0.0, 100.0),
    "insight_gpu_idle_percent": _Float(0.0, 100.0),
    "insight_hysteresis": _Float(0.0, 0.9),
    "recommend_processing_ms": _Float(0.001, 3_600_000.0),
    "recommend_cache_hit_rate": _Fraction(),
    "recommend_error_rate": _Fraction(),
    "http_enabled": _Bool(),
    "http_host": _Host(),
    "http_port": _Int(1, 65535),
    "http_pages_beyond_loopback": _Bool(),
}
assert set(SETTINGS) == {f.name for f in dataclasses.fields(Config)}


def setting_range(key: str) -> tuple[float, float]:
    """The lowest and highest value a numeric setting accepts (for advice that suggests one)."""
    rule = SETTINGS[key]
    assert isinstance(rule, (_Int, _Float)), key
    return rule.low, rule.high


class Reconfigurable(Protocol):
    """A part of the daemon that keeps settings of its own: a reload hands each the new
    config the same way, and each keeps its state (counters, open findings, lanes)."""

    def apply_config(self, config: Config) -> None: ...


def config_from_mapping(data: Mapping[str, object], source: str = "") -> Config:
    """Validate ``data`` key by key; raise ConfigError for the first bad one."""
    values: dict[str, object] = {}
    for key, value in data.items():
        rule = SETTINGS.get(key) if isinstance(key, str) else None
        if rule is None:
            known = ", ".join(sorted(SETTINGS))
            text = str(key)
            shown = text if text and text.isprintable() else repr(text)  # one line, seen
            raise ConfigError(f"unknown key (known keys: {known})", source=source,
                              key=shown, value=value)
        try:
            values[key] = rule.check(value)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ConfigError(f"{exc}, got {value!r}", source=source, key=key,
                              value=value) from None
    return Config(**values)  # type: ignore[arg-type]


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a config file; None gives the defaults (and $AI_ANALYTICS_NAMESPACE)."""
    if path is None:
        return Config()
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("file not found", source=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {_yaml_problem(exc)}", source=source) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"must be a mapping of settings, got {type(data).__name__}",
                          source=source)
    return config_from_mapping(data, source)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where and what, for syntax errors and for unreadable characters alike."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"  # type: ignore[attr-defined]
    if isinstance(exc, yaml.reader.ReaderError):
        return f"byte {exc.position}: unacceptable character {exc.character!r}"
    return " ".join(str(exc).split())


def log_level_number(config: Config) -> int:
    return logging.getLevelName(config.log_level.upper())


__all__ = ["NAMESPACE_ENV", "Config", "ConfigError", "config_from_mapping", "load_config"]
