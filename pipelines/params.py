"""The parameters of ``fraud-training`` and their defaults, written once.

The pipeline function's signature (:func:`pipelines.fraud_training.fraud_training`), local and
remote runs and ``vigil run fraud --help`` all take their defaults from here; the window
lengths come from :class:`components.windows.WindowSpec` (the label delay from the data
contract) and the validation bounds from :class:`vigil.data.validation.ValidationConfig`. No
Kubeflow import: the command line shows these without loading kfp.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from components.windows import WindowSpec
from feature_store.engines import DEFAULT_ENGINE, DEFAULT_MASTER
from vigil.data.validation import ValidationConfig

_WINDOWS: Final = WindowSpec()
_VALIDATION: Final = ValidationConfig()


@dataclasses.dataclass(frozen=True)
class FraudTrainingParams:
    """The pipeline's parameters, as one value (see :func:`fraud_training` for each).

    ``arguments()`` can be passed to ``fraud_training`` locally or to a KFP run (a unit test
    compares these defaults with the compiled YAML).
    """

    transactions: str
    vigil_home: str = ""
    vigil_config: str = ""
    model_name: str = ""
    train_days: int = _WINDOWS.train_days
    valid_days: int = _WINDOWS.valid_days
    delay_days: int = _WINDOWS.delay_days
    test_days: int = _WINDOWS.test_days
    test_end: str = ""
    comparison_metric: str = "average_precision"
    quality_floor: float = 0.3
    min_improvement: float = 0.0
    min_fraud_share: float = _VALIDATION.min_fraud_share
    max_fraud_share: float = _VALIDATION.max_fraud_share
    lightgbm_params: str = "{}"
    rollout_target: str = "none"
    feature_engine: str = DEFAULT_ENGINE
    spark_master: str = DEFAULT_MASTER

    def arguments(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The defaults, as a value (``transactions`` has none).
DEFAULTS: Final = FraudTrainingParams(transactions="")
