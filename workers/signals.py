"""Per-process set-up and tear-down hooked to Celery's worker signals."""

from __future__ import annotations

from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from providers import registry
from shared.config import get_settings
from shared.db.session import dispose_engines
from shared.logging import configure_logging, keep_first_beat_sweep_at_info
from workers.runtime import shutdown_runtime


@worker_init.connect
def _import_providers(**_: Any) -> None:
    # Importing a provider (and its renderer, templates) on its first delivery cost tens of milliseconds
    # on that delivery; import them all while the worker starts instead (inherited by prefork children).
    for name in registry.names():
        registry.provider_class(name)


@worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    # Connections opened by the parent before fork must not be used by the child.
    dispose_engines()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close_process(**_: Any) -> None:
    # prefork children get worker_process_shutdown; a threads-pool worker only worker_shutdown.
    shutdown_runtime()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(**_: Any) -> None:
    # Celery installed its handlers (worker and beat alike): apply HERALD_LOG_FORMAT, URL redaction, and move the
    # sweep's per-second lines to DEBUG (shared/logging.py).
    configure_logging(get_settings())


@beat_init.connect
def _beat_started(**_: Any) -> None:
    keep_first_beat_sweep_at_info()
