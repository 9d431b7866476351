"""Upkeep of background jobs: imports whose worker died are re-queued or failed; old files deleted."""

import datetime
from unittest import mock

import psycopg
import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.utils import timezone

from members.models import Member
from scrm import imports, tasks
from scrm.celery import app
from scrm.models import AuditEvent, ExportJob, ImportJob
from stores.models import Store
from tests.data import MEMBER_HEADERS_ZH, xlsx_bytes
from tests.factories import StoreFactory

pytestmark = pytest.mark.django_db

LONG_AGO = datetime.timedelta(hours=2)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    settings.SCRM_IMPORT_STALL_SECONDS = 600
    settings.SCRM_IMPORT_MAX_ATTEMPTS = 3


def make_job(state, *, started=LONG_AGO, attempts=1, rows=3):
    if not Store.objects.filter(code="SH001").exists():
        StoreFactory(code="SH001")
    data = xlsx_bytes(
        [MEMBER_HEADERS_ZH[:5]]
        + [[f"1381234{i:04d}", "林晓", "女", "1990-01-02", "SH001"] for i in range(rows)]
    )
    job = ImportJob(
        resource="members",
        original_name="members.xlsx",
        sha256=imports.hashlib.sha256(data).hexdigest(),
        size=len(data),
        state=state,
        attempts=attempts,
        started_at=timezone.now() - started if started else None,
    )
    job.file.save("members.xlsx", ContentFile(data), save=False)
    job.save()
    return job


@pytest.fixture
def queued():
    with (
        mock.patch.object(tasks.validate_import_task, "delay") as validate,
        mock.patch.object(tasks.import_task, "delay") as run,
    ):
        yield {"validate": validate, "import": run}


def test_a_check_whose_worker_died_is_queued_again_and_then_runs(queued, django_capture_on_commit_callbacks):
    job = make_job(ImportJob.State.VALIDATING)

    with django_capture_on_commit_callbacks(execute=True):
        result = imports.reconcile_import_jobs()

    assert result.requeued == [job.pk] and result.failed == []
    job.refresh_from_db()
    assert job.state == ImportJob.State.UPLOADED
    queued["validate"].assert_called_once_with(job.pk)
    assert AuditEvent.objects.filter(action="import.requeued", target_id=str(job.pk)).exists()

    # the re-queued run does the check once more, from the start
    imports.validate_import_job(job.pk)
    job.refresh_from_db()
    assert (job.state, job.counts["new"], job.attempts) == (ImportJob.State.VALIDATED, 3, 2)


def test_an_import_whose_worker_died_stays_confirmed_and_is_queued(
    queued, django_capture_on_commit_callbacks
):
    job = make_job(ImportJob.State.IMPORTING)

    with django_capture_on_commit_callbacks(execute=True):
        imports.reconcile_import_jobs()

    job.refresh_from_db()
    assert job.state == ImportJob.State.IMPORTING
    queued["import"].assert_called_once_with(job.pk)
    # a run still waiting in a busy queue is not sent again at the next tick
    with django_capture_on_commit_callbacks(execute=True):
        assert imports.reconcile_import_jobs().requeued == []
    queued["import"].assert_called_once_with(job.pk)
    imports.import_job(job.pk)
    job.refresh_from_db()
    assert job.state == ImportJob.State.DONE
    assert Member.objects.count() == 3


def test_recent_progress_or_a_live_worker_leaves_the_job_alone(queued, settings):
    recent = make_job(ImportJob.State.IMPORTING, started=datetime.timedelta(minutes=1))
    beating = make_job(ImportJob.State.IMPORTING)
    imports._progress_reporter(beating.pk)(1, 3)
    busy = make_job(ImportJob.State.IMPORTING)
    # a worker in a long SQL step reports no progress but holds the job's lock on its connection
    params = connection.get_connection_params()
    with psycopg.connect(
        host=params.get("host"),
        port=params.get("port"),
        user=params.get("user"),
        dbname=params["dbname"],
        password=params.get("password"),
        autocommit=True,
    ) as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", [imports.JOB_LOCK, busy.pk])
        result = imports.reconcile_import_jobs()
        # and a second run of the same job does not start while the first holds it
        assert imports.import_job(busy.pk).state == ImportJob.State.IMPORTING

    assert result.requeued == [] and result.failed == []
    assert {j.state for j in ImportJob.objects.all()} == {ImportJob.State.IMPORTING}
    assert not queued["import"].called and not Member.objects.exists()
    assert recent and beating


def test_a_job_that_keeps_killing_its_worker_or_lost_its_file_fails(queued):
    tried = make_job(ImportJob.State.IMPORTING, attempts=3)
    gone = make_job(ImportJob.State.VALIDATING)
    gone.file.delete(save=False)

    result = imports.reconcile_import_jobs()

    assert sorted(result.failed) == sorted([tried.pk, gone.pk])
    for job in (tried, gone):
        job.refresh_from_db()
        assert job.state == ImportJob.State.FAILED and job.error and job.finished_at
    assert not queued["import"].called and not queued["validate"].called
    assert AuditEvent.objects.filter(action="import.abandoned").count() == 2


def test_old_job_files_are_deleted_and_the_jobs_kept(queued, settings):
    settings.SCRM_JOB_FILES_KEEP_DAYS = 30
    done = make_job(ImportJob.State.DONE)
    done.error_file.save("errors.xlsx", ContentFile(b"x"), save=True)
    waiting = make_job(ImportJob.State.VALIDATED)
    running = make_job(ImportJob.State.IMPORTING)
    fresh = make_job(ImportJob.State.DONE)
    month_ago = timezone.now() - datetime.timedelta(days=31)
    ImportJob.objects.exclude(pk=fresh.pk).update(created_at=month_ago)
    export = ExportJob.objects.create(resource="members", file_format="csv", state=ExportJob.State.DONE)
    export.file.save("members.csv", ContentFile(b"a,b"), save=True)
    ExportJob.objects.filter(pk=export.pk).update(created_at=month_ago)
    paths = [done.file.path, done.error_file.path, waiting.file.path, export.file.path]

    counts = tasks.delete_old_job_files_task()

    assert counts == {"import_files": 3, "export_files": 1}
    assert not any(imports.Path(p).exists() for p in paths)
    done.refresh_from_db()
    waiting.refresh_from_db()
    running.refresh_from_db()
    fresh.refresh_from_db()
    export.refresh_from_db()
    assert (done.file.name, done.error_file.name, done.state) == ("", "", ImportJob.State.DONE)
    assert (waiting.file.name, waiting.state) == ("", ImportJob.State.FAILED) and waiting.error
    assert running.file and fresh.file and not export.file
    assert AuditEvent.objects.filter(action="jobs.files_deleted").count() == 1


def test_the_beat_schedule_runs_both():
    scheduled = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert {"scrm.tasks.reconcile_import_jobs_task", "scrm.tasks.delete_old_job_files_task"} <= scheduled
