"""The evaluation window layout: train (ending in a validation slice), a label-delay gap, test.

Handbook style (Le Borgne et al.): a model trained on days ``[train_start, delay_start)`` is
used from ``test_start`` on, ``delay_days`` after its training data ends, because labels arrive
that much later; it is tested on the ``test_days`` after the gap::

    |---------------- train ----------------|---- delay ----|---- test ----|
    |------- fit -------|--- validation ----|
    train_start         valid_start         delay_start     test_start     test_end

The validation slice (the last ``valid_days`` of the training window) is where early stopping
and the decision threshold are chosen, never the test window. Windows are whole calendar days;
the test window ends on ``test_end`` (default: the last day in the data).
"""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from vigil import contract as c
from vigil.errors import ConfigError, DataError

SPLIT_COLUMN: Final = "SPLIT"
FIT: Final = "train"
VALID: Final = "valid"
DELAY: Final = "delay"
TEST: Final = "test"
SPLITS: Final = (FIT, VALID, DELAY, TEST)


@dataclasses.dataclass(frozen=True)
class WindowSpec:
    """Window lengths in days (the pipeline's parameters); ``test_end`` None = last data day."""

    train_days: int = 14
    valid_days: int = 3
    delay_days: int = c.LABEL_DELAY_DAYS
    test_days: int = 7
    test_end: date | None = None

    def __post_init__(self) -> None:
        if self.train_days < 2:
            raise ConfigError(f"train_days must be >= 2, got {self.train_days}")
        if not 1 <= self.valid_days < self.train_days:
            raise ConfigError(
                f"valid_days must be >= 1 and < train_days ({self.train_days}), "
                f"got {self.valid_days}"
            )
        if self.delay_days < 0:
            raise ConfigError(f"delay_days must be >= 0, got {self.delay_days}")
        if self.test_days < 1:
            raise ConfigError(f"test_days must be >= 1, got {self.test_days}")

    @classmethod
    def from_params(
        cls, train_days: int, valid_days: int, delay_days: int, test_days: int, test_end: str = ""
    ) -> WindowSpec:
        """From the pipeline's parameters; ``test_end`` is ``YYYY-MM-DD`` or empty."""
        end: date | None = None
        if test_end:
            try:
                end = date.fromisoformat(test_end)
            except ValueError as e:
                raise ConfigError(f"test_end must be YYYY-MM-DD or empty, got {test_end!r}") from e
        return cls(train_days, valid_days, delay_days, test_days, end)

    @property
    def total_days(self) -> int:
        return self.train_days + self.delay_days + self.test_days

    def resolve(self, first_day: date, last_day: date) -> EvaluationWindows:
        """The windows for data covering ``first_day .. last_day`` (DataError if it does not
        cover them)."""
        test_end = self.test_end or last_day
        test_start = test_end - timedelta(days=self.test_days - 1)
        delay_start = test_start - timedelta(days=self.delay_days)
        train_start = delay_start - timedelta(days=self.train_days)
        windows = EvaluationWindows(
            train_start=train_start,
            valid_start=delay_start - timedelta(days=self.valid_days),
            delay_start=delay_start,
            test_start=test_start,
            test_end=test_end,
        )
        if train_start < first_day or test_end > last_day:
            raise DataError(
                f"the data covers {first_day} .. {last_day} ({(last_day - first_day).days + 1} "
                f"days) but the windows need {train_start} .. {test_end} (train "
                f"{self.train_days} + delay {self.delay_days} + test {self.test_days} days): "
                "use shorter windows or more data"
            )
        return windows


@dataclasses.dataclass(frozen=True)
class EvaluationWindows:
    """Resolved windows, as first days of each part (ends are exclusive except ``test_end``)."""

    train_start: date
    valid_start: date
    delay_start: date
    test_start: date
    test_end: date

    @property
    def train_end(self) -> date:
        """Last day of the training window (validation slice included)."""
        return self.delay_start - timedelta(days=1)

    @property
    def delay_days(self) -> int:
        return (self.test_start - self.delay_start).days

    def split_of(self, timestamps: pd.Series | npt.NDArray[Any]) -> np.ndarray:
        """``train``/``valid``/``delay``/``test`` for each timestamp, ``""`` outside the windows."""
        days = pd.to_datetime(np.asarray(timestamps)).to_numpy().astype("datetime64[D]")
        edges = np.array(
            [self.train_start, self.valid_start, self.delay_start, self.test_start,
             self.test_end + timedelta(days=1)],
            dtype="datetime64[D]",
        )
        # index 0: before the train window; 1..4: the four parts; 5: after the test window
        position = np.searchsorted(edges, days, side="right")
        labels = np.array(["", *SPLITS, ""], dtype=object)
        return labels[position]

    def to_dict(self) -> dict[str, str]:
        return {
            "train_start": self.train_start.isoformat(),
            "valid_start": self.valid_start.isoformat(),
            "delay_start": self.delay_start.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationWindows:
        return cls(
            **{f.name: date.fromisoformat(str(data[f.name])) for f in dataclasses.fields(cls)}
        )

    def describe(self) -> str:
        return (
            f"train {self.train_start} .. {self.train_end} (validation slice from "
            f"{self.valid_start}), delay {self.delay_days} days, test {self.test_start} .. "
            f"{self.test_end}"
        )
