"""Run the fraud model server: ``vigil serve fraud`` calls :func:`serve`.

Process setup happens here, before KServe, Feast and LightGBM are imported:

* OpenMP pinned to one thread per process (LightGBM's default threading multiplies tail latency
  on shared cores);
* ``sys.argv`` cleared (``kserve.model_server`` parses the command line at import time and
  would choke on Vigil's options, e.g. ``--config`` as an abbreviation of its
  ``--configure_logging``);
* the Prometheus client's storage decided: in-process for one worker; for several, files in a
  private folder (prometheus_client's multiprocess mode) so that ``/metrics`` of any worker
  reports all of them. Either way prometheus_client is imported before Feast, which otherwise
  switches every later-imported client into multiprocess mode in a temporary folder.

With ``workers > 1`` the parent binds the socket and forks the workers (each loads the model and
connects the store itself, scores its own batches, writes its own inference-log files); it
forwards SIGTERM/SIGINT, restarts a worker that crashed, and stops everything if one cannot
start (exit code 2: e.g. a model whose sha256 does not match).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any, Final

from vigil.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MAX_SKEW_S: Final = 300.0
SWITCH_INTERVAL_S: Final = 0.0005
_MULTIPROC_VARS: Final = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")
#: A worker exiting with this code failed to start: do not restart it.
STARTUP_FAILED: Final = 2


def prepare_process(workers: int = 1) -> str | None:
    """Process-wide settings of a serving process (see the module docstring); call before
    importing ``inference.app``. Returns the metrics folder in multiprocess mode."""
    os.environ["OMP_NUM_THREADS"] = "1"
    # The event loop shares the GIL with the appender and inference-log threads: hand it over
    # within 0.5 ms instead of Python's default 5 ms.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    if "kserve" not in sys.modules:
        sys.argv = sys.argv[:1]
    if "prometheus_client" in sys.modules:
        if workers > 1:
            raise RuntimeError("prometheus_client was imported before the serving process was "
                               "prepared: cannot run several workers")
        return None
    folder = None
    if workers > 1:
        folder = tempfile.mkdtemp(prefix="vigil-metrics-")
        for var in _MULTIPROC_VARS:
            os.environ[var] = folder
    else:
        for var in _MULTIPROC_VARS:
            os.environ.pop(var, None)
    import prometheus_client  # decides the value storage before Feast does

    prometheus_client.disable_created_metrics()  # no *_created series next to every counter
    return folder


def serve(
    settings: Settings,
    *,
    model_name: str,
    version: int | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    log_root: str | None = None,
    max_future_skew_s: float = DEFAULT_MAX_SKEW_S,
    max_instances: int = 1_000,
    access_log: bool = False,
) -> None:
    """Serve until SIGTERM/SIGINT (graceful: in-flight requests finish, appends and the
    inference log are flushed). Raises the registry's errors before anything listens."""
    count = workers or 1
    metrics_dir = prepare_process(count)
    bind_host = host or settings.serving.host
    bind_port = port or settings.serving.port
    kwargs: dict[str, Any] = {
        "model_name": model_name, "version": version, "host": bind_host, "port": bind_port,
        "log_root": log_root, "max_future_skew_s": max_future_skew_s,
        "max_instances": max_instances, "access_log": access_log,
    }
    if count == 1:
        serve_worker(settings, **kwargs)
        return
    try:
        _serve_forked(settings, count, kwargs)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def serve_worker(
    settings: Settings,
    *,
    model_name: str,
    version: int | None,
    host: str,
    port: int,
    log_root: str | None,
    max_future_skew_s: float,
    max_instances: int,
    access_log: bool,
    sock: socket.socket | None = None,
) -> None:
    """One server process: load the model, serve on ``sock`` (or bind ``host:port``)."""
    from inference.app import TOKEN_ENV, LocalModelServer, vigil_rest_server
    from inference.model import FraudModel, ServingOptions
    from inference.schema import Limits
    from vigil.registry import Registry

    options = ServingOptions.from_settings(
        settings,
        model_name=model_name,
        version=version,
        log_root=log_root,
        limits=Limits(max_instances=max_instances, max_future_skew_s=max_future_skew_s),
    )
    model = FraudModel(options, Registry.from_settings(settings))
    model.load()
    token = os.environ.get(TOKEN_ENV) or None
    log.info("serving %s on http://%s:%d (pid %d, bearer token %s, inference log %s)",
             model.card.label if model.card else model_name, host, port, os.getpid(),
             "required" if token else "off", options.log_root)
    server = LocalModelServer(
        http_port=port,
        rest_server=vigil_rest_server(
            port=port,
            host=host,
            token=token,
            max_body_bytes=settings.serving.max_body_bytes,
            access_log=access_log,
            sockets=[sock] if sock is not None else None,
        ),
    )
    server.start([model])


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve_forked(settings: Settings, count: int, kwargs: dict[str, Any]) -> None:
    from monitoring import metrics as m

    sock = _bind(str(kwargs["host"]), int(kwargs["port"]))
    children: dict[int, int] = {}  # pid -> slot
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                serve_worker(settings, sock=sock, **kwargs)
            except Exception:
                log.exception("worker %d failed", os.getpid())
                code = STARTUP_FAILED
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = slot
        log.info("started worker %d (pid %d)", slot, pid)

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    for slot in range(count):
        spawn(slot)
    failed = False
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        slot = children.pop(pid)
        m.mark_process_dead(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        if code == STARTUP_FAILED:
            log.error("worker %d (pid %d) could not start: stopping the server", slot, pid)
            failed = True
            stop(signal.SIGTERM, None)
            continue
        log.warning("worker %d (pid %d) exited with %s: restarting it", slot, pid, code)
        time.sleep(1.0)
        spawn(slot)
    sock.close()
    if failed:
        raise SystemExit(STARTUP_FAILED)
