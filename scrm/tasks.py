"""Thin Celery entry points for import jobs; the work is in scrm.imports."""

from __future__ import annotations

from typing import Any

import celery
from celery import shared_task

from . import imports


class ImportJobTask(celery.Task):
    """Records a crash on the job row, so the page that polls it shows the failure."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if args:
            imports.fail_job(args[0], f"{type(exc).__name__}: {exc}")


# Not acks_late: a run that crashed half-way has rolled back, and the job says so (failed); the
# user uploads again rather than a redelivery silently starting a second long run.
@shared_task(base=ImportJobTask, acks_late=False)
def validate_import_task(job_id: int) -> None:
    imports.validate_import_job(job_id)


@shared_task(base=ImportJobTask, acks_late=False)
def import_task(job_id: int) -> None:
    imports.import_job(job_id)
