"""Protocol planning: the book's train / delay / test folds and where they sit on the data.

See :mod:`vigil_cli.handbook` for the protocol; :func:`plan_protocol` places it on a data set.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import date, timedelta
from typing import Any, Final, Literal, get_args

from feature_store.transforms import DEFAULT_SPEC, FeatureSpec
from vigil import contract as c
from vigil.errors import DataError

log = logging.getLogger(__name__)

ProtocolName = Literal["ch3", "ch5"]
PROTOCOLS: Final[tuple[ProtocolName, ...]] = get_args(ProtocolName)
FoldKind = Literal["validation", "test"]

#: The book's data starts here, and its anchor (start of chapter 3's training week) is 115 days
#: later.
HANDBOOK_DATA_START: Final = date(2018, 4, 1)
HANDBOOK_ANCHOR: Final = date(2018, 7, 25)
TRAIN_DAYS: Final = 7
DELAY_DAYS: Final = c.LABEL_DELAY_DAYS
TEST_DAYS: Final = 7
N_FOLDS: Final = 4


@dataclasses.dataclass(frozen=True)
class Fold:
    """One train / delay / test split; ``*_end`` dates are exclusive."""

    kind: FoldKind
    index: int
    train_start: date
    train_days: int = TRAIN_DAYS
    delay_days: int = DELAY_DAYS
    test_days: int = TEST_DAYS

    @property
    def train_end(self) -> date:
        return self.train_start + timedelta(days=self.train_days)

    @property
    def test_start(self) -> date:
        return self.train_end + timedelta(days=self.delay_days)

    @property
    def test_end(self) -> date:
        return self.test_start + timedelta(days=self.test_days)

    @property
    def name(self) -> str:
        return f"{self.kind} fold {self.index}"

    def to_dict(self) -> dict[str, Any]:
        last = timedelta(days=1)
        return {
            "kind": self.kind,
            "index": self.index,
            "train": [self.train_start.isoformat(), (self.train_end - last).isoformat()],
            "test": [self.test_start.isoformat(), (self.test_end - last).isoformat()],
        }


def prequential_folds(
    start: date,
    kind: FoldKind,
    n_folds: int = N_FOLDS,
    *,
    train_days: int = TRAIN_DAYS,
    delay_days: int = DELAY_DAYS,
    test_days: int = TEST_DAYS,
) -> list[Fold]:
    """The book's ``prequentialSplit``: fold ``i`` trains from ``start - i * test_days``."""
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    return [
        Fold(kind, i, start - timedelta(days=i * test_days), train_days, delay_days, test_days)
        for i in range(n_folds)
    ]


@dataclasses.dataclass(frozen=True)
class ProtocolPlan:
    """The folds of one protocol run and where their dates came from."""

    protocol: ProtocolName
    #: The book's ``start_date_training`` (2018-07-25): chapter 3's training start.
    anchor: date
    #: "handbook", "--start" or "relative to the data"
    dates_source: str
    validation_folds: tuple[Fold, ...]
    test_folds: tuple[Fold, ...]

    @property
    def folds(self) -> tuple[Fold, ...]:
        return self.validation_folds + self.test_folds

    @property
    def first_day(self) -> date:
        return min(f.train_start for f in self.folds)

    @property
    def last_day(self) -> date:
        return max(f.test_end for f in self.folds) - timedelta(days=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "anchor": self.anchor.isoformat(),
            "dates_source": self.dates_source,
            "first_day": self.first_day.isoformat(),
            "last_day": self.last_day.isoformat(),
            "validation_folds": [f.to_dict() for f in self.validation_folds],
            "test_folds": [f.to_dict() for f in self.test_folds],
        }


def folds_for(protocol: ProtocolName, anchor: date) -> tuple[tuple[Fold, ...], tuple[Fold, ...]]:
    """(validation folds, test folds) of ``protocol`` anchored at ``anchor``."""
    validation = prequential_folds(anchor - timedelta(days=DELAY_DAYS + TEST_DAYS), "validation")
    if protocol == "ch3":
        test = [Fold("test", 0, anchor)]
    elif protocol == "ch5":
        test = prequential_folds(anchor + timedelta(days=(N_FOLDS - 1) * TEST_DAYS), "test")
    else:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    return tuple(validation), tuple(test)


def _span(protocol: ProtocolName, anchor: date) -> tuple[date, date]:
    validation, test = folds_for(protocol, anchor)
    folds = validation + test
    return (
        min(f.train_start for f in folds),
        max(f.test_end for f in folds) - timedelta(days=1),
    )


def plan_protocol(
    protocol: ProtocolName,
    data_first_day: date,
    data_last_day: date,
    start: date | None = None,
    *,
    warmup_days: int = 0,
) -> ProtocolPlan:
    """Place ``protocol`` on data covering ``data_first_day`` .. ``data_last_day``.

    ``start`` (the anchor) when given; else the book's anchor when the data covers the folds it
    implies; else 115 days after the data's first day, or the latest anchor the data allows when
    it ends earlier. ``warmup_days`` (the feature history the earliest training day should see)
    only triggers a warning when not available.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    lo0, hi0 = _span(protocol, HANDBOOK_ANCHOR)
    before, after = (HANDBOOK_ANCHOR - lo0).days, (hi0 - HANDBOOK_ANCHOR).days
    needed = before + after + 1
    available = (data_last_day - data_first_day).days + 1

    def covered(anchor: date) -> bool:
        lo, hi = _span(protocol, anchor)
        return data_first_day <= lo and hi <= data_last_day

    if start is not None:
        anchor, source = start, "--start"
        if not covered(anchor):
            lo, hi = _span(protocol, anchor)
            raise DataError(
                f"protocol {protocol} anchored at {anchor} needs transactions from {lo} to {hi}, "
                f"but the data covers {data_first_day} to {data_last_day}; choose a start "
                f"between {data_first_day + timedelta(days=before)} and "
                f"{data_last_day - timedelta(days=after)}"
            )
    elif covered(HANDBOOK_ANCHOR):
        anchor, source = HANDBOOK_ANCHOR, "handbook"
    else:
        if available < needed:
            raise DataError(
                f"protocol {protocol} needs {needed} consecutive days of transactions "
                f"({before} before the anchor for the validation folds, {after} from it), but "
                f"the data covers {available} day(s), {data_first_day} to {data_last_day}"
            )
        offset = (HANDBOOK_ANCHOR - HANDBOOK_DATA_START).days
        anchor = min(data_first_day + timedelta(days=offset), data_last_day - timedelta(days=after))
        source = "relative to the data"
    if (anchor - data_first_day).days < before + warmup_days:
        log.warning(
            "the earliest training day (%s) has %d day(s) of history before it; the features' "
            "windows need %d to be complete",
            anchor - timedelta(days=before),
            (anchor - data_first_day).days - before,
            warmup_days,
        )
    validation, test = folds_for(protocol, anchor)
    return ProtocolPlan(protocol, anchor, source, validation, test)


def feature_warmup_days(spec: FeatureSpec = DEFAULT_SPEC) -> int:
    """Days of history the features need to see full windows (terminal windows lag the delay)."""
    return max(
        *spec.customer_windows_days,
        *(n + spec.label_delay_days for n in spec.terminal_windows_days),
    )
