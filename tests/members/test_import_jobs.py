"""An import job end to end on a real Celery worker: upload → check → confirm → imported."""

import pytest
from django.core.files.base import ContentFile

from members.models import Member
from scrm import imports
from scrm.audit import Actor
from scrm.models import ImportJob
from scrm.roles import Role
from tests.data import MEMBER_HEADERS_ZH, xlsx_bytes
from tests.factories import StoreFactory, UserFactory
from tests.worker import celery_worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]


def test_a_job_is_checked_and_imported_by_the_worker():
    StoreFactory(code="SH001")
    user = UserFactory(role=Role.HQ_OPERATOR)
    rows = [MEMBER_HEADERS_ZH[:5]] + [
        [f"1381234{i:04d}", f"会员{i}", "女", "1990-01-02", "SH001"] for i in range(50)
    ]
    upload = ContentFile(xlsx_bytes(rows), name="members.xlsx")

    with celery_worker():
        # when HQ uploads: the request only stores the file; the worker checks it
        job = imports.create_import_job(
            resource="members", upload=upload, file_name="members.xlsx", actor=Actor.for_user(user)
        )
        assert wait_for(lambda: ImportJob.objects.get(pk=job.pk).state == "validated")
        job.refresh_from_db()
        assert (job.counts["new"], job.counts["invalid"], job.rows_done) == (50, 0, 50)
        assert not Member.objects.exists()

        # when HQ confirms, the worker imports exactly that file
        imports.confirm_import_job(job, actor=Actor.for_user(user))
        assert wait_for(lambda: ImportJob.objects.get(pk=job.pk).state == "done")

    job.refresh_from_db()
    assert (job.counts["new"], job.finished_at is not None) == (50, True)
    assert Member.objects.count() == 50
    job.file.delete(save=False)
