"""Names and series: daemon-wide ids for names, and (operation, model) series under caps.

Lanes publish names in their own tables; the daemon gives each distinct text one name id,
and each (operation, model) pair one series id. Every table is capped, so memory stays flat
whatever names producers send: past a cap, events go to the name or series ``other``, and a
counter per cap says how many events were redirected.
"""

from __future__ import annotations

import numpy as np

OTHER = "other"
OTHER_NAME = 0  # name id standing for every name past the cap (and lane-table overflow)
# Operation index 0 and model index 1 are "other"; model index 0 is "no model".
OTHER_OPERATION, NO_MODEL, OTHER_MODEL = 0, 0, 1
# Pair lookups go through a dense table while it stays this small; beyond, through np.unique.
_DENSE_PAIRS_LIMIT = 1 << 22


class SeriesRegistry:
    def __init__(self, max_operations: int, max_models: int, max_series: int) -> None:
        self.max_operations = max_operations
        self.max_models = max_models
        self.max_series = max_series
        self.max_names = max_operations + max_models + 2
        # Name id 0 is the overflow name (the table was full, here or in a lane); a name a
        # producer really called "other" gets an id of its own.
        self.names: dict[str, int] = {}
        self.name_list: list[str] = [OTHER]
        # Per name id: its operation / model index (-1: not used in that role yet), and
        # whether the name was redirected to "other" by a cap.
        self._op_of = np.full(self.max_names, -1, np.int64)
        self._model_of = np.full(self.max_names, -1, np.int64)
        self._op_of[OTHER_NAME], self._model_of[OTHER_NAME] = OTHER_OPERATION, OTHER_MODEL
        self._op_capped = np.zeros(self.max_names, bool)
        self._model_capped = np.zeros(self.max_names, bool)
        self._op_capped[OTHER_NAME] = self._model_capped[OTHER_NAME] = True
        self.operations: list[str] = [OTHER]
        self.models: list[str] = ["", OTHER]
        self.pairs: dict[int, int] = {}  # operation * model_space + model → series id
        self.series: list[tuple[int, int]] = []  # series id → (operation, model) indexes
        self._model_space = max_models + 2
        dense = (max_operations + 1) * self._model_space <= _DENSE_PAIRS_LIMIT
        self._pair_sid = np.full((max_operations + 1) * self._model_space, -1, np.int64) \
            if dense else None
        self._other_series = -1
        self.overflow = {"operations": 0, "models": 0, "series": 0}

    # -- names -----------------------------------------------------------------------------
    def name_id(self, text: str | None) -> int:
        """The daemon-wide id of a name; OTHER_NAME past the cap or for an unusable name."""
        if text is None:
            return OTHER_NAME
        ident = self.names.get(text)
        if ident is None:
            if len(self.name_list) >= self.max_names:
                return OTHER_NAME
            ident = len(self.name_list)
            self.names[text] = ident
            self.name_list.append(text)
        return ident

    # -- series ----------------------------------------------------------------------------
    def series_ids(self, op_names: np.ndarray, model_names: np.ndarray) -> np.ndarray:
        """Series id of each event, given its operation and model name ids."""
        ops = self._roles(op_names, self._op_of, self._op_capped, self._new_operation,
                          "operations")
        models = self._roles(model_names, self._model_of, self._model_capped, self._new_model,
                             "models")
        pairs = ops * self._model_space + models
        if self._pair_sid is not None:
            sids = self._pair_sid[pairs]
            missing = sids < 0
            if missing.any():
                for pair in np.unique(pairs[missing]).tolist():
                    self._pair_sid[pair] = self._new_series(pair)
                sids = self._pair_sid[pairs]
        else:
            unique, inverse = np.unique(pairs, return_inverse=True)
            sids = np.array([self._new_series(p) for p in unique.tolist()], np.int64)[inverse]
        if self._other_series >= 0:
            redirected = sids == self._other_series
            if redirected.any():
                genuine = self.series[self._other_series][0] * self._model_space \
                    + self.series[self._other_series][1]
                self.overflow["series"] += int(np.count_nonzero(pairs[redirected] != genuine))
        return sids

    def _roles(self, names: np.ndarray, role_of: np.ndarray, capped: np.ndarray, new,
               counter: str) -> np.ndarray:
        index = role_of[names]
        if (index < 0).any():
            for name in np.unique(names[index < 0]).tolist():
                role_of[name], capped[name] = new(self.name_list[name])
            index = role_of[names]
        hits = capped[names]
        if hits.any():
            self.overflow[counter] += int(np.count_nonzero(hits))
        return index

    def _new_operation(self, text: str) -> tuple[int, bool]:
        if len(self.operations) > self.max_operations:
            return OTHER_OPERATION, True
        self.operations.append(text)
        return len(self.operations) - 1, False

    def _new_model(self, text: str) -> tuple[int, bool]:
        if text == "":
            return NO_MODEL, False
        if len(self.models) - 2 >= self.max_models:
            return OTHER_MODEL, True
        self.models.append(text)
        return len(self.models) - 1, False

    def _new_series(self, pair: int) -> int:
        sid = self.pairs.get(pair)
        if sid is not None:
            return sid
        if len(self.series) >= self.max_series:
            if self._other_series < 0:  # the one series past the cap: (other, other)
                self._other_series = self._register(OTHER_OPERATION * self._model_space
                                                    + OTHER_MODEL)
            sid = self._other_series
            self.pairs[pair] = sid
            return sid
        return self._register(pair)

    def _register(self, pair: int) -> int:
        if pair in self.pairs:
            return self.pairs[pair]
        sid = len(self.series)
        self.series.append(divmod(pair, self._model_space))
        self.pairs[pair] = sid
        if self._pair_sid is not None:
            self._pair_sid[pair] = sid
        return sid

    def label(self, sid: int) -> tuple[str, str]:
        op, model = self.series[sid]
        return self.operations[op], self.models[model]

    def __len__(self) -> int:
        return len(self.series)
