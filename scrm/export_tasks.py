"""Thin Celery entry point for background exports; the work is in ``scrm.exports``.

Imported from ``ScrmConfig.ready`` (autodiscovery only looks for ``tasks.py``).
"""

from __future__ import annotations

from typing import Any

import celery
from celery import shared_task
from django.db import OperationalError

from .exports import fail_export, run_export


class ExportJobTask(celery.Task):
    """Whatever stops an export for good shows on its job row, which the exports page reads."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        if job_id is not None:
            fail_export(job_id, error=str(exc) or exc.__class__.__name__)


# acks_late: a worker lost mid-file leaves the job "running", and the redelivered message writes it
# again from the start (run_export claims running jobs too); a finished job is never redone.
@shared_task(
    base=ExportJobTask, acks_late=True, autoretry_for=(OperationalError,), retry_backoff=True, max_retries=3
)
def run_export_task(job_id: int) -> int:
    job = run_export(job_id)
    return job.rows if job is not None else 0
