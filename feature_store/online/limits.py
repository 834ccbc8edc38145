"""How much one entity's online history may hold, and how much one append call may carry:
:class:`HistoryLimits` (settings ``redis.history_max_entries`` and ``redis.append_max_events``).

The bound makes the work of every read, append and feature computation of one entity bounded,
however busy the entity (a card-testing attack: tens of thousands of transactions of one card
in seconds). A history keeps its newest ``max_entries`` entries (:func:`newest`); an entity with
more transactions than that in its windows' horizon has features over those only: its counts
stop at the bound, its sums and averages cover the newest entries (README, "Bounded work per
card"; tested against batch features of the truncated history). An append call carries at most
``append_max_events`` transactions, so one call of the in-Redis script does work bounded by
both numbers, whatever the backlog.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.transforms import CustomerHistory, TerminalHistory
from vigil.settings import RedisSettings

_DEFAULTS: Final = RedisSettings()


@dataclasses.dataclass(frozen=True)
class HistoryLimits:
    #: Entries one entity's history keeps, the newest.
    max_entries: int = _DEFAULTS.history_max_entries
    #: Transactions per call of the append script.
    append_max_events: int = _DEFAULTS.append_max_events

    def __post_init__(self) -> None:
        if not 1 <= self.append_max_events <= self.max_entries:
            raise ValueError(
                f"history limits: need 1 <= append_max_events ({self.append_max_events}) <= "
                f"max_entries ({self.max_entries})"
            )

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> HistoryLimits:
        return cls(settings.history_max_entries, settings.append_max_events)


def newest(history: CustomerHistory, max_entries: int) -> CustomerHistory:
    """``history`` without its oldest entries beyond ``max_entries`` (in arrival order)."""
    extra = len(history.transaction_id) - max_entries
    if extra <= 0:
        return history
    return CustomerHistory(
        history.time_us[extra:], history.amount[extra:], history.transaction_id[extra:]
    )


def newest_labels(history: TerminalHistory, max_entries: int) -> TerminalHistory:
    """``history`` without its oldest labels beyond ``max_entries`` (in stored order: by the
    time each becomes known)."""
    extra = len(history.available_us) - max_entries
    if extra <= 0:
        return history
    return TerminalHistory(history.available_us[extra:], history.fraud[extra:])


def newest_rows(table: pa.Table, columns: list[str], max_entries: int) -> pa.Table:
    """A snapshot table whose list ``columns`` (one entity's history per row, aligned) keep
    their last ``max_entries`` values; the table itself when no row is longer."""
    if not table.num_rows or not columns:
        return table
    first = table.column(columns[0]).combine_chunks()
    lengths = pc.list_value_length(first).fill_null(0).to_numpy(zero_copy_only=False)
    if lengths.max(initial=0) <= max_entries:
        return table
    kept = np.minimum(lengths, max_entries)
    offsets = pa.array(np.concatenate(([0], np.cumsum(kept))).astype(np.int32))
    # each value's position in its list: keep the last max_entries of each list
    parents = pc.list_parent_indices(first).to_numpy(zero_copy_only=False)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    position = np.arange(len(parents)) - starts[parents]
    keep = pa.array(position >= (lengths - kept)[parents])
    for name in columns:
        column = table.column(name).combine_chunks()
        values = pc.list_flatten(column).filter(keep)
        bounded = pa.ListArray.from_arrays(offsets, values, type=column.type)
        table = table.set_column(table.column_names.index(name), name, bounded)
    return table
