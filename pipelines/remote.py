"""Submit the compiled ``fraud-training`` pipeline to a Kubeflow Pipelines endpoint, once
(:func:`submit`) or on a schedule (:func:`schedule`, a KFP recurring run).

What runs on the cluster is the committed YAML (``pipelines/fraud_training.yaml``), the same
file ``kfp run submit -f`` takes, never a fresh compile: what was reviewed is what runs.
:func:`submission` assembles the request (pure, tested); :func:`submit` sends it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import sys
import warnings
from collections.abc import Iterator
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
    with _kfp_errors(request.host, "the run"):
        result = _client(request.host).create_run_from_pipeline_package(
            str(request.package),
            arguments=request.arguments,
            run_name=request.run_name,
            experiment_name=request.experiment,
        )
    run_id = str(result.run_id)
    return SubmittedRun(run_id=run_id, url=f"{request.host}/#/runs/details/{run_id}")


#: A KFP cron field: digits, names (MON, JAN), ``*``, ``?``, ranges, steps and lists.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-]+$")
CRON_FIELDS: Final = ("second", "minute", "hour", "day of month", "month", "day of week")


def check_cron(expression: str) -> str:
    """``expression`` as KFP's scheduler reads it (robfig/cron with seconds: 6 fields), with
    single spaces; :class:`SubmissionError` naming what is wrong otherwise."""
    fields = expression.split()
    if len(fields) != len(CRON_FIELDS):
        raise SubmissionError(
            f"cron {expression!r} has {len(fields)} field(s); KFP takes 6: "
            + " ".join(f.replace(" ", "-") for f in CRON_FIELDS)
            + " (for example '0 0 2 * * *' is 02:00:00 every day)"
        )
    for name, field in zip(CRON_FIELDS, fields, strict=True):
        if not _CRON_FIELD.match(field):
            raise SubmissionError(f"cron {expression!r}: the {name} field {field!r} is not "
                                  "a cron field (digits, names, * ? - / ,)")
    return " ".join(fields)


@dataclasses.dataclass(frozen=True)
class RecurringRun:
    recurring_run_id: str
    experiment_id: str
    cron: str
    url: str


def schedule(request: Submission, cron: str, *, job_name: str) -> RecurringRun:
    """Create a KFP recurring run of ``request.package`` on ``cron`` (6 fields, seconds
    first): at most one run at a time (``max_concurrency=1``) and no backfill of missed
    intervals (``no_catchup``), in ``request.experiment`` (created when missing)."""
    cron = check_cron(cron)
    with _kfp_errors(request.host, "the recurring run"):
        client = _client(request.host)
        # kfp prints "Experiment details: URL" on stdout: keep stdout for the result.
        with contextlib.redirect_stdout(sys.stderr):
            experiment = client.create_experiment(request.experiment)
        result = client.create_recurring_run(
            experiment_id=str(experiment.experiment_id),
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=1,
            no_catchup=True,
            params=request.arguments,
            pipeline_package_path=str(request.package),
        )
    rr_id = str(result.recurring_run_id)
    return RecurringRun(rr_id, str(experiment.experiment_id), cron,
                        f"{request.host}/#/recurringrun/details/{rr_id}")


def _client(host: str) -> Any:
    import kfp

    with warnings.catch_warnings():
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later versions."
        warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
        return kfp.Client(host=host)


@contextlib.contextmanager
def _kfp_errors(host: str, what: str) -> Iterator[None]:
    """Connection and API errors of the kfp client as :class:`SubmissionError`."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    try:
        yield
    except urllib3.exceptions.HTTPError as e:
        reason = getattr(e, "reason", None) or e
        raise SubmissionError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from e
    except ApiException as e:
        raise SubmissionError(
            f"Kubeflow Pipelines at {host} refused {what}: {e.status} {e.reason}"
        ) from e
