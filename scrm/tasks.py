"""Thin Celery entry points for import jobs and job upkeep; the work is in scrm.imports and scrm.exports."""

from __future__ import annotations

from typing import Any

import celery
from celery import shared_task
from django.conf import settings

from . import audit, imports
from .audit import Actor
from .exports import delete_old_export_files


class ImportJobTask(celery.Task):
    """Records a crash on the job row, so the page that polls it shows the failure."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if args:
            imports.fail_job(args[0], f"{type(exc).__name__}: {exc}")


# Not acks_late: a run that crashed half-way has rolled back, and the job says so (failed); the
# user uploads again rather than a redelivery silently starting a second long run. A worker that
# died (no failure recorded) is caught by reconcile_import_jobs_task.
@shared_task(base=ImportJobTask, acks_late=False)
def validate_import_task(job_id: int) -> None:
    imports.validate_import_job(job_id)


@shared_task(base=ImportJobTask, acks_late=False)
def import_task(job_id: int) -> None:
    imports.import_job(job_id)


@shared_task
def reconcile_import_jobs_task() -> dict[str, list[int]]:
    """Every few minutes: re-queue or fail import jobs whose worker died."""
    result = imports.reconcile_import_jobs()
    return {"requeued": result.requeued, "failed": result.failed}


@shared_task
def delete_old_job_files_task() -> dict[str, int]:
    """Nightly: delete import and export files older than SCRM_JOB_FILES_KEEP_DAYS (the job rows stay)."""
    days = settings.SCRM_JOB_FILES_KEEP_DAYS
    counts = {
        "import_files": imports.delete_old_import_files(days=days),
        "export_files": delete_old_export_files(days=days),
    }
    with audit.app_audited():
        audit.record(
            Actor.system("delete_old_job_files"),
            "jobs.files_deleted",
            target_type="scrm.importjob",
            target_id="*",
            changes={**counts, "days": days},
        )
    return counts
