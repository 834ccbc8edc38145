"""Submit the compiled ``fraud-training`` pipeline to a Kubeflow Pipelines endpoint.

What runs on the cluster is the committed YAML (``pipelines/fraud_training.yaml``), the same
file ``kfp run submit -f`` takes, never a fresh compile: what was reviewed is what runs.
:func:`submission` assembles the request (pure, tested); :func:`submit` sends it.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from vigil.errors import VigilError

if TYPE_CHECKING:
    from pipelines.params import FraudTrainingParams

PIPELINE_YAML: Final = Path(__file__).resolve().parent.parent / "pipelines" / "fraud_training.yaml"
DEFAULT_EXPERIMENT: Final = "vigil"


class SubmissionError(VigilError):
    """The KFP endpoint could not be reached or refused the run."""


@dataclasses.dataclass(frozen=True)
class Submission:
    host: str
    package: Path
    arguments: dict[str, Any]
    experiment: str
    run_name: str | None


@dataclasses.dataclass(frozen=True)
class SubmittedRun:
    run_id: str
    url: str


def submission(
    host: str,
    params: FraudTrainingParams,
    *,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    package: Path = PIPELINE_YAML,
) -> Submission:
    """The request :func:`submit` sends: the compiled package and the run's arguments.

    Empty string parameters are left out, so that the pipeline's own defaults apply.
    """
    if not host.startswith(("http://", "https://")):
        raise SubmissionError(f"KFP host {host!r}: expected an http:// or https:// URL")
    if not package.is_file():
        raise SubmissionError(
            f"compiled pipeline {package} is missing: run `make compile` (python -m "
            "pipelines.compile)"
        )
    arguments = {k: v for k, v in params.arguments().items() if v != ""}
    return Submission(host.rstrip("/"), package, arguments, experiment, run_name)


def submit(request: Submission) -> SubmittedRun:
    """Create a run of ``request.package`` on the KFP endpoint; errors become
    :class:`SubmissionError` with the endpoint's or the connection's message."""
    import kfp
    import urllib3
    from kfp_server_api.exceptions import ApiException

    try:
        with warnings.catch_warnings():
            # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later versions."
            warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
            client = kfp.Client(host=request.host)
        result = client.create_run_from_pipeline_package(
            str(request.package),
            arguments=request.arguments,
            run_name=request.run_name,
            experiment_name=request.experiment,
        )
    except urllib3.exceptions.HTTPError as e:
        reason = getattr(e, "reason", None) or e
        raise SubmissionError(f"cannot reach Kubeflow Pipelines at {request.host}: {reason}") from e
    except ApiException as e:
        raise SubmissionError(
            f"Kubeflow Pipelines at {request.host} refused the run: {e.status} {e.reason}"
        ) from e
    run_id = str(result.run_id)
    return SubmittedRun(run_id=run_id, url=f"{request.host}/#/runs/details/{run_id}")
