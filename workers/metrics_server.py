"""The worker's metrics endpoint, served by the worker's main process.

With the default threads pool every metric is recorded in that process. With `-P prefork` the pool children
record them, and the main process serves their aggregate: prometheus_client's multiprocess mode needs PROMETHEUS_MULTIPROC_DIR set before any process imports it, so the
start-up command sets it (make run, the Docker image, the Helm chart, the tests); this module wipes it when the
worker starts (files of a previous run would be summed in) and marks children dead when they exit.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from celery.signals import worker_init, worker_process_shutdown
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from shared.config import get_settings

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    settings = get_settings()
    port, host = settings.worker_metrics_port, settings.worker_metrics_host
    if port is None:
        return
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        path = Path(directory)
        if path.exists():
            for child in path.iterdir():
                # Keep this process's own files: its metrics (an unlabelled gauge such as
                # herald_worker_inflight) were created at import and write to them; unlinking them here would
                # make every later update invisible (the only process under the threads pool).
                if child.is_file() and child.name.endswith(f"_{os.getpid()}.db"):
                    continue
                if child.is_file():
                    child.unlink()
                else:
                    shutil.rmtree(child, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        server, _thread = start_http_server(port, addr=host, registry=registry)
    else:
        log.warning(
            "%s is not set: pool children's metrics are not aggregated on the metrics port", MULTIPROC_ENV
        )
        server, _thread = start_http_server(port, addr=host)
    log.info("worker metrics on %s port %d", host, server.server_port)


@worker_process_shutdown.connect
def _child_exit(**_: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
