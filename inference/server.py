"""Run the model server: ``vigil serve`` calls :func:`serve`.

One process serves one model: load it (sha256 checked), build the app
(:func:`inference.app.create_app`) and serve it with uvicorn on ``serving.host:serving.port``
— 127.0.0.1 on a laptop, 0.0.0.0 in a pod (``VIGIL_SERVING__HOST``). Scale-out on a cluster
is more replicas of this process, not worker processes inside it.

Process setup happens here, before KServe, Feast and LightGBM are imported
(:func:`prepare_process`):

* OpenMP pinned to one thread (LightGBM's default threading multiplies tail latency on shared
  cores);
* a short GIL switch interval (the event loop shares the GIL with the appender and
  inference-log threads);
* ``sys.argv`` cleared before KServe is imported (``kserve.model_server`` parses the command
  line at import time and would choke on Vigil's options, e.g. ``--config`` as an
  abbreviation of its ``--configure_logging``);
* prometheus_client imported with its values in process memory, before Feast, which otherwise
  switches every later-imported client into multiprocess mode (a file per value) in a
  temporary folder.

Then uvloop, uvicorn's httptools protocol with a header and an idle timeout
(:mod:`inference.connections`), and the garbage collector tuned once the model is loaded
(:func:`vigil.process.tune_garbage_collector`). SIGTERM/SIGINT stop it gracefully: uvicorn
stops accepting connections, lets in-flight requests finish (``serving.grace_period_s``), then
the app's lifespan stops the model — near-real-time appends finished, the inference log
written — and the process exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Final

from vigil.settings import Settings

log = logging.getLogger(__name__)

#: The event loop hands the GIL over within 0.5 ms instead of Python's default 5 ms.
SWITCH_INTERVAL_S: Final = 0.0005
_MULTIPROC_VARS: Final = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


def prepare_process() -> None:
    """Process-wide settings of a serving process (see the module docstring); call before
    importing ``inference.app``."""
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if "kserve" not in sys.modules:
        sys.argv = sys.argv[:1]
    if "prometheus_client" in sys.modules:
        return
    for var in _MULTIPROC_VARS:
        os.environ.pop(var, None)
    import prometheus_client  # decides the value storage before Feast does

    prometheus_client.disable_created_metrics()  # no *_created series next to every counter


def serve(settings: Settings, *, version: int | None = None) -> None:
    """Serve ``settings.registry.model_name`` (registry ``version``, or the champion) as
    ``settings.serving`` says, until SIGTERM/SIGINT (graceful, see the module docstring).
    Raises the registry's errors before anything listens."""
    prepare_process()
    import uvicorn

    from inference.app import TOKEN_ENV, create_app, stop_models
    from inference.connections import guarded_protocol
    from inference.model import FraudModel, ServingOptions
    from vigil.process import tune_garbage_collector
    from vigil.registry import Registry

    options = ServingOptions.from_settings(settings, version=version)
    model = FraudModel(options, Registry.from_settings(settings))
    model.load()
    models = [model]
    token = os.environ.get(TOKEN_ENV) or None
    serving = settings.serving
    app = create_app(models, token=token, max_body_bytes=serving.max_body_bytes)
    config = uvicorn.Config(
        app,
        host=serving.host,
        port=serving.port,
        loop="uvloop",
        http=guarded_protocol(serving.header_timeout_s),
        ws="none",
        lifespan="on",
        log_config=None,  # the CLI configured logging
        access_log=serving.access_log,
        timeout_keep_alive=serving.idle_timeout_s,
        timeout_graceful_shutdown=serving.grace_period_s,
    )
    server = uvicorn.Server(config)

    def stop(signum: int, frame: object) -> None:
        # While serving, uvicorn handles SIGTERM/SIGINT itself and raises them again once it
        # stopped; this handler covers a signal before serving starts, and keeps the raised one
        # from killing the process before the model is stopped.
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    log.info("serving %s on http://%s:%d (pid %d, bearer token %s, inference log %s)",
             model.card.label if model.card else options.model_name, serving.host, serving.port,
             os.getpid(), "required" if token else "off", options.log_root)
    config.load()
    tune_garbage_collector()
    try:
        server.run()
    finally:
        stop_models(models)  # already done by the app's shutdown unless forced to quit
