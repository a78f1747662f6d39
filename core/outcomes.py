"""Where an event ends: the names of the outcomes, and their counts.

Every emit call in a namespace ends in exactly one outcome, so their sum is every call made.
The state file, /status, /metrics, the history database and ``ai-analytics status`` all name
them from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass
class Outcomes:
    """Where events ended. Their sum is every emit call made in the namespace."""

    received: int = 0
    dropped: int = 0
    overwritten: int = 0
    invalid: int = 0
    lost_on_restart: int = 0
    pending: int = 0
    no_lane: int = 0

    def add(self, other: Outcomes) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Outcomes:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in names})  # type: ignore[call-overload]


# Every outcome, in the order the state file and the history database keep them.
OUTCOMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Outcomes))
# The ends an event has reached; "pending" is the events still waiting in their lanes.
SETTLED: tuple[str, ...] = tuple(name for name in OUTCOMES if name != "pending")
# The outcomes that follow the traffic, and so have a rate: "lost_on_restart" is counted once,
# when a daemon starts and finds what its predecessor never drained.
RATED: tuple[str, ...] = tuple(name for name in SETTLED if name != "lost_on_restart")
